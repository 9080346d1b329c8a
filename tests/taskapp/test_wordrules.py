"""The word rules of docs/word-rules.md sections 1-3, on the streaming counter."""

from __future__ import annotations

import io
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from topn_taskapp.wordcount import count_stream, top_n

from tests.taskapp.oracle import spec_counts


def count(data: bytes, **kw: int) -> Counter[str]:
    result = count_stream(io.BytesIO(data), **kw)
    assert result.size == len(data)
    return result.counts


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Don't stop", ["don't", "stop"]),
        ("the dogs' bowls", ["the", "dogs", "bowls"]),
        ("'Tis rock'n'roll", ["tis", "rock'n'roll"]),
        ("well-known _protégés_", ["well", "known", "protégés"]),
        ("Apollo 11, 1969", ["apollo", "11", "1969"]),
        ("STRASSE Straße", ["strasse", "strasse"]),
        ("cafe\u0301", ["café"]),
        ("Don\u2019t", ["don't"]),
        ("snake_case x__y", ["snake", "case", "x", "y"]),
        ("a''b 'quoted' end'", ["a", "b", "quoted", "end"]),
        ("tab\tcr\rvt\x0bbell\x07sep", ["tab", "cr", "vt", "bell", "sep"]),
        ("x\ufffdy a\ufeffb", ["x", "y", "a", "b"]),
        ("ΣΊΣΥΦΟΣ Ωμέγα", ["σίσυφοσ", "ωμέγα"]),
        ("x² ½ ١٢٣", ["x²", "½", "١٢٣"]),
        ("日本語 テキスト", ["日本語", "テキスト"]),
        ("ﬁne Ǆ", ["fine", "ǆ"]),
    ],
)
def test_section_2_words(text: str, words: list[str]) -> None:
    assert count(text.encode("utf-8")) == Counter(words)


def test_nothing_spans_a_line_break() -> None:
    assert count(b"don'\nt cafe\n\xcc\x81") == Counter({"don": 1, "t": 1, "cafe": 1})


def test_crlf_lines() -> None:
    assert count(b"One two\r\nTWO\r\n") == Counter({"one": 1, "two": 2})


def test_binary_when_nul_in_first_8192_bytes() -> None:
    data = b"a" * 8191 + b"\x00" + b" words here" * 100
    result = count_stream(io.BytesIO(data))
    assert (result.skipped, result.counts, result.size) == ("binary", Counter(), len(data))


def test_nul_after_8192_bytes_is_a_separator() -> None:
    data = b" " * 8192 + b"left\x00right"
    result = count_stream(io.BytesIO(data))
    assert result.skipped is None
    assert result.counts == Counter({"left": 1, "right": 1})


def test_bom_dropped_before_decoding() -> None:
    # Kept, the BOM would decode as cp1252 "ï»¿" on this non-UTF-8 line and add the word "ï".
    assert count(b"\xef\xbb\xbfcaf\xe9 ok\n") == Counter({"café": 1, "ok": 1})


def test_bom_only_dropped_at_start() -> None:
    assert count("a\ufeffb".encode()) == Counter({"a": 1, "b": 1})


def test_utf8_and_cp1252_lines_mix() -> None:
    data = "café\n".encode() + b"caf\xe9 don\x92t\n" + "naïve\n".encode()
    assert count(data) == Counter({"café": 2, "don't": 1, "naïve": 1})


def test_cp1252_undefined_bytes_become_replacement_separators() -> None:
    assert count(b"ab\x81cd\x8d\xe9") == Counter({"ab": 1, "cd": 1, "é": 1})


def test_invalid_line_decodes_whole_line_as_cp1252() -> None:
    # "é" as UTF-8 on a line that also has a stray Latin-1 byte: the whole line is cp1252.
    assert count("café ".encode() + b"\xe9t\xe9") == Counter({"cafã": 1, "été": 1})


def test_empty_and_wordless_inputs() -> None:
    assert count(b"") == Counter()
    assert count(b"\n\n  -- ''\n") == Counter()


def test_ranking_ties_by_code_point() -> None:
    counts = Counter({"é": 2, "z": 2, "a": 1, "Z": 2, "b": 3})
    assert top_n(counts, 3) == [("b", 3), ("Z", 2), ("z", 2)]
    assert top_n(counts, 10)[-1] == ("a", 1)
    assert top_n(Counter(), 5) == []


TRICKY = [
    b"word",
    b"Word",
    b"WORDS",
    b" ",
    b"\n",
    b"\r\n",
    b"'",
    b"-",
    b"_",
    b"42",
    b"\t",
    "é".encode(),
    b"\xe9",
    "\u2019".encode(),
    b"\x92",
    "e\u0301".encode(),
    "\u0301".encode(),
    "ß".encode(),
    "İ".encode(),
    b"\xef\xbb\xbf",
    b"\x81",
    "日本".encode(),
    b"\xe6\x97",
    b"\x00",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(TRICKY), max_size=80),
    st.sampled_from([1, 2, 3, 7, 64, 1 << 20]),
    st.sampled_from([4, 16, 1 << 20]),
)
def test_stream_agrees_with_spec_at_any_read_boundary(parts: list[bytes], read_size: int, long_line: int) -> None:
    data = b"".join(parts)
    expected = spec_counts(data)
    result = count_stream(io.BytesIO(data), read_size=read_size, long_line=long_line)
    assert result.size == len(data)
    if expected is None:
        assert result.skipped == "binary"
    else:
        assert result.counts == expected


@pytest.mark.parametrize("read_size", [1, 5, 4096])
def test_long_lines_switch_encoding_late(read_size: int) -> None:
    # The bad byte comes long after the line started: what was counted as UTF-8 is recounted as cp1252.
    line = "Café ".encode() * 500 + b"caf\xe9 end" + b"\n" + "Café\n".encode() * 3
    assert count(line, read_size=read_size, long_line=64) == spec_counts(line)
    assert spec_counts(line) == Counter({"cafã": 500, "café": 4, "end": 1})
