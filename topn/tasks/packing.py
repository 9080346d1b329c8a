"""Packs of inputs, one Batch task each: how many files and bytes a task takes, and how many outputs a merge reads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Packing:
    """How files are packed into tasks, and how many outputs one merge reads (for workloads that merge)."""

    files_per_task: int = 100
    bytes_per_task: int = 64 << 20  # a file larger than this is a task of its own
    fan_in: int = 100


def pack(sizes: list[int], files_per_task: int, bytes_per_task: int) -> list[range]:
    """Consecutive files as packs of at most `files_per_task` files and `bytes_per_task` bytes; a file larger
    than that is a pack of its own. Returns ranges of positions in `sizes`."""
    packs: list[range] = []
    start = total = 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= files_per_task or total + size > bytes_per_task):
            packs.append(range(start, i))
            start, total = i, 0
        total += size
    if sizes:
        packs.append(range(start, len(sizes)))
    return packs


@dataclass(frozen=True)
class PackSpec:
    """One pack: positions of its members in the run's inputs, in their order in its output. A combined
    pack also names the packs whose outputs it merges (it is never run as a whole)."""

    members: tuple[int, ...]
    parts: tuple[tuple[int, ...], ...] = ()
