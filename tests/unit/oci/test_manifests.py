"""Manifest parsing: the four media types, digests checked, schema 1 and junk refused."""

from __future__ import annotations

import json

import pytest

from clusterregistry.errors import DigestMismatchError, UnsupportedManifestError
from clusterregistry.oci import manifests

D1, D2, D3 = ("sha256:" + c * 64 for c in "abc")


def _image(media_type: str | None = manifests.OCI_MANIFEST, **extra: object) -> bytes:
    document: dict[str, object] = {
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D1,
                   "size": 10},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D2,
                    "size": 20}], **extra}
    if media_type:
        document["mediaType"] = media_type
    return json.dumps(document).encode()


def test_image_manifest_names_config_then_layers_and_keeps_the_bytes() -> None:
    data = _image()
    manifest = manifests.parse(data, media_type=manifests.OCI_MANIFEST,
                               digest=manifests.digest_of(data))
    assert manifest.data == data and manifest.digest == manifests.digest_of(data)
    assert [(b.digest, b.size) for b in manifest.blobs] == [(D1, 10), (D2, 20)]
    assert not manifest.is_index


def test_index_children_carry_their_platforms() -> None:
    data = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": manifests.DOCKER_MANIFEST, "digest": D1, "size": 5,
         "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"mediaType": manifests.DOCKER_MANIFEST, "digest": D2, "size": 6,
         "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()
    # no mediaType in the document: the Content-Type decides
    index = manifests.parse(data, media_type=manifests.DOCKER_LIST + "; charset=utf-8")
    assert index.is_index and index.media_type == manifests.DOCKER_LIST
    assert [(c.platform, c.digest) for c in index.children] == [("linux/arm/v7", D1),
                                                                 ("linux/amd64", D2)]
    assert manifests.parse(data).media_type == manifests.OCI_INDEX  # the shape decides


def test_foreign_layers_are_not_blobs_to_copy() -> None:
    foreign = {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
               "digest": D3, "size": 1, "urls": ["https://example.com/layer"]}
    data = _image(manifests.DOCKER_MANIFEST)
    document = json.loads(data)
    document["layers"].append(foreign)
    manifest = manifests.parse(json.dumps(document).encode())
    assert D3 not in [b.digest for b in manifest.blobs] and len(manifest.layers) == 2


@pytest.mark.parametrize("data, media_type, message", [
    (b'{"schemaVersion": 1, "fsLayers": []}', "", "schema 1"),
    (b"{}", manifests.DOCKER_SCHEMA1_SIGNED, "schema 1"),
    (b"not json", "", "not JSON"),
    (b"[]", "", "not a JSON object"),
    (b'{"schemaVersion": 2, "mediaType": "application/vnd.foo"}', "", "unsupported"),
    (b'{"schemaVersion": 2, "mediaType": "' + manifests.OCI_INDEX.encode() + b'"}', "",
     "without a manifests list"),
    (_image(config="nope"), "", "descriptor"),
])
def test_unusable_manifests_are_refused_clearly(data: bytes, media_type: str,
                                                message: str) -> None:
    with pytest.raises(UnsupportedManifestError, match=message):
        manifests.parse(data, media_type=media_type)


def test_bytes_that_do_not_match_the_digest_are_refused() -> None:
    with pytest.raises(DigestMismatchError):
        manifests.parse(_image(), digest=D1)
    with pytest.raises(UnsupportedManifestError, match="bad or missing digest"):
        bad = json.loads(_image())
        bad["layers"][0]["digest"] = "sha256:short"
        manifests.parse(json.dumps(bad).encode())
