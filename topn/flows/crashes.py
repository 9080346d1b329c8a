"""Runs whose process died are marked Crashed: a Prefect automation on missed flow-run heartbeats.

Every flow run topn starts sends a heartbeat every 30 s (PREFECT_FLOWS_HEARTBEAT_FREQUENCY, set in
`flows/__init__.py`). This automation, created once per Prefect server, marks a run Crashed when
three heartbeats pass without one or an end state: a `kill -9`, a lost machine, an evicted container.
"""

from __future__ import annotations

from datetime import timedelta

from prefect import get_run_logger
from prefect.automations import Automation
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.settings import get_current_settings

NAME = "topn: mark dead flow runs Crashed"


def _missed_after() -> timedelta:
    """Three heartbeats: never less than Prefect's 30 s minimum, and as long as a user's own setting says."""
    frequency = get_current_settings().flows.heartbeat_frequency or 30
    return timedelta(seconds=3 * max(frequency, 30))


def crash_detection() -> Automation:
    missed_after = _missed_after()
    return Automation(
        name=NAME,
        description="Marks a flow run Crashed when its heartbeats stop without an end state (created by topn).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=missed_after,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"No heartbeat for {missed_after.seconds} s: the process running this flow run died.",
            )
        ],
    )


def ensure_crash_detection() -> None:
    """Creates the automation on the current Prefect server unless it is there already. Every topn flow run
    calls this: whichever way it was started (serve, a worker, `topn run`), its server gets the automation."""
    try:
        Automation.read(name=NAME)
    except ValueError:  # not found
        crash_detection().create()
    except Exception as e:  # never fail a run for this: it only helps when a run dies
        get_run_logger().warning("could not set up crash detection on the Prefect server: %s", e)
