"""The registry part of the test world, proven with real docker-registry processes.

A plain edge registry and a TLS + basic-auth artifact store must behave as
their real counterparts do for the clients the project uses (aiohttp here,
skopeo in the image tests); the read-only restart and the offline garbage
collection are what the gc service will rely on, quirks included.
"""

from __future__ import annotations

import base64
import ssl

import aiohttp
import pytest

from clusterregistry_sandbox.images import SkopeoError
from clusterregistry_sandbox.registries import Registry
from tests.world.images import BuildImage, PushImage

pytestmark = pytest.mark.integration


def _basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def test_plain_registry_serves_the_v2_api(registry: Registry) -> None:
    assert registry.url == f"http://127.0.0.1:{registry.port}"
    assert registry.host == f"127.0.0.1:{registry.port}"
    assert registry.credentials is None and registry.ca_path is None
    async with registry.session() as session, session.get("/v2/") as response:
        assert response.status == 200
        assert response.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert await registry.tags("nothing/here") == []
    assert await registry.manifest("nothing/here", "latest") is None
    assert registry.root_dir.is_dir()


async def test_secure_registry_needs_tls_trust_and_credentials(secure_registry: Registry) -> None:
    assert secure_registry.url == f"https://127.0.0.1:{secure_registry.port}"
    assert secure_registry.credentials is not None
    assert secure_registry.ca_path is not None and secure_registry.ca_path.is_file()
    username, password = secure_registry.credentials
    trusting = ssl.create_default_context(cafile=str(secure_registry.ca_path))
    url = f"{secure_registry.url}/v2/"

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusting)) as session:
        async with session.get(url) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Basic ")
        async with session.get(url, headers=_basic(username, "wrong")) as response:
            assert response.status == 401
        async with session.get(url, headers=_basic(username, password)) as response:
            assert response.status == 200

    # without the CA, the certificate does not verify
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(url, headers=_basic(username, password))
        # and plain HTTP on the TLS port is refused by the server
        async with session.get(f"http://{secure_registry.host}/v2/") as response:
            assert response.status == 400


async def test_read_only_restart_rejects_writes_and_keeps_reads(
    registry: Registry, build_image: BuildImage, push_image: PushImage
) -> None:
    first = build_image("first")
    await push_image(first, registry, "apps/first")
    port, log_path = registry.port, registry.log_path

    await registry.restart(read_only=True)
    assert registry.read_only and registry.port == port and registry.log_path == log_path

    found = await registry.manifest("apps/first", first.tag)
    assert found is not None and found.digest == first.digest
    async with registry.session() as session:
        # distribution 2.8 does not route write methods in read-only mode: 405
        async with session.post("/v2/apps/first/blobs/uploads/") as response:
            assert response.status == 405
        async with session.put(
            f"/v2/apps/first/manifests/{first.tag}",
            data=first.read_blob(first.digest),
            headers={"Content-Type": first.media_type},
        ) as response:
            assert response.status == 405
        async with session.delete(f"/v2/apps/first/manifests/{first.digest}") as response:
            assert response.status == 405

    second = build_image("second", seed=2)
    with pytest.raises(SkopeoError):
        await push_image(second, registry, "apps/second")
    assert await registry.manifest("apps/second", second.tag) is None

    await registry.restart(read_only=False)
    assert not registry.read_only
    await push_image(second, registry, "apps/second")
    pushed = await registry.manifest("apps/second", second.tag)
    assert pushed is not None and pushed.digest == second.digest


async def test_garbage_collect_frees_the_blobs_of_a_deleted_manifest(
    registry: Registry, build_image: BuildImage, push_image: PushImage
) -> None:
    empty = await registry.garbage_collect()
    assert (empty.blobs_marked, empty.blobs_eligible, empty.manifests_eligible) == (0, 0, 0)

    kept = build_image("kept", layer_sizes=[2048], seed=1)
    doomed = build_image("doomed", layer_sizes=[4096, 1024], seed=2)
    await push_image(kept, registry, "apps/kept")
    await push_image(doomed, registry, "apps/doomed")
    async with (
        registry.session() as session,
        session.delete(f"/v2/apps/doomed/manifests/{doomed.digest}") as response,
    ):
        assert response.status == 202

    await registry.restart(read_only=True)
    dry = await registry.garbage_collect(dry_run=True)
    assert dry.blobs_eligible == 4  # the manifest, its config and two layers
    assert all([await registry.blob_exists("apps/doomed", b.digest) for b in doomed.blobs])

    done = await registry.garbage_collect()
    assert done.blobs_eligible == 4
    assert done.blobs_marked == 3  # kept: manifest, config, layer
    for blob in doomed.blobs:
        assert not await registry.blob_exists("apps/doomed", blob.digest)
    for blob in kept.blobs:
        assert await registry.blob_exists("apps/kept", blob.digest)


async def test_garbage_collect_delete_untagged_and_the_multi_arch_quirk(
    registry: Registry, build_image: BuildImage, push_image: PushImage
) -> None:
    old = build_image("app", tag="old", seed=1)
    new = build_image("app", tag="new", seed=2)
    multi = build_image("multi", platforms=["linux/amd64", "linux/arm64"], seed=3)
    await push_image(old, registry, "apps/app", tag="v1")
    await push_image(new, registry, "apps/app", tag="v1")  # `old` is now untagged
    await push_image(multi, registry, "apps/multi", tag="v1")

    await registry.restart(read_only=True)
    result = await registry.garbage_collect(delete_untagged=True)
    assert result.manifests_eligible == 3  # `old` and, wrongly, both children of `multi`

    assert await registry.manifest("apps/app", old.digest) is None
    current = await registry.manifest("apps/app", "v1")
    assert current is not None and current.digest == new.digest
    index = await registry.manifest("apps/multi", "v1")
    assert index is not None and index.digest == multi.digest
    # distribution issue 3178 (not fixed in 2.8): the children of a tagged
    # index are "untagged", so --delete-untagged deletes them and their blobs.
    # The gc service must not use --delete-untagged on multi-arch content.
    for child in multi.manifests:
        assert await registry.manifest("apps/multi", child.digest) is None
        assert not await registry.blob_exists("apps/multi", child.config.digest)
