"""An independent, deliberately naive transcription of docs/word-rules.md: whole input in
memory, line by line. The task application's streaming counter must agree with it on any bytes."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from pathlib import Path

WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def spec_counts(data: bytes) -> Counter[str] | None:
    """Word counts of `data` per the spec, or None when it is binary."""
    if b"\x00" in data[:8192]:
        return None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    counts: Counter[str] = Counter()
    for raw in data.split(b"\n"):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = raw.decode("cp1252", errors="replace")
        line = unicodedata.normalize("NFC", line).casefold().replace("\u2019", "'")
        counts.update(WORD.findall(line))
    return counts


def spec_top(folder: Path, n: int) -> list[list]:
    """The top `n` words of every file under `folder` per the spec, as a run's JSON lists them."""
    counts: Counter[str] = Counter()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            counts.update(spec_counts(path.read_bytes()) or {})
    return [[w, c] for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]
