"""A node's content store: verified commits, presence of whole images, node status names."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from kubesim.controllers.contents import CommitError, ContentStore
from kubesim.controllers.kubeleting import go_duration


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_verified_blob_is_committed_and_nothing_else_is_visible(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    data = b"layer bytes" * 1000
    writer = store.ingest(digest_of(data), len(data))
    writer.write(data[:100])
    writer.write(memoryview(data)[100:])
    writer.commit()
    assert store.blob_path(digest_of(data)).read_bytes() == data
    assert store.has(digest_of(data), len(data))
    assert not store.has(digest_of(data), len(data) + 1)

    wrong = store.ingest(digest_of(b"other"), 5)
    wrong.write(b"OTHER")
    with pytest.raises(CommitError, match=r'failed commit on ref "layer-sha256:[0-9a-f]{64}": '
                                          r"unexpected commit digest sha256:[0-9a-f]{64}, "
                                          r"expected sha256:[0-9a-f]{64}: failed precondition"):
        wrong.commit()
    assert not store.has(digest_of(b"other"))

    short = store.ingest(digest_of(b"abc"), 4)
    short.write(b"abc")
    with pytest.raises(CommitError, match="unexpected commit size 3, expected 4"):
        short.commit()
    assert list((tmp_path / "content" / "ingest").iterdir()) == []


def test_an_image_is_present_only_while_every_blob_is(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    config, layer = b'{"os":"linux"}', b"\x1f\x8b" + b"x" * 500
    manifest = json.dumps({
        "schemaVersion": 2,
        "config": {"digest": digest_of(config), "size": len(config)},
        "layers": [{"digest": digest_of(layer), "size": len(layer)}],
    }).encode()
    for blob in (config, layer, manifest):
        store.put(digest_of(blob), blob)
    name = "edge.local/nf/upf:1"
    repo_digest = f"edge.local/nf/upf@{digest_of(manifest)}"
    size = len(config) + len(layer) + len(manifest)
    store.record([repo_digest, name], digest=digest_of(manifest),
                 media_type="application/vnd.oci.image.manifest.v1+json", size=size,
                 manifest=digest_of(manifest))
    assert store.present(name) is not None
    assert list(store.images()) == [([repo_digest, name], size)]

    # records survive a restart of the kubelet on the same directory
    again = ContentStore(tmp_path)
    assert again.present(name) is not None

    store.blob_path(digest_of(layer)).unlink()
    assert store.present(name) is None
    assert list(store.images()) == []


@pytest.mark.parametrize(("seconds", "text"), [
    (0.0004, "0s"), (0.5129, "512ms"), (1.2345, "1.234s"), (2.0, "2s"),
    (123.5, "2m3.5s"), (3725.0, "1h2m5s"),
])
def test_durations_read_as_go_prints_them(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_a_store_whose_directories_were_removed_behind_its_back_writes_again(
        tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    store.put(digest_of(b"one"), b"one")
    shutil.rmtree(tmp_path / "content")
    store.put(digest_of(b"two"), b"two")
    assert store.blob_path(digest_of(b"two")).read_bytes() == b"two"


def test_many_pieces_written_at_once_land_in_order(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    pieces = [bytes([i % 251]) * (i % 7) for i in range(3000)]  # empty ones too; > IOV_MAX
    data = b"".join(pieces)
    writer = store.ingest(digest_of(data), len(data))
    writer.write_many(pieces[:1500])
    writer.write(memoryview(b"".join(pieces[1500:2000])))
    writer.write_many(pieces[2000:])
    writer.commit()
    assert store.blob_path(digest_of(data)).read_bytes() == data
