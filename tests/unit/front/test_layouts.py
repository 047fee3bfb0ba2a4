"""Where a blob lives on distribution's volume, and when a repository may serve it."""

from __future__ import annotations

from pathlib import Path

from clusterregistry.front.layouts import blob_data

DIGEST = "sha256:" + "ab" * 32


def _store(root: Path, *, name: str, link: str | None = DIGEST, data: bool = True) -> Path:
    base = root / "docker/registry/v2"
    if link is not None:
        linked = base / "repositories" / name / "_layers/sha256" / DIGEST[7:]
        linked.mkdir(parents=True)
        (linked / "link").write_text(link)
    blob = base / "blobs/sha256" / DIGEST[7:9] / DIGEST[7:]
    if data:
        blob.mkdir(parents=True)
        (blob / "data").write_bytes(b"layer")
    return blob / "data"


def test_a_linked_blob_is_served_from_its_data_file(tmp_path: Path) -> None:
    data = _store(tmp_path, name="docker.io/library/nginx")
    assert blob_data(tmp_path, name="docker.io/library/nginx", digest=DIGEST) == data


def test_without_the_repository_link_distribution_decides(tmp_path: Path) -> None:
    _store(tmp_path, name="a/b", link=None)
    assert blob_data(tmp_path, name="a/b", digest=DIGEST) is None
    assert blob_data(tmp_path, name="c/d", digest=DIGEST) is None


def test_a_link_naming_another_digest_or_missing_data_is_no_hit(tmp_path: Path) -> None:
    _store(tmp_path, name="a/b", link="sha256:" + "cd" * 32)
    assert blob_data(tmp_path, name="a/b", digest=DIGEST) is None
    _store(tmp_path / "2", name="a/b", data=False)
    assert blob_data(tmp_path / "2", name="a/b", digest=DIGEST) is None


def test_odd_names_and_digests_never_leave_the_volume(tmp_path: Path) -> None:
    _store(tmp_path, name="a/b")
    assert blob_data(tmp_path, name="a/../a/b", digest=DIGEST) is None
    assert blob_data(tmp_path, name="a/b", digest="sha512:" + "ab" * 64) is None
    assert blob_data(tmp_path, name="a/b", digest="sha256:../../x") is None
