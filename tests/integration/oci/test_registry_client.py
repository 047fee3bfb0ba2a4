"""RegistryClient against real distribution registries: manifests, tags, the catalog's pages,
blobs, deletes, TLS with a custom CA and basic auth, and errors that hide the password."""

from __future__ import annotations

import pytest

from clusterregistry.errors import AuthenticationError, ManifestUnknownError
from clusterregistry.oci import manifests
from clusterregistry.oci.authenticating import Credentials
from clusterregistry.oci.registries import RegistryClient, ssl_context
from clusterregistry_sandbox.registries import Registry
from tests.world.images import BuildImage, PushImage

pytestmark = pytest.mark.integration


def _client(registry: Registry, *, password: str | None = None, actions: str = "pull"
            ) -> RegistryClient:
    credentials = None
    if registry.credentials:
        user, secret = registry.credentials
        credentials = Credentials(user, password if password is not None else secret)
    return RegistryClient(
        registry.host, credentials=credentials, plain_http=not registry.tls,
        ssl_ctx=ssl_context(ca_file=str(registry.ca_path)) if registry.tls else None,
        actions=actions)


async def test_reads_an_index_and_its_children_over_tls_with_basic_auth(
    secure_registry: Registry, build_image: BuildImage, push_image: PushImage
) -> None:
    image = build_image("nf/upf", tag="1.2", platforms=("linux/amd64", "linux/arm64"))
    await push_image(image, secure_registry, "nf/upf")
    async with _client(secure_registry) as client:
        media_type, digest, data = await client.get_manifest("nf/upf", "1.2")
        assert (media_type, digest) == (manifests.OCI_INDEX, image.digest)
        index = manifests.parse(data, media_type=media_type, digest=digest)
        assert {c.platform: c.digest for c in index.children} == image.platform_digests
        child = index.children[0]
        media_type, _, data = await client.get_manifest("nf/upf", child.digest)
        manifest = manifests.parse(data, media_type=media_type, digest=child.digest)
        built = image.manifest_for(child.platform)
        assert [b.digest for b in manifest.blobs] == [b.digest for b in built.blobs]
        assert await client.head_manifest("nf/upf", "1.2") == image.digest
        assert await client.head_manifest("nf/upf", "nope") is None
        layer = built.layers[0]
        assert await client.head_blob("nf/upf", layer.digest) == layer.size
        assert await client.head_blob("nf/upf", "sha256:" + "0" * 64) is None
        assert await client.list_tags("nf/upf") == ["1.2"]
        with pytest.raises(ManifestUnknownError):
            await client.get_manifest("nf/upf", "missing")


async def test_catalog_follows_pages_and_delete_removes_a_manifest(
    registry: Registry, build_image: BuildImage, push_image: PushImage
) -> None:
    image = build_image("app", image_format="docker")
    for n in range(5):
        await push_image(image, registry, f"team/app{n}")
    async with _client(registry, actions="pull,push") as client:
        assert await client.catalog(page_size=2) == [f"team/app{n}" for n in range(5)]
        assert await client.list_tags("team/never") == []
        await client.delete_manifest("team/app0", image.digest)
        assert await client.head_manifest("team/app0", "latest") is None
        with pytest.raises(ManifestUnknownError):
            await client.delete_manifest("team/app0", image.digest)


async def test_wrong_password_is_a_clear_error_without_the_password(
    secure_registry: Registry,
) -> None:
    wrong = "not-the-password-s3cr3t"
    async with _client(secure_registry, password=wrong) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.get_manifest("nf/upf", "1.2")
    message = str(caught.value)
    assert "clusterregistry" in message and secure_registry.host in message
    assert wrong not in message and wrong not in repr(caught.value)
    async with RegistryClient(secure_registry.host, ssl_ctx=ssl_context(
            ca_file=str(secure_registry.ca_path))) as anonymous:
        with pytest.raises(AuthenticationError, match="requires credentials"):
            await anonymous.ping()
