"""Two workers on one work queue, 50 requests for images sharing layers: every image copied
once, every layer uploaded once (the others mounted), counted by a proxy at the edge."""

from __future__ import annotations

import asyncio
import collections

import pytest

from clusterregistry_sandbox.images import BuiltImage
from clusterregistry_sandbox.registries import Registry
from tests.integration.mirror.conftest import MirrorWorld, settings_for, upload_image
from tests.integration.oci.conftest import client_for
from tests.integration.oci.proxying import RegistryProxy
from tests.world.images import BuildImage

pytestmark = pytest.mark.integration

IMAGES = 50


async def test_two_workers_copy_each_image_once_and_each_layer_once(
    mirror_world: MirrorWorld, secure_registry: Registry, registry: Registry,
    build_image: BuildImage,
) -> None:
    # layer 0 shared by a quarter of the images, layer 1 by a twentieth, layer 2 by none
    images: list[BuiltImage] = [
        build_image(f"nf/app{n}", seed=n % 4, layer_sizes=(40_000, 8_000 + n % 5, 1_000 + n))
        for n in range(IMAGES)]
    async with client_for(secure_registry, actions="pull,push") as store:
        slots = asyncio.Semaphore(8)

        async def upload(n: int) -> None:
            async with slots:
                await upload_image(store, f"nf/app{n}", images[n])

        await asyncio.gather(*(upload(n) for n in range(IMAGES)))
    layers = {blob.digest for image in images for blob in image.blobs}
    assert len(layers) < 3 * IMAGES  # the set-up really overlaps

    edge = RegistryProxy(registry)  # counts what reaches the edge registry
    await edge.start()
    try:
        for name in ("worker-a", "worker-b"):
            await mirror_world.add_worker(settings_for(secure_registry, concurrency=4),
                                          name=name, local_registry=edge.host)
        for n in range(IMAGES):
            await mirror_world.request(
                f"app{n}", f"{secure_registry.host}/nf/app{n}:latest",
                f"{edge.host}/store/nf/app{n}:latest")
        results = await mirror_world.wait_results(IMAGES, timeout=120)
    finally:
        await edge.stop()

    assert sorted(r.artifact for r in results) == sorted(f"app{n}" for n in range(IMAGES))
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert {r.worker for r in results} == {"worker-a", "worker-b"}  # both took work
    results_by = {r.artifact: r for r in results}
    for n, image in enumerate(images):
        assert results_by[f"app{n}"].digest == image.digest
        path = f"/v2/store/nf/app{n}/manifests"
        # each image pushed once: its manifest by digest, then its tag
        assert edge.manifest_puts[f"{path}/{image.digest}"] == 1
        assert edge.manifest_puts[f"{path}/latest"] == 1
        assert await registry.manifest(f"store/nf/app{n}", "latest") is not None
    # every distinct layer and config uploaded exactly once; every other use was a mount
    assert set(edge.uploads) == layers and set(edge.uploads.values()) == {1}
    uses = collections.Counter(blob.digest for image in images for blob in image.blobs)
    assert sum(edge.mounts.values()) == sum(uses.values()) - len(layers)
    copied = sum(r.blobs_copied for r in results)
    mounted = sum(r.blobs_mounted for r in results)
    assert (copied, mounted) == (len(layers), sum(uses.values()) - len(layers))
