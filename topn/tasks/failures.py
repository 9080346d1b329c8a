"""The one error a run ends with when it cannot produce its result: a message for the user, with the cause
and what to do (nothing to debug in its frames: the flow logs it without a traceback)."""


class TopnFailed(RuntimeError):
    """The run did not produce a result; the message says which files and why, `summary` in one line."""

    def __init__(self, message: str, summary: str | None = None) -> None:
        super().__init__(message)
        self.summary = summary or (message.splitlines() or [""])[0]
