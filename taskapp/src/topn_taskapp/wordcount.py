"""Counting words exactly as docs/word-rules.md defines them, over a stream in bounded memory.

The hot path never decodes text: it cuts UTF-8 lines into tokens at ASCII separators (on bytes, in
C) and counts the raw tokens. Words are derived once per *distinct* token at the end. This is exact
because an ASCII byte never occurs inside a UTF-8 sequence, and no ASCII separator composes under
NFC into a letter or digit. Only lines that are not valid UTF-8 are decoded (as cp1252) on the spot.
"""

from __future__ import annotations

import codecs
import heapq
import re
import unicodedata
from collections import Counter
from operator import itemgetter

TYPE_CHECKING = False  # typing costs milliseconds to import, paid by every task; annotations only need it here
if TYPE_CHECKING:
    from typing import BinaryIO

WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_ASCII_WORD = re.compile(rb"[a-z0-9]+(?:'[a-z0-9]+)*")
# A decoded token (one a line) that is not a plain ASCII word; matched from line starts only, so that no
# position inside a plain token is tried.
_SPECIAL = re.compile(r"^[^\n'\x80-\xff]*['\x80-\xff][^\n]*", re.MULTILINE)

BINARY_SNIFF_BYTES = 8192
READ_SIZE = 1 << 18  # large enough to amortise per-chunk work, small enough to stay in cache
LONG_LINE_BYTES = 8 << 20
_BOM = codecs.BOM_UTF8

# ASCII letters lower-cased; letters, digits, the apostrophe and every non-ASCII byte kept (they are
# sorted out per distinct token); all other ASCII bytes become spaces, the token separators.
_KEEP = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789'")
_TOKEN_TABLE = bytes(c + 32 if 65 <= c <= 90 else c if c in _KEEP or c >= 0x80 else 32 for c in range(256))


def normalise(text: str) -> str:
    """NFC, then case-fold, then U+2019 as the ASCII apostrophe (docs/word-rules.md 1.4)."""
    return unicodedata.normalize("NFC", text).casefold().replace("\u2019", "'")


def top_n(counts: Counter[str], n: int) -> list[tuple[str, int]]:
    """The n most frequent words, ties broken by the word in code-point order (docs/word-rules.md 3). Sorts
    with C keys only (by word, then stably by count): every count task ranks each of its files."""
    if n <= 0:
        return []
    items = counts.items()
    if n < len(counts):  # only the words at least as frequent as the n-th: the rest cannot be in the top
        cut = heapq.nlargest(n, counts.values())[-1]
        items = [kv for kv in items if kv[1] >= cut]
    ranked = sorted(items)
    ranked.sort(key=itemgetter(1), reverse=True)
    return ranked[:n]


class FileCount:
    """What counting one input gave: its size, its full word counts, or why it was skipped."""

    # A plain class, not a dataclass: `dataclasses` imports `inspect`, a few milliseconds at every start.
    def __init__(self, size: int, counts: Counter[str], skipped: str | None = None) -> None:
        self.size = size
        self.counts = counts
        self.skipped = skipped

    @property
    def words(self) -> int:
        return sum(self.counts.values())


class WordCounter:
    """Accumulates word counts from whole lines of raw bytes."""

    def __init__(self) -> None:
        self._tokens: Counter[bytes] = Counter()  # runs between ASCII separators, from UTF-8 lines
        self._words: Counter[str] = Counter()

    def feed_lines(self, data: bytes) -> None:
        """Counts `data`, which must hold whole lines only (a line may not continue in the next call)."""
        pos = 0
        while (bad := _first_invalid_utf8(data, pos)) >= 0:
            newline = data.rfind(b"\n", pos, bad)
            start = pos if newline < 0 else newline + 1
            stop = data.find(b"\n", bad) + 1 or len(data)
            self._count_tokens(data[pos:start])
            self.feed_text(data[start:stop].decode("cp1252", "replace"))
            pos = stop
        self._count_tokens(data[pos:] if pos else data)

    def feed_text(self, text: str) -> None:
        """Counts already-decoded text (not yet normalised)."""
        self._words.update(WORD.findall(normalise(text)))

    def add(self, counts: Counter[str]) -> None:
        """Adds words counted elsewhere."""
        self._words.update(counts)

    def counts(self) -> Counter[str]:
        """The words counted so far, as text. Tokens are plain ASCII words but for a few: all are decoded at
        once (latin-1 maps each byte to one character, so the join splits back into the same tokens), then
        those with an apostrophe or a non-ASCII byte are taken out and made words one by one."""
        tokens = self._tokens
        if not tokens:
            return Counter(self._words)
        texts = b"\n".join(tokens).decode("latin-1")
        total = Counter(dict(zip(texts.split("\n"), tokens.values(), strict=True)))
        for special in _SPECIAL.findall(texts):
            n, token = total.pop(special), special.encode("latin-1")
            if not token.isascii():
                words = WORD.findall(normalise(token.decode("utf-8")))
            else:
                words = [w.decode("ascii") for w in _ASCII_WORD.findall(token)]
            for word in words:
                total[word] += n
        if self._words:
            total.update(self._words)
        return total

    def _count_tokens(self, data: bytes) -> None:
        self._tokens.update(data.translate(_TOKEN_TABLE).split())


