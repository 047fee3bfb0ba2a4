"""The mirror's background copy shares the link through the front: a fetch only the mirror
asked for is paced by mirror.maxBytesPerSecond, and a kubelet joining it lifts the pacing."""

from __future__ import annotations

import asyncio
import time

from clusterregistry import subjects
from clusterregistry_sandbox.images import BuiltImage
from tests.integration.front.conftest import FrontWorld, http_session, sha256
from tests.world.images import BuildImage, PushImage

MiB = 1024 * 1024
RATE = 1 * MiB  # bytes/s
LAYER = 6 * MiB
# paced, the layer cannot arrive sooner than this (the bucket's burst is a tenth of a second)
PACED_AT_LEAST = (LAYER - RATE // 10) / RATE


async def _get(front_url: str, path: str, digest: str, *, background: bool) -> bytes:
    headers = {subjects.FRONT_SOURCE_VIEW_HEADER: "1"} if background else {}
    async with http_session() as session, session.get(
        f"{front_url}/v2/{path}/blobs/{digest}", headers=headers,
    ) as response:
        assert response.status == 200
        return await response.read()


async def test_a_fetch_for_the_mirror_alone_is_paced_and_a_kubelet_lifts_it(
    front_world: FrontWorld, build_image: BuildImage, push_image: PushImage,
) -> None:
    image: BuiltImage = build_image("paced", layer_sizes=[LAYER, LAYER])
    await push_image(image, front_world.store, "nf/paced", tag="1.0")
    front = await front_world.start_front(mirror={"maxBytesPerSecond": str(RATE)})
    path = front_world.path("nf/paced")
    first, second = (layer.digest for layer in image.manifests[0].layers)
    first_size = image.manifests[0].layers[0].size  # the blob's bytes (a tar of the payload)

    # the mirror alone: the whole layer at the limit
    began = time.monotonic()
    data = await _get(front.url, path, first, background=True)
    paced_seconds = time.monotonic() - began
    assert sha256(data) == first
    assert paced_seconds >= PACED_AT_LEAST, paced_seconds

    # the mirror starts the other layer; a kubelet asks for it as well once bytes flow:
    # from then on the fetch runs at the link's speed, for both
    mirror = asyncio.create_task(_get(front.url, path, second, background=True))
    async def flowing() -> bool:  # the second layer's fetch has begun (bytes arrive, paced)
        return front.metric("clusterregistry_front_source_bytes_total") > first_size

    await front_world.wait(flowing, "the paced fetch of the second layer")
    began = time.monotonic()
    kubelet = await _get(front.url, path, second, background=False)
    mirrored = await mirror
    joined_seconds = time.monotonic() - began
    assert sha256(kubelet) == sha256(mirrored) == second
    # paced, what was left would have taken most of PACED_AT_LEAST more; lifted it takes a
    # small fraction of that even on a loaded machine
    assert joined_seconds < PACED_AT_LEAST / 2, joined_seconds

