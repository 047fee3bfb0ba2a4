"""Read-only windows: while GC's lock says `sweep`, the front refuses writes with 503 and a
Retry-After and keeps serving reads (hits, and misses from the source, stored after the
window); the window ends when the lock goes, even when GC died holding it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from clusterregistry import schemas, subjects
from clusterregistry.bus.fencing import Fence
from clusterregistry.schemas import FenceEntry
from clusterregistry_sandbox.images import BuiltImage, SkopeoError, skopeo_copy
from tests.integration.front.conftest import (
    LOCK_TTL,
    Front,
    FrontWorld,
    assert_pulled,
    http_session,
    image_digests,
    pull,
    source_requests,
)
from tests.world.images import BuildImage, PushImage
from tests.world.nats import jetstream


async def _push_through(front: Front, image: BuiltImage, path: str, tag: str) -> None:
    """`skopeo copy` of a built image into the registry, through the front (plain HTTP)."""
    await skopeo_copy(image.source_ref, f"{front.host}/{path}:{tag}", dest_tls_verify=False,
                      timeout=60)


async def _wait_read_only(world: FrontWorld, fence: Fence, front: Front,
                          acquired: float) -> None:
    """Until the front acknowledges that it refuses writes for the lock taken at `acquired`."""
    key = subjects.fence_front_read_only(front.name)

    async def acknowledged() -> bool:
        entry = (await fence.fronts_read_only()).get(key)
        return entry is not None and entry.acquired == acquired

    await world.wait(acknowledged, f"{key} acknowledged")


async def _start_upload(session: aiohttp.ClientSession, front: Front, path: str
                        ) -> tuple[int, str, dict[str, str]]:
    async with session.post(f"{front.url}/v2/{path}/blobs/uploads/") as response:
        return response.status, await response.text(), dict(response.headers)


async def test_a_sweep_refuses_writes_and_reads_keep_flowing(
    front_world: FrontWorld, build_image: BuildImage, push_image: PushImage, tmp_path: Path,
) -> None:
    stored = build_image("stored", layer_sizes=[100_000])
    fresh = build_image("fresh", layer_sizes=[150_000, 20_000], seed=7)
    pushed = build_image("pushed", layer_sizes=[30_000], seed=9)
    await push_image(stored, front_world.store, "nf/stored", tag="1")
    await push_image(stored, front_world.edge, front_world.path("nf/stored"), tag="1")
    await push_image(fresh, front_world.store, "nf/fresh", tag="1")
    front = await front_world.start_front()
    fence = await front_world.fence()
    target = "team/pushed"  # a client's own repository, not a mirrored one

    async with fence.exclusive(purpose="gc r1", wait_timeout=5) as hold:
        async with http_session() as session:
            # holding the lock to delete manifests is no sweep: writes still pass
            status, _, _ = await _start_upload(session, front, target)
            assert status == 202
        await fence.relabel(hold, "sweep r1")
        await _wait_read_only(front_world, fence, front, hold.entry.acquired)
        assert front.metric("clusterregistry_front_read_only") == 1

        # writes: refused, with a Retry-After and a message saying why
        async with http_session() as session:
            status, body, headers = await _start_upload(session, front, target)
            assert status == 503
            assert headers["Retry-After"] == str(round(LOCK_TTL / 3))
            assert "read-only" in body and "garbage collection" in body
            for method, uri in (("PUT", f"/v2/{target}/manifests/1"),
                                ("DELETE", f"/v2/{target}/manifests/{stored.digest}"),
                                ("PATCH", f"/v2/{target}/blobs/uploads/x")):
                async with session.request(method, front.url + uri, data=b"{}") as response:
                    assert response.status == 503, (method, uri)
                    assert "Retry-After" in response.headers
                    assert (await response.json())["errors"][0]["code"] == "UNAVAILABLE"
        try:
            await _push_through(front, pushed, target, "1")
        except SkopeoError as exc:
            assert "503" in exc.output or "read-only" in exc.output, exc.output
        else:
            raise AssertionError("a push went through during a sweep")
        assert front.metric("clusterregistry_front_read_only_refusals_total") >= 5

        # reads: a hit as usual, and a never-seen image from the source
        assert_pulled(stored, await pull(front_world.ref("nf/stored", "1", front=front),
                                         tmp_path / "hit"))
        assert_pulled(fresh, await pull(front_world.ref("nf/fresh", "1", front=front),
                                        tmp_path / "miss"))
        fetched_at = time.time()
        assert source_requests(front_world.store) == {
            "/v2/nf/fresh/manifests/1": 1,
            **{f"/v2/nf/fresh/blobs/{d}": 1 for d in image_digests(fresh)}}

        # the fetched blobs wait for the window's end: the front has tried to store them
        # (at once, then every ttl/3) for at least one renewal of the lock
        async def renewed_since_fetch() -> bool:
            return hold.entry.renewed > fetched_at + LOCK_TTL / 3

        await front_world.wait(renewed_since_fetch, "the lock renewed after the fetch")
        assert not await front_world.edge_has_blobs("nf/fresh", image_digests(fresh)[:1])
        assert not await front_world.edge_has_blobs("nf/fresh", image_digests(fresh)[1:])
        assert front.metric("clusterregistry_front_stored_blobs_total") == 0

    # the sweep is over: the acknowledgement goes, writes pass, the fetched blobs land
    async def acknowledgement_gone() -> bool:
        return subjects.fence_front_read_only(front.name) not in await fence.fronts_read_only()

    await front_world.wait(acknowledgement_gone, "the read-only acknowledgement removed")
    await front_world.wait_stored("nf/fresh", image_digests(fresh))
    await _push_through(front, pushed, target, "1")
    assert await front_world.edge.manifest(target, "1") is not None
    assert front.metric("clusterregistry_front_read_only") == 0
    assert front.metric("clusterregistry_front_read_only_seconds_count") == 1
    assert source_requests(front_world.store)["/v2/nf/fresh/manifests/1"] == 1
    await front_world.wait_spool_empty(front)


async def test_a_gc_that_dies_in_its_window_leaves_it_after_the_lock_ttl(
    front_world: FrontWorld, build_image: BuildImage,
) -> None:
    pushed = build_image("pushed", layer_sizes=[30_000])
    front = await front_world.start_front()
    fence = await front_world.fence()
    target = "team/after-gc"
    assert front_world.nats is not None
    # GC's lock as a GC leaves it when SIGKILLed mid-sweep: written once, never renewed
    now = time.time()
    dead = FenceEntry(holder="gc-killed", purpose="sweep killed", acquired=now, renewed=now)
    async with jetstream(front_world.nats.url) as js:
        kv = await js.key_value(subjects.GC_BUCKET)
        await kv.create(subjects.FENCE_LOCK, schemas.encode(dead))
    loop = asyncio.get_running_loop()
    written = loop.time()
    await _wait_read_only(front_world, fence, front, now)

    async with http_session() as session:
        status, body, _ = await _start_upload(session, front, target)
        assert status == 503, body

        async def writes_again() -> bool:
            return (await _start_upload(session, front, target))[0] == 202

        await front_world.wait(writes_again, "writes accepted again", timeout=LOCK_TTL + 10)
    took = loop.time() - written
    # not before the lock expired, and promptly after (the front polls every 0.1 s)
    assert LOCK_TTL - 0.5 <= took <= LOCK_TTL + 5, took
    assert await fence.lock_holder() is None
    await _push_through(front, pushed, target, "1")
    assert await front_world.edge.manifest(target, "1") is not None
    assert front.metric("clusterregistry_front_read_only") == 0
    assert front.metric("clusterregistry_front_read_only_seconds_count") == 1
    assert subjects.fence_front_read_only(front.name) not in await fence.fronts_read_only()