def _first_invalid_utf8(data: bytes, pos: int) -> int:
    """The index of the first byte at or after `pos` that is not valid UTF-8, or -1."""
    if pos == 0 and data.isascii():
        return -1
    try:
        codecs.utf_8_decode(memoryview(data)[pos:], "strict", True)
    except UnicodeDecodeError as e:
        return pos + e.start
    return -1


def count_stream(
    stream: BinaryIO, read_size: int = READ_SIZE, long_line: int = LONG_LINE_BYTES, *, file_start: bool = True
) -> FileCount:
    """Counts the words of a binary stream, or reports it skipped as binary (docs/word-rules.md 1.1).

    `file_start=False`: the stream is a later part of a file, starting at a line start (a split count); it is
    neither sniffed for binary (the caller decided on the file's start) nor has a BOM dropped (word rules 1.2).
    """
    head = stream.read(BINARY_SNIFF_BYTES)
    if file_start and b"\x00" in head:
        size = len(head) + sum(len(b) for b in iter(lambda: stream.read(read_size), b""))
        return FileCount(size, Counter(), "binary")
    counter = WordCounter()
    offset = 3 if file_start and head.startswith(_BOM) else 0
    carry, line_start, pos = head[offset:], offset, len(head)  # line_start: offset of carry[0]
    while chunk := stream.read(read_size):
        pos += len(chunk)
        buf = carry + chunk
        cut = buf.rfind(b"\n") + 1
        if cut:
            counter.feed_lines(buf[:cut])
        carry = buf[cut:]
        line_start += cut
        if len(carry) > long_line and stream.seekable():
            pos = line_start = _count_long_line(stream, line_start, counter, read_size)
            carry = b""
            stream.seek(pos)
    if carry:
        counter.feed_lines(carry)
    return FileCount(pos, counter.counts())


def _count_long_line(stream: BinaryIO, start: int, counter: WordCounter, read_size: int) -> int:
    """Counts one line too long to hold, from `start`; returns the offset just past it.

    A line's encoding is only known at its end, so it is read optimistically as UTF-8 and, if it
    turns out not to be, read again from its start as Windows-1252.
    """
    for encoding, errors in (("utf-8", "strict"), ("cp1252", "replace")):
        pending = WordCounter()
        end = _feed_long_line(stream, start, pending, encoding, errors, read_size)
        if end is not None:
            counter.add(pending.counts())
            return end
    raise AssertionError("cp1252 with errors='replace' cannot fail to decode")


def _feed_long_line(
    stream: BinaryIO, start: int, into: WordCounter, encoding: str, errors: str, read_size: int
) -> int | None:
    stream.seek(start)
    decoder = codecs.getincrementaldecoder(encoding)(errors)
    text, pos = "", start
    try:
        while True:
            chunk = stream.read(read_size)
            newline = chunk.find(b"\n")
            part = chunk if newline < 0 else chunk[: newline + 1]
            pos += len(part)
            final = newline >= 0 or not chunk
            text += decoder.decode(part, final)
            cut = len(text) if final else _safe_cut(text)
            into.feed_text(text[:cut])
            text = text[cut:]
            if final:
                return pos
    except UnicodeDecodeError:
        return None


def _safe_cut(text: str, window: int = 1 << 16) -> int:
    """An index where text may be split without changing its words or its normal form.

    An ASCII separator followed by an ASCII character qualifies: neither can join a word across
    it, nor compose or reorder with its neighbour under NFC. 0 when none is near the end.
    """
    for j in range(len(text) - 2, max(-1, len(text) - window), -1):
        c, nxt = text[j], text[j + 1]
        if c < "\x80" and nxt < "\x80" and not c.isalnum() and c != "'":
            return j + 1
    return 0
