"""An application the pool's start task installs on every node: its files, their blobs, and the command."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AppFiles:
    """An application for the nodes as local files. `name` names its entry in the pool's metadata (a pool
    runs one version of it: another version replaces the pool when idle); `install` is the start task's
    command line, run where the files land by their names."""

    name: str
    version: str
    files: tuple[Path, ...]
    install: tuple[str, ...]


@dataclass(frozen=True)
class AppBlobs:
    """The application in the application container: a blob per file, under a folder of its version."""

    name: str
    version: str
    blobs: tuple[str, ...]
    install: tuple[str, ...]

    @staticmethod
    def folder(name: str, version: str) -> str:
        return f"apps/{name}/{version}/"


def nothing_installed(name: str) -> AppBlobs:
    """For a workload whose tasks need nothing installed: its pools have no start task."""
    return AppBlobs(name, "none", (), ())
