"""Single flight: however many clients, on however many front replicas, pull a never-seen
image at once, the source serves each manifest and each blob once, and every client gets
every byte; a client that goes away mid-blob costs the others nothing and leaves no spool."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path

import aiohttp

from clusterregistry_sandbox.images import BuiltImage
from clusterregistry_sandbox.supervising import wait_for
from tests.integration.front.conftest import (
    Front,
    FrontWorld,
    SlowLink,
    assert_pulled,
    http_session,
    image_digests,
    pull,
    source_requests,
)
from tests.world.images import BuildImage, PushImage

CLIENTS = 6


def _assert_one_get_each(world: FrontWorld, repository: str, image: BuiltImage,
                         manifest_ref: str) -> None:
    expected = {f"/v2/{repository}/manifests/{manifest_ref}": 1}
    expected.update({f"/v2/{repository}/blobs/{d}": 1 for d in image_digests(image)})
    assert dict(source_requests(world.store)) == expected


def _total(fronts: list[Front], kind: str, result: str) -> float:
    return sum(front.requests(kind, result) for front in fronts)


async def _wait_stored_counted(fronts: list[Front], count: int) -> None:
    """The fronts together stored `count` blobs (each counted once its PUT returned)."""
    async def counted() -> bool:
        return sum(f.metric("clusterregistry_front_stored_blobs_total")
                   for f in fronts) == count

    await wait_for(counted, timeout=20, description=f"{count} blobs stored, once each")


async def _six_pulls(world: FrontWorld, fronts: list[Front], image: BuiltImage, *,
                     source: str, tmp_path: Path) -> None:
    """Six skopeo processes at once, spread over the fronts, all asking for the same name."""
    pulls = [pull(world.ref("nf/six", "1.0", front=fronts[i % len(fronts)], source=source),
                  tmp_path / f"client-{i}") for i in range(CLIENTS)]
    for directory in await asyncio.gather(*pulls):
        assert_pulled(image, directory)


async def test_six_clients_on_one_front_fetch_each_blob_once(
    front_world: FrontWorld, slow_link: SlowLink, build_image: BuildImage,
    push_image: PushImage, tmp_path: Path,
) -> None:
    image = build_image("six", layer_sizes=[3_000_000, 1_000_000, 200_000])
    await push_image(image, front_world.store, "nf/six", tag="1.0")
    front = await front_world.start_front()

    await _six_pulls(front_world, [front], image, source=slow_link.host, tmp_path=tmp_path)

    _assert_one_get_each(front_world, "nf/six", image, "1.0")
    digests = image_digests(image)
    assert front.metric("clusterregistry_front_source_fetches_total", kind="blob",
                        outcome="fetched") == len(digests)
    # every blob asked of the front 6 times: once fetched, the rest joined the fetch or
    # (arriving after it was stored) read from the edge registry
    assert front.requests("blob", "miss_streamed") == len(digests)
    assert (front.requests("blob", "joined") + front.requests("blob", "hit")
            == (CLIENTS - 1) * len(digests))
    assert front.metric("clusterregistry_front_source_bytes_total") == \
        sum(b.size for b in image.blobs) + image.size
    await front_world.wait_stored("nf/six", digests, source=slow_link.host)
    await _wait_stored_counted([front], len(digests))
    await front_world.wait_spool_empty(front)


async def test_six_clients_on_two_front_replicas_fetch_each_blob_once(
    front_world: FrontWorld, slow_link: SlowLink, build_image: BuildImage,
    push_image: PushImage, tmp_path: Path,
) -> None:
    image = build_image("six", layer_sizes=[3_000_000, 1_000_000, 200_000])
    await push_image(image, front_world.store, "nf/six", tag="1.0")
    fronts = [await front_world.start_front(), await front_world.start_front()]

    await _six_pulls(front_world, fronts, image, source=slow_link.host, tmp_path=tmp_path)

    _assert_one_get_each(front_world, "nf/six", image, "1.0")
    digests = image_digests(image)
    # one fetch and one store per blob across the replicas
    assert _total(fronts, "blob", "miss_streamed") == len(digests)
    assert sum(f.metric("clusterregistry_front_source_bytes_total") for f in fronts) == \
        sum(b.size for b in image.blobs) + image.size
    await front_world.wait_stored("nf/six", digests, source=slow_link.host)
    await _wait_stored_counted(fronts, len(digests))
    for front in fronts:
        await front_world.wait_spool_empty(front)


async def test_clients_of_two_replicas_join_one_fetch_of_a_blob(
    front_world: FrontWorld, slow_link: SlowLink, build_image: BuildImage,
    push_image: PushImage,
) -> None:
    """Six GETs of one blob at once, three per replica, while the source holds its bytes:
    one replica fetches, its clients join its spool, the other's stream from it as a peer."""
    image = build_image("joined", layer_sizes=[2_000_000])
    await push_image(image, front_world.store, "nf/joined", tag="1")
    fronts = [await front_world.start_front(), await front_world.start_front()]
    layer = image.manifests[0].layers[0]
    data = image.read_blob(layer.digest)
    path = front_world.path("nf/joined", source=slow_link.host)
    slow_link.rate = 256 * 1024  # until the fetch has begun: then held, see below

    async def get(session: aiohttp.ClientSession, front: Front) -> bytes:
        async with session.get(f"{front.url}/v2/{path}/blobs/{layer.digest}") as response:
            assert response.status == 200, await response.text()
            assert response.headers["Content-Length"] == str(len(data))
            assert response.headers["Docker-Content-Digest"] == layer.digest
            return await response.read()

    async def fetch_begun() -> bool:
        return any(f.metric("clusterregistry_front_spool_bytes") > 0 for f in fronts)

    async def all_streaming() -> bool:
        # the six clients, and the other replica's three requests to the holder as a peer
        return (_total(fronts, "blob", "miss_streamed") + _total(fronts, "blob", "joined")
                == CLIENTS + 3)

    async with http_session() as session:
        gets = [asyncio.create_task(get(session, fronts[i % 2])) for i in range(CLIENTS)]
        try:
            # the source's headers are in (the spool is reserved): hold the body until
            # every client streams the spool, so none can come after the blob is stored
            await front_world.wait(fetch_begun, "the fetch begun")
            slow_link.flowing.clear()
            await front_world.wait(all_streaming, "six clients on one fetch")
        finally:
            slow_link.rate = 64 * 1024 * 1024
            slow_link.flowing.set()
        bodies = await asyncio.gather(*gets)
    assert all(body == data for body in bodies)
    assert source_requests(front_world.store) == {f"/v2/nf/joined/blobs/{layer.digest}": 1}
    assert _total(fronts, "blob", "miss_streamed") == 1
    # the replica that lost the claim served its three from the holder's spool; the peer
    # requests count as joined on the holder too
    fetching = [f for f in fronts if f.requests("blob", "miss_streamed") == 1]
    other = next(f for f in fronts if f is not fetching[0])
    assert other.requests("blob", "joined") == 3
    assert other.metric("clusterregistry_front_source_bytes_total") == 0
    assert other.metric("clusterregistry_front_served_bytes_total",
                        result="joined") == 3 * len(data)
    await front_world.wait_stored("nf/joined", [layer.digest], source=slow_link.host)
    for front in fronts:
        await front_world.wait_spool_empty(front)


