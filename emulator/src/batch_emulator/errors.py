"""Batch errors and their OData bodies (docs/batch-wire.md 5)."""

from __future__ import annotations

import uuid

from batch_emulator import wire


class BatchError(Exception):
    """An error the service answers with: an HTTP status, an error code, a message and details."""

    def __init__(self, status: int, code: str, message: str, **values: object) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.values = {k: str(v) for k, v in values.items()}

    def body(self, base_url: str) -> dict:
        stamp = wire.rfc3339(wire.now())
        body = {
            "odata.metadata": f"{base_url}/$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element",
            "code": self.code,
            "message": {"lang": "en-US", "value": f"{self.message}\nRequestId:{uuid.uuid4()}\nTime:{stamp}"},
        }
        if self.values:
            body["values"] = [{"key": k, "value": v} for k, v in self.values.items()]
        return body

    def as_task_result(self) -> dict:
        """The `error` object of a per-task result in an add-task-collection answer."""
        error = {"code": self.code, "message": {"lang": "en-US", "value": self.message}}
        if self.values:
            error["values"] = [{"key": k, "value": v} for k, v in self.values.items()]
        return error


def missing(prop: str) -> BatchError:
    return BatchError(
        400, "MissingRequiredProperty", f"A required property was not specified: {prop}.", PropertyName=prop
    )


def invalid(prop: str, value: object, reason: str = "") -> BatchError:
    message = f"The value provided for {prop} is invalid." + (f" {reason}" if reason else "")
    return BatchError(400, "InvalidPropertyValue", message, PropertyName=prop, PropertyValue=value)


def not_found(kind: str, ident: str) -> BatchError:
    return BatchError(404, f"{kind}NotFound", f"The specified {kind.lower()} does not exist.", **{f"{kind}Id": ident})


def exists(kind: str, ident: str) -> BatchError:
    return BatchError(409, f"{kind}Exists", f"The specified {kind.lower()} already exists.", **{f"{kind}Id": ident})


def being_deleted(kind: str, ident: str) -> BatchError:
    return BatchError(
        409,
        f"{kind}BeingDeleted",
        f"The specified {kind.lower()} has been marked for deletion and is being reclaimed.",
        **{f"{kind}Id": ident},
    )
