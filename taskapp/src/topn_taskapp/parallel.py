"""Counting one large input in several processes, over byte ranges that start and end at line boundaries.

Nothing spans a line break (docs/word-rules.md 2), so the counts of whole-line ranges add up to the
count of the file. Each range is counted by `count_stream`, the one counting code path; only the first
range starts the file, so only it may drop a BOM. Whether the file is binary is decided here, on the file's
start, before any split: a binary file is left to the sequential path, which skips it whole.

`multiprocessing` is imported only when a file is actually split: it costs every task milliseconds.
"""

from __future__ import annotations

import itertools
import os
import stat
import sys
from collections import Counter

from topn_taskapp.errors import Failure
from topn_taskapp.wordcount import BINARY_SNIFF_BYTES, FileCount, count_stream

TYPE_CHECKING = False  # typing costs milliseconds to import, paid by every task; annotations only need it here
if TYPE_CHECKING:
    from typing import BinaryIO

_SEEK_READ = 1 << 16  # read forward from a target offset in these steps, looking for the next line break


def count_split(stream: BinaryIO, path: os.PathLike[str], label: str, jobs: int, split_bytes: int) -> FileCount | None:
    """Counts the regular file `stream` (opened from `path`) in up to `jobs` processes if it is larger than
    `split_bytes`, is not binary and has a line break to cut at; None when it should be counted as a whole.
    The stream is left at its start."""
    info = os.fstat(stream.fileno())
    if jobs < 2 or not stat.S_ISREG(info.st_mode) or info.st_size <= split_bytes:
        return None
    try:
        if b"\x00" in stream.read(BINARY_SNIFF_BYTES):  # binary: skipped whole, by the sequential path
            return None
        ranges = line_ranges(stream, info.st_size, jobs)
    finally:
        stream.seek(0)
    if len(ranges) < 2:
        return None
    return _count_ranges(os.fspath(path), ranges, label)


def line_ranges(stream: BinaryIO, size: int, pieces: int) -> list[tuple[int, int | None]]:
    """Up to `pieces` (start, length) ranges of about equal size covering the stream, each ending just after a
    `\\n`; the last has length None (to the end). A cut is the first line start at or after a target offset."""
    cuts = [0]
    for k in range(1, pieces):
        target = size * k // pieces
        if target <= cuts[-1]:  # a long line already took the search past this target
            continue
        cut = _line_start_from(stream, target)
        if cut is None or cut >= size:  # no line break after the target: the rest is one range
            break
        cuts.append(cut)
    return [(start, end - start) for start, end in itertools.pairwise(cuts)] + [(cuts[-1], None)]


def _line_start_from(stream: BinaryIO, target: int) -> int | None:
    """The offset just after the first `\\n` at or after `target - 1` (so `target` itself if a line starts
    there), or None if there is none."""
    pos = target - 1
    stream.seek(pos)
    while chunk := stream.read(_SEEK_READ):
        newline = chunk.find(b"\n")
        if newline >= 0:
            return pos + newline + 1
        pos += len(chunk)
    return None


class RangeReader:
    """The bytes `start` to `start + length` (to the end for None) of a binary file, as a seekable stream
    whose offsets count from `start`: what `count_stream` needs, long lines included."""

    def __init__(self, file: BinaryIO, start: int, length: int | None) -> None:
        self._file = file
        self._start = start
        self._length = length
        self._pos = 0
        file.seek(start)

    def read(self, size: int = -1) -> bytes:
        if self._length is not None:
            left = self._length - self._pos
            size = left if size < 0 else min(size, left)
            if size <= 0:
                return b""
        data = self._file.read(size)
        self._pos += len(data)
        return data

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int) -> int:
        self._file.seek(self._start + pos)
        self._pos = pos
        return pos

    def tell(self) -> int:
        return self._pos


def _start_method() -> str:
    # fork starts a worker in about a millisecond and needs no import; macOS has it, but it is unsafe there.
    import multiprocessing

    return "fork" if "fork" in multiprocessing.get_all_start_methods() and sys.platform != "darwin" else "spawn"


def _count_ranges(path: str, ranges: list[tuple[int, int | None]], label: str) -> FileCount:
    """Counts each range in a process of its own and sums the results as they come."""
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context(_start_method())
    workers = {}  # the receiving end of each worker's pipe: the worker
    size, counts = 0, Counter()
    try:
        for index, (start, length) in enumerate(ranges):
            receive, send = context.Pipe(duplex=False)
            worker = context.Process(target=_work, args=(send, path, start, length, index == 0), daemon=True)
            workers[receive] = worker
            worker.start()
            send.close()  # the worker holds it now: its end, or its death, is an EOF here
        while workers:
            for receive in wait(list(workers)):
                worker = workers.pop(receive)
                try:
                    outcome = receive.recv()
                except EOFError:
                    worker.join()
                    raise Failure(f"cannot count {label}: a worker process {_ended(worker.exitcode)}") from None
                finally:
                    receive.close()
                worker.join()
                if outcome[0] == "oserror":
                    raise OSError(outcome[1], outcome[2])  # reported as for the sequential path: cannot read
                if outcome[0] == "error":
                    raise Failure(f"cannot count {label}: {outcome[1]} (in a worker process)")
                size += outcome[1]
                if counts:
                    counts.update(outcome[2])
                else:
                    counts = outcome[2]
    finally:  # on any failure (or ^C), the workers still counting are stopped: none is left behind
        for receive, worker in workers.items():
            receive.close()
            if worker.is_alive():
                worker.terminate()
            worker.join()
    return FileCount(size, counts)


def _ended(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"was killed by signal {-exitcode}"
    return f"ended without a result (exit status {exitcode})"


def _work(send: object, path: str, start: int, length: int | None, file_start: bool) -> None:
    """A worker: counts one range and sends back ("ok", bytes, counts) or what went wrong."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C goes to the whole group: the parent stops the workers
    try:
        with open(path, "rb") as file:
            result = count_stream(RangeReader(file, start, length), file_start=file_start)
        outcome: tuple = ("ok", result.size, result.counts)
    except OSError as e:
        outcome = ("oserror", e.errno, e.strerror or str(e))
    except BaseException as e:  # sent, not raised: multiprocessing would print a traceback
        outcome = ("error", f"{type(e).__name__}: {e}")
    try:
        send.send(outcome)  # type: ignore[attr-defined]
        send.close()  # type: ignore[attr-defined]
    except BaseException:  # the parent is gone, or the counts cannot be sent: it sees an EOF
        pass