async def test_a_client_gone_mid_blob_costs_the_others_nothing(
    front_world: FrontWorld, slow_link: SlowLink, build_image: BuildImage,
    push_image: PushImage,
) -> None:
    image = build_image("large", layer_sizes=[32 * 1024 * 1024])
    await push_image(image, front_world.store, "nf/large", tag="1")
    front = await front_world.start_front()
    layer = image.manifests[0].layers[0]
    wanted = hashlib.sha256(image.read_blob(layer.digest)).hexdigest()
    url = f"{front.url}/v2/{front_world.path('nf/large', source=slow_link.host)}/blobs/" \
        f"{layer.digest}"

    async def leaves(session: aiohttp.ClientSession) -> int:
        """Read a few chunks, then hang up."""
        async with session.get(url) as response:
            assert response.status == 200
            read = 0
            async for chunk in response.content.iter_chunked(256 * 1024):
                read += len(chunk)
                if read >= 1024 * 1024:
                    break
            response.close()  # drops the connection mid-body
        return read

    async def stays(session: aiohttp.ClientSession) -> str:
        async with session.get(url) as response:
            assert response.status == 200
            digest = hashlib.sha256()
            async for chunk in response.content.iter_chunked(1024 * 1024):
                digest.update(chunk)
            return digest.hexdigest()

    async with http_session() as session, http_session() as quitter:
        staying = [asyncio.create_task(stays(session)) for _ in range(CLIENTS - 1)]
        read = await leaves(quitter)
        # it left while the source was still sending: the fetch was under way
        assert read < layer.size
        assert front.metric("clusterregistry_front_source_fetches_total", kind="blob",
                            outcome="fetched") == 0
        digests = await asyncio.gather(*staying)
    assert digests == [wanted] * (CLIENTS - 1)
    assert source_requests(front_world.store) == {f"/v2/nf/large/blobs/{layer.digest}": 1}
    await front_world.wait_stored("nf/large", [layer.digest], source=slow_link.host)
    await front_world.wait_spool_empty(front)


async def test_a_client_gone_before_the_first_byte_leaves_no_spool(
    front_world: FrontWorld, slow_link: SlowLink, build_image: BuildImage,
    push_image: PushImage,
) -> None:
    """A client that gives up while the source has not answered yet (containerd cancelling
    a pull): the fetch goes on and is stored, and its spool is released all the same."""
    image = build_image("early", layer_sizes=[300_000])
    await push_image(image, front_world.store, "nf/early", tag="1")
    front = await front_world.start_front()
    layer = image.manifests[0].layers[0]
    url = f"{front.url}/v2/{front_world.path('nf/early', source=slow_link.host)}/blobs/" \
        f"{layer.digest}"
    slow_link.flowing.clear()  # the source says nothing yet

    async def source_asked() -> bool:
        return slow_link.connections > 0

    async with http_session() as session:
        gone = asyncio.create_task(session.get(url))
        await front_world.wait(source_asked, "the fetch begun")
        gone.cancel()  # hangs up with the request unanswered
        with contextlib.suppress(asyncio.CancelledError):
            await gone
    slow_link.flowing.set()
    await front_world.wait_stored("nf/early", [layer.digest], source=slow_link.host)
    await front_world.wait_spool_empty(front)
    assert source_requests(front_world.store) == {f"/v2/nf/early/blobs/{layer.digest}": 1}
