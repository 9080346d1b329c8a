"""Writing output files so that a reader sees each whole file or nothing."""

from __future__ import annotations

import os
from pathlib import Path

TYPE_CHECKING = False  # typing costs milliseconds to import, paid by every task; annotations only need it here
if TYPE_CHECKING:
    from typing import IO


def create_beside(target: Path, kind: str = "tmp") -> tuple[int, Path]:
    """A new empty file in target's folder, open for writing, as `tempfile.mkstemp` would make it (mode 0600,
    never an existing file). Its name starts with '.', so a folder read as input skips it."""
    while True:
        temp = target.with_name(f".{target.name}.{os.urandom(6).hex()}.{kind}")
        try:
            return os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600), temp
        except FileExistsError:
            continue


class AtomicFiles:
    """Temporary files beside each target, opened at construction (so an unwritable target fails
    before any work) and moved into place together only if the `with` block ends without error."""

    def __init__(self, targets: list[Path]) -> None:
        self._targets = targets
        self._temps: list[Path] = []
        self.files: list[IO[str]] = []
        try:
            for target in targets:
                fd, name = create_beside(target)
                self._temps.append(name)
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


class Scratch:
    """A text file beside `target` to write and read back, removed on exit whatever happens: it holds what
    must be written after something only known at the end (a part file's header needs the rows' totals)."""

    def __init__(self, target: Path) -> None:
        fd, self._path = create_beside(target, "spool")
        self.file: IO[str] = open(fd, "w+", encoding="utf-8", newline="\n")  # noqa: SIM115 (closed in __exit__)

    def __enter__(self) -> IO[str]:
        return self.file

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.file.close()
        self._path.unlink(missing_ok=True)
