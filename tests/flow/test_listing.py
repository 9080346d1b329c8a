"""Listing a prefix on real Azurite: read lean, and its folders listed at once, exactly what the SDK lists."""

from __future__ import annotations

import uuid

import pytest

from tests.stack import Azurite
from topn.tasks import listing


@pytest.fixture
def container(azurite: Azurite):
    client = azurite.client().get_container_client(f"listing-{uuid.uuid4().hex[:8]}")
    client.create_container()
    try:
        yield client
    finally:
        client.delete_container()


def _names_by_the_sdk(container, prefix: str) -> list[tuple[str, int, str]]:
    return [(b.name, b.size, b.etag.strip('"')) for b in container.list_blobs(name_starts_with=prefix)]


def _names(blobs) -> list[tuple[str, int, str]]:
    return [(b.name, b.size, b.etag) for b in blobs]


@pytest.mark.parametrize("folders", [0, 3, listing.MAX_FOLDERS + 1])
def test_a_prefix_is_listed_whole_whatever_its_folders(container, folders: int, monkeypatch) -> None:
    monkeypatch.setattr(listing, "FOLDERS_AT_ONCE", 4)
    names = ["in/top-a.txt", "in/top-z.txt", "in!/not-under.txt", "other/x.txt"]
    names += [f"in/f{i:03}/{j}.txt" for i in range(folders) for j in range(3)]
    names += ["in/f000/deep/er/y.txt"] if folders else []
    for name in names:
        container.upload_blob(name, name.encode() * 3)
    names += ["only/one/a.txt", "only/one/b/c.txt", "only/one/d/e.txt"]  # one folder alone: split below it
    for name in names[-3:]:
        container.upload_blob(name, name.encode())
    for prefix in ("in/", "in", "", "in/f000/", "nothing/", "only/"):
        assert _names(listing.list_tree(container, prefix)) == _names_by_the_sdk(container, prefix), prefix
    assert _names(listing.list_blobs(container, "in/")) == _names_by_the_sdk(container, "in/")
