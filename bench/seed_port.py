"""A faithful Python port of the seed sample's counter (Microsoft's TopNWords sample, TopNWordsTask):

    string content = blob.DownloadText();
    var topNWords = content.Split(' ').Where(word => word.Length > 0)
        .GroupBy(word => word, (key, group) => new KeyValuePair<String, long>(key, group.LongCount()))
        .OrderByDescending(x => x.Value).Take(topNWordsCount).ToList();

The baseline of bench/wordcount.py. It is not exact to the word rules, and is not meant to be.
"""

from __future__ import annotations

import json
import sys


def seed_top_n(path: str, n: int) -> list[tuple[str, int]]:
    with open(path, encoding="utf-8", errors="replace") as f:  # DownloadText(): the whole blob as text
        content = f.read()
    groups: dict[str, list[str]] = {}  # GroupBy buffers every element of each group
    for word in content.split(" "):
        if len(word) > 0:
            groups.setdefault(word, []).append(word)
    counted = [(key, len(group)) for key, group in groups.items()]
    counted.sort(key=lambda kv: kv[1], reverse=True)  # OrderByDescending is a stable sort
    return counted[:n]


if __name__ == "__main__":
    json.dump(seed_top_n(sys.argv[1], int(sys.argv[2])), sys.stdout)
