"""The copy engine between two real registries: the artifact store (TLS + basic auth) and the
edge registry, read back by skopeo; a corrupting proxy; a source that goes away mid-copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterregistry.errors import DigestMismatchError, UnsupportedManifestError
from clusterregistry.oci import manifests
from clusterregistry.oci.authenticating import Credentials
from clusterregistry.oci.copying import Copier, CopyOptions
from clusterregistry.oci.registries import RegistryClient
from clusterregistry_sandbox.registries import Registry
from tests.integration.oci.conftest import client_for, copy_to_layout, inspect, inspect_digest
from tests.integration.oci.proxying import RegistryProxy
from tests.world.images import BuildImage, PushImage

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("image_format", "platforms"),
    [("oci", ("linux/amd64",)), ("docker", ("linux/amd64",)),
     ("oci", ("linux/amd64", "linux/arm64"))],
    ids=["oci-image", "docker-v2-image", "oci-2-platform-index"],
)
async def test_copies_read_back_by_skopeo_with_the_source_digests(
    secure_registry: Registry, registry: Registry, build_image: BuildImage,
    push_image: PushImage, tmp_path: Path, image_format: str, platforms: tuple[str, ...],
) -> None:
    image = build_image("nf/upf", tag="1.2", image_format=image_format, platforms=platforms,
                        layer_sizes=(300_000, 5000))
    await push_image(image, secure_registry, "nf/upf")
    async with client_for(secure_registry) as src, \
            client_for(registry, actions="pull,push") as dst:
        # chunked uploads for the larger layer, monolithic for the rest
        copier = Copier(CopyOptions(chunked_threshold=100_000, chunk_size=64_000))
        report = await copier.copy(src, "nf/upf", "1.2", dst, "mirror/nf/upf", tag="1.2")
    assert report.digest == report.source_digest == image.digest
    assert report.blobs_copied == len(image.blobs) and report.blobs_skipped == 0
    assert report.bytes_copied == sum(blob.size for blob in image.blobs)
    assert sorted(report.platforms) == (sorted(platforms) if image.is_index else [])

    reference = f"{registry.host}/mirror/nf/upf:1.2"
    assert await inspect_digest(registry, reference) == image.digest
    if not image.is_index:
        assert (await inspect(registry, reference))["Digest"] == image.digest
    index = await copy_to_layout(registry, reference, tmp_path / "layout")
    assert [entry["digest"] for entry in index["manifests"]] == [image.digest]
    for blob in image.blobs:  # skopeo verified and stored every blob of every platform
        assert (tmp_path / "layout" / "blobs" / "sha256" / blob.digest[7:]).read_bytes() == \
            image.read_blob(blob.digest)

    # a second copy finds the image complete and moves nothing
    async with client_for(secure_registry) as src, \
            client_for(registry, actions="pull,push") as dst:
        again = await Copier().copy(src, "nf/upf", "1.2", dst, "mirror/nf/upf", tag="1.2")
        # present under another tag: only the new tag is pushed
        retagged = await Copier().copy(src, "nf/upf", "1.2", dst, "mirror/nf/upf", tag="stable")
    assert again.already_present and again.bytes_copied == 0 and again.manifests_pushed == 0
    assert retagged.already_present and retagged.manifests_pushed == 1
    assert await inspect_digest(registry, f"{registry.host}/mirror/nf/upf:stable") == image.digest


@pytest.mark.parametrize(("verify_locally", "hash_in_thread", "message"), [
    (True, False, "the source's bytes have digest"),  # caught here, before the upload completes
    (True, True, "the source's bytes have digest"),  # the same, hashed in a worker thread
    (False, False, "rejected the content"),  # caught by the destination registry, not committed
])
async def test_a_corrupted_blob_fails_with_a_digest_error_and_leaves_no_manifest(
    secure_registry: Registry, registry: Registry, build_image: BuildImage,
    push_image: PushImage, verify_locally: bool, hash_in_thread: bool, message: str,
) -> None:
    image = build_image("nf/smf", layer_sizes=(200_000,))
    await push_image(image, secure_registry, "nf/smf")
    proxy = RegistryProxy(secure_registry, corrupt_blobs=True)
    await proxy.start()
    try:
        user, password = secure_registry.credentials or ("", "")
        source = RegistryClient(proxy.host, plain_http=True,
                                credentials=Credentials(user, password))
        async with source, client_for(registry, actions="pull,push") as dst:
            copier = Copier(CopyOptions(verify_locally=verify_locally,
                                        hash_in_thread=hash_in_thread, hash_batch=50_000))
            with pytest.raises(DigestMismatchError, match=message):
                await copier.copy(source, "nf/smf", "latest", dst, "m/nf/smf", tag="latest")
            assert await dst.head_manifest("m/nf/smf", "latest") is None
            assert await dst.head_manifest("m/nf/smf", image.digest) is None
            for blob in image.blobs:
                assert await dst.head_blob("m/nf/smf", blob.digest) is None
    finally:
        await proxy.stop()


async def test_chunk_encoded_source_bodies_are_copied_and_one_byte_too_many_is_refused(
    secure_registry: Registry, registry: Registry, build_image: BuildImage,
    push_image: PushImage,
) -> None:
    # Without a Content-Length only the stream itself tells where a blob ends. Pieces of
    # ~60 kB cross the 64 kB PATCH chunks and the 50 kB hash batches of the worker thread.
    image = build_image("nf/nrf", layer_sizes=(300_000, 5000))
    await push_image(image, secure_registry, "nf/nrf")
    user, password = secure_registry.credentials or ("", "")
    options = CopyOptions(chunked_threshold=100_000, chunk_size=64_000, hash_in_thread=True,
                          hash_batch=50_000)
    for extra, repository in ((b"", "m/nf/nrf"), (b"!", "m/nf/nrf-extra")):
        proxy = RegistryProxy(secure_registry, chunked_blobs=True, extra_blob_bytes=extra)
        await proxy.start()
        try:
            source = RegistryClient(proxy.host, plain_http=True,
                                    credentials=Credentials(user, password))
            async with source, client_for(registry, actions="pull,push") as dst:
                copier = Copier(options)
                if not extra:
                    report = await copier.copy(source, "nf/nrf", "latest", dst, repository,
                                               tag="latest")
                    assert report.digest == image.digest
                    assert report.bytes_copied == sum(blob.size for blob in image.blobs)
                    for blob in image.blobs:
                        assert await dst.head_blob(repository, blob.digest) == blob.size
                    continue
                with pytest.raises(DigestMismatchError, match="sent more than"):
                    await copier.copy(source, "nf/nrf", "latest", dst, repository,
                                      tag="latest")
                assert await dst.head_manifest(repository, "latest") is None
                for blob in image.manifests[0].layers:
                    assert await dst.head_blob(repository, blob.digest) is None
        finally:
            await proxy.stop()


async def test_platform_selection_pushes_a_filtered_index_and_schema1_is_refused(
    secure_registry: Registry, registry: Registry, build_image: BuildImage,
    push_image: PushImage,
) -> None:
    image = build_image("nf/amf", platforms=("linux/amd64", "linux/arm64", "linux/arm/v7"))
    await push_image(image, secure_registry, "nf/amf")
    async with client_for(secure_registry) as src, \
            client_for(registry, actions="pull,push") as dst:
        report = await Copier().copy(src, "nf/amf", "latest", dst, "m/nf/amf", tag="latest",
                                     platforms=["linux/arm64", "linux/arm/v7"])
        assert report.filtered and report.digest != image.digest
        assert sorted(report.platforms) == ["linux/arm/v7", "linux/arm64"]
        _, digest, data = await dst.get_manifest("m/nf/amf", "latest")
        assert digest == report.digest
        kept = manifests.parse(data, media_type=manifests.OCI_INDEX).children
        assert {c.platform: c.digest for c in kept} == {
            p: d for p, d in image.platform_digests.items() if p != "linux/amd64"}
        assert await dst.head_manifest("m/nf/amf", image.manifest_for("linux/amd64").digest) \
            is None
        with pytest.raises(UnsupportedManifestError, match="none of the platforms"):
            await Copier().copy(src, "nf/amf", "latest", dst, "m/x", platforms=["windows/amd64"])
    with pytest.raises(UnsupportedManifestError, match="schema 1"):
        manifests.parse(b'{"schemaVersion": 1, "fsLayers": []}',
                        media_type=manifests.DOCKER_SCHEMA1_SIGNED)


async def test_blobs_already_there_are_skipped_and_blobs_elsewhere_are_mounted(
    secure_registry: Registry, registry: Registry, build_image: BuildImage,
    push_image: PushImage,
) -> None:
    # same seed and sizes, different names: the layers are shared, the configs are not
    first = build_image("nf/one", layer_sizes=(30_000, 20_000))
    second = build_image("nf/two", layer_sizes=(30_000, 20_000))
    assert [b.digest for b in first.manifests[0].layers] == \
        [b.digest for b in second.manifests[0].layers]
    await push_image(first, secure_registry, "nf/one")
    await push_image(second, secure_registry, "nf/two")
    copier = Copier()  # one process: its in-memory ledger remembers where blobs went
    async with client_for(secure_registry) as src, \
            client_for(registry, actions="pull,push") as dst:
        await copier.copy(src, "nf/one", "latest", dst, "m/app", tag="one")
        same_repo = await copier.copy(src, "nf/two", "latest", dst, "m/app", tag="two")
        other_repo = await copier.copy(src, "nf/two", "latest", dst, "m/other", tag="two")
    assert (same_repo.blobs_skipped, same_repo.blobs_mounted, same_repo.blobs_copied) == (2, 0, 1)
    assert same_repo.bytes_copied == second.manifests[0].config.size
    assert (other_repo.blobs_skipped, other_repo.blobs_mounted, other_repo.blobs_copied) == (
        0, 3, 0)
    assert other_repo.bytes_copied == 0
    for repo in ("m/app", "m/other"):
        assert (await registry.manifest(repo, second.digest)) is not None
