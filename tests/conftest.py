from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import Azurite, start_azurite

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """A real Azurite blob service, in memory, for the whole session."""
    stack = start_azurite()
    yield stack
    stack.process.terminate()
    stack.process.wait(timeout=10)
