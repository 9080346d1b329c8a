"""The docs say what the code does: the retry table is the retry policy's, and every relative link leads
somewhere."""

from __future__ import annotations

import re
from pathlib import Path

from topn.tasks.policy import table

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "emulator" / "README.md"]


def test_the_retry_table_is_the_retry_policy() -> None:
    text = (ROOT / "docs" / "resilience.md").read_text()
    found = re.search(r"<!-- retry-table:[^>]*-->\n(.*?)\n<!-- /retry-table -->", text, re.S)
    assert found, "docs/resilience.md lost its retry-table markers"
    regenerate = "regenerate it: python -c 'from topn.tasks.policy import table; print(table())'"
    assert found.group(1).strip() == table(), regenerate


def test_every_relative_link_leads_to_a_file() -> None:
    broken = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"^[a-z]+:|^#", target):
                continue
            path = (doc.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken, broken
