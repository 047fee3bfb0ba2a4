"""The copier's progress accounting, without registries: bytes done count each blob byte
once (uploaded as it goes, resent bytes once; mounted and already-present blobs whole),
against the total the manifests name."""

from __future__ import annotations

from clusterregistry.oci.copying import Copier, CopyProgress, _Job
from clusterregistry.oci.manifests import Descriptor

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def blob(name: str, size: int) -> Descriptor:
    return Descriptor(media_type=LAYER, digest="sha256:" + name * 64, size=size)


def job(progress: CopyProgress) -> _Job:
    # the clients are never touched: only the job's accounting is exercised
    return _Job(Copier(), (None, "src"), (None, "dst"), progress=progress)  # type: ignore[arg-type]


def test_uploaded_bytes_count_as_they_go_and_once() -> None:
    progress = CopyProgress()
    copy = job(progress)
    layer, config = blob("a", 1000), blob("b", 100)
    assert not progress.known
    progress.planned(2, 1100)
    assert (progress.known, progress.bytes_total, progress.bytes_remaining) == (True, 1100, 1100)
    copy.advanced(layer, 400)
    copy.advanced(layer, 700)
    assert progress.bytes_done == 700
    # an interrupted upload restarted in a new session sends bytes [0, 700) again
    copy.advanced(layer, 300)
    copy.advanced(layer, 700)
    assert progress.bytes_done == 700
    copy.advanced(layer, 1000)
    progress.blob_done(layer.digest, "copied", layer.size)  # counted already as it went
    assert (progress.bytes_done, progress.blobs_done) == (1000, 1)
    # the config blob was already in the destination repository: done at once, whole
    progress.blob_done(config.digest, "skipped", config.size)
    assert (progress.bytes_done, progress.blobs_done, progress.bytes_remaining) == (1100, 2, 0)
    assert copy.counters.bytes_copied == 1000  # the report counts only what moved


def test_mounted_blobs_count_as_done() -> None:
    progress = CopyProgress()
    progress.planned(3, 600)
    progress.blob_done("sha256:x", "mounted", 200)
    progress.advanced(50)
    assert (progress.bytes_done, progress.bytes_remaining, progress.blobs_done) == (250, 350, 1)
