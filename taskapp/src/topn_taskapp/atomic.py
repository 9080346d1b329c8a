"""Writing output files so that a reader sees each whole file or nothing."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO


class AtomicFiles:
    """Temporary files beside each target, opened at construction (so an unwritable target fails
    before any work) and moved into place together only if the `with` block ends without error."""

    def __init__(self, targets: list[Path]) -> None:
        self._targets = targets
        self._temps: list[Path] = []
        self.files: list[IO[str]] = []
        try:
            for target in targets:
                fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
                self._temps.append(Path(name))
                self.files.append(open(fd, "w", encoding="utf-8", newline="\n"))  # noqa: SIM115 (closed in __exit__)
        except BaseException:
            self._discard()
            raise

    def __enter__(self) -> list[IO[str]]:
        return self.files

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            for f in self.files:
                f.flush()
                os.fsync(f.fileno())
                f.close()
            for temp, target in zip(self._temps, self._targets, strict=True):
                os.replace(temp, target)
        except BaseException:
            self._discard()
            raise

    def _discard(self) -> None:
        for f in self.files:
            f.close()
        for temp in self._temps:
            temp.unlink(missing_ok=True)
