"""HTTP handlers for account-level operations: supported images, node agent SKUs, node counts, usage
metrics, and the lists of things the emulator never holds (applications, job schedules, certificates).

Handlers take (service, request, *path ids) and return a Response, as in `responses`.
"""

from __future__ import annotations

from batch_emulator import images
from batch_emulator.errors import BatchError
from batch_emulator.responses import Request, Response, page
from batch_emulator.service import BatchService

# ---- images ------------------------------------------------------------------------------------


def list_supported_images(svc: BatchService, req: Request) -> Response:
    return page(req, images.supported_images(), "supportedimages")


def list_node_agent_skus(svc: BatchService, req: Request) -> Response:
    """The API before 2019-06-01.9.0 (azure-batch <= 6.x `account.list_node_agent_skus`)."""
    return page(req, images.node_agent_skus(), "nodeagentskus")


# ---- counts and metrics ------------------------------------------------------------------------


def list_pool_node_counts(svc: BatchService, req: Request) -> Response:
    return page(req, svc.node_counts(), "nodecounts")


def list_pool_usage_metrics(svc: BatchService, req: Request) -> Response:
    """No VM is ever billed here: an empty list, after the query has been checked like any list's."""
    return page(req, [], "poolusagemetrics")


# ---- what the emulator never holds -------------------------------------------------------------


def empty_list(kind: str):
    """A list handler for a kind of item the emulator has none of (its $filter and paging still checked)."""

    def handler(svc: BatchService, req: Request) -> Response:
        return page(req, [], kind)

    handler.__name__ = f"list_{kind}"
    return handler


def missing(kind: str, words: str):
    """A handler for one item of a kind the emulator has none of: the service's {kind}NotFound (404),
    whose message says why."""

    def handler(svc: BatchService, req: Request, ident: str, *rest: str) -> Response:
        raise BatchError(
            404,
            f"{kind}NotFound",
            f"The specified {words[:-1]} does not exist: the Azure Batch emulator keeps no {words}.",
            **{f"{kind}Id": ident},
        )

    handler.__name__ = f"{kind.lower()}_not_found"
    return handler


def job_schedule_exists(svc: BatchService, req: Request, schedule_id: str) -> Response:
    return Response(404, b"")  # as pool_exists for a missing pool: no body on a HEAD


def certificate_not_found(svc: BatchService, req: Request, algorithm: str, thumbprint: str, *rest: str) -> Response:
    raise BatchError(
        404,
        "CertificateNotFound",
        "The specified certificate does not exist: the Azure Batch emulator keeps no certificates.",
        ThumbprintAlgorithm=algorithm,
        Thumbprint=thumbprint,
    )


def not_emulated(operation: str, what: str):
    """A handler refusing an operation whose resources the emulator does not keep (as an unknown path)."""

    def handler(svc: BatchService, req: Request, *ids: str) -> Response:
        raise BatchError(
            404, "ResourceNotFound", f"{operation} is not an operation of the Azure Batch emulator: it keeps no {what}."
        )

    handler.__name__ = operation
    return handler
