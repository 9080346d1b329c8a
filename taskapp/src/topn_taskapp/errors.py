"""The two kinds of expected failure, and how a path may appear in their messages."""

from __future__ import annotations

import os
import re

_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:/")  # pathlib folds "https://" to "https:/"


class UsageError(Exception):
    """Bad use of the command line: exit status 2."""


class Failure(Exception):
    """An expected failure such as an unreadable input: exit status 1."""


def shown(path: str | os.PathLike[str]) -> str:
    """A path as it may be printed: a URL loses its query string, which may hold a SAS token."""
    text = str(path)
    return text.split("?", 1)[0] if _URL.match(text) else text
