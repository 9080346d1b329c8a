"""Routing: (method, path pattern) -> handler and operation name (docs/batch-wire.md 3.1).

The emulator's own routes (/_emulator/*) have a table of the same shape in admin.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from batch_emulator import responses as r
from batch_emulator import responses_account as a

_ID = r"([^/]+)"
_REST = r"(.+)"
_CERT = r"/certificates(?:\(|%28)thumbprintAlgorithm=([^,/]+),thumbprint=([^)/%]+)(?:\)|%29)"

ROUTES: list[tuple[str, str, Callable, str]] = [
    ("POST", "/pools", r.create_pool, "create_pool"),
    ("GET", "/pools", r.list_pools, "list_pools"),
    ("GET", f"/pools/{_ID}", r.get_pool, "get_pool"),
    ("HEAD", f"/pools/{_ID}", r.pool_exists, "pool_exists"),
    ("PATCH", f"/pools/{_ID}", r.update_pool, "update_pool"),
    ("DELETE", f"/pools/{_ID}", r.delete_pool, "delete_pool"),
    ("POST", f"/pools/{_ID}/updateproperties", r.replace_pool_properties, "replace_pool_properties"),
    ("POST", f"/pools/{_ID}/resize", r.resize_pool, "resize_pool"),
    ("POST", f"/pools/{_ID}/stopresize", r.stop_resize_pool, "stop_pool_resize"),
    ("POST", f"/pools/{_ID}/removenodes", r.remove_nodes, "remove_nodes"),
    ("POST", f"/pools/{_ID}/enableautoscale", r.enable_autoscale, "enable_pool_auto_scale"),
    ("POST", f"/pools/{_ID}/disableautoscale", r.disable_autoscale, "disable_pool_auto_scale"),
    ("POST", f"/pools/{_ID}/evaluateautoscale", r.evaluate_autoscale, "evaluate_pool_auto_scale"),
    ("GET", f"/pools/{_ID}/nodes", r.list_nodes, "list_nodes"),
    ("GET", f"/pools/{_ID}/nodes/{_ID}", r.get_node, "get_node"),
    ("POST", f"/pools/{_ID}/nodes/{_ID}/reboot", r.reboot_node, "reboot_node"),
    ("GET", f"/pools/{_ID}/nodes/{_ID}/files", r.list_node_files, "list_node_files"),
    ("GET", f"/pools/{_ID}/nodes/{_ID}/files/{_REST}", r.get_node_file, "get_node_file"),
    ("HEAD", f"/pools/{_ID}/nodes/{_ID}/files/{_REST}", r.get_node_file, "get_node_file_properties"),
    ("POST", "/jobs", r.create_job, "create_job"),
    ("GET", "/jobs", r.list_jobs, "list_jobs"),
    ("GET", f"/jobs/{_ID}", r.get_job, "get_job"),
    ("PATCH", f"/jobs/{_ID}", r.update_job, "update_job"),
    ("PUT", f"/jobs/{_ID}", r.replace_job, "replace_job"),
    ("DELETE", f"/jobs/{_ID}", r.delete_job, "delete_job"),
    ("POST", f"/jobs/{_ID}/terminate", r.terminate_job, "terminate_job"),
    ("GET", f"/jobs/{_ID}/taskcounts", r.task_counts, "get_job_task_counts"),
    (
        "GET",
        f"/jobs/{_ID}/jobpreparationandreleasetaskstatus",
        r.list_preparation_and_release_task_status,
        "list_job_preparation_and_release_task_status",
    ),
    ("POST", f"/jobs/{_ID}/tasks", r.create_task, "create_task"),
    ("GET", f"/jobs/{_ID}/tasks", r.list_tasks, "list_tasks"),
    ("POST", f"/jobs/{_ID}/addtaskcollection", r.add_task_collection, "create_task_collection"),
    ("GET", f"/jobs/{_ID}/tasks/{_ID}", r.get_task, "get_task"),
    ("DELETE", f"/jobs/{_ID}/tasks/{_ID}", r.delete_task, "delete_task"),
    ("POST", f"/jobs/{_ID}/tasks/{_ID}/terminate", r.terminate_task, "terminate_task"),
    ("POST", f"/jobs/{_ID}/tasks/{_ID}/reactivate", r.reactivate_task, "reactivate_task"),
    ("GET", f"/jobs/{_ID}/tasks/{_ID}/files", r.list_task_files, "list_task_files"),
    ("GET", f"/jobs/{_ID}/tasks/{_ID}/files/{_REST}", r.get_task_file, "download_task_file"),
    ("HEAD", f"/jobs/{_ID}/tasks/{_ID}/files/{_REST}", r.get_task_file, "get_task_file_properties"),
    ("DELETE", f"/jobs/{_ID}/tasks/{_ID}/files/{_REST}", r.delete_task_file, "delete_task_file"),
    # account level (responses_account): images, node counts, usage metrics
    ("GET", "/supportedimages", a.list_supported_images, "list_supported_images"),
    ("GET", "/nodeagentskus", a.list_node_agent_skus, "list_node_agent_skus"),
    ("GET", "/nodecounts", a.list_pool_node_counts, "list_pool_node_counts"),
    ("GET", "/poolusagemetrics", a.list_pool_usage_metrics, "list_pool_usage_metrics"),
    # what the emulator never holds: empty lists, {kind}NotFound for one, creation refused
    ("GET", "/applications", a.empty_list("applications"), "list_applications"),
    ("GET", f"/applications/{_ID}", a.missing("Application", "applications"), "get_application"),
    ("GET", "/jobschedules", a.empty_list("jobschedules"), "list_job_schedules"),
    ("POST", "/jobschedules", a.not_emulated("create_job_schedule", "job schedules"), "create_job_schedule"),
    ("GET", f"/jobschedules/{_ID}", a.missing("JobSchedule", "job schedules"), "get_job_schedule"),
    ("HEAD", f"/jobschedules/{_ID}", a.job_schedule_exists, "job_schedule_exists"),
    ("PATCH", f"/jobschedules/{_ID}", a.missing("JobSchedule", "job schedules"), "update_job_schedule"),
    ("PUT", f"/jobschedules/{_ID}", a.missing("JobSchedule", "job schedules"), "replace_job_schedule"),
    ("DELETE", f"/jobschedules/{_ID}", a.missing("JobSchedule", "job schedules"), "delete_job_schedule"),
    ("POST", f"/jobschedules/{_ID}/disable", a.missing("JobSchedule", "job schedules"), "disable_job_schedule"),
    ("POST", f"/jobschedules/{_ID}/enable", a.missing("JobSchedule", "job schedules"), "enable_job_schedule"),
    ("POST", f"/jobschedules/{_ID}/terminate", a.missing("JobSchedule", "job schedules"), "terminate_job_schedule"),
    ("GET", f"/jobschedules/{_ID}/jobs", a.missing("JobSchedule", "job schedules"), "list_jobs_from_schedule"),
    ("GET", "/certificates", a.empty_list("certificates"), "list_certificates"),
    ("POST", "/certificates", a.not_emulated("create_certificate", "certificates"), "create_certificate"),
    ("GET", _CERT, a.certificate_not_found, "get_certificate"),
    ("DELETE", _CERT, a.certificate_not_found, "delete_certificate"),
    ("POST", f"{_CERT}/canceldelete", a.certificate_not_found, "cancel_certificate_deletion"),
]

_COMPILED = [(method, re.compile(f"^{pattern}/?$"), handler, name) for method, pattern, handler, name in ROUTES]


def resolve(method: str, path: str) -> tuple[Callable, str, list[str]] | None:
    """The handler, operation name and raw (still percent-encoded) path ids for a request, or None."""
    for route_method, pattern, handler, name in _COMPILED:
        if route_method == method and (m := pattern.match(path)):
            return handler, name, list(m.groups())
    return None


def path_known(path: str) -> bool:
    return any(pattern.match(path) for _, pattern, _, _ in _COMPILED)
