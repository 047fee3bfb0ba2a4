"""Misses: an image the edge registry lacks is fetched from its source and served byte for
byte, by tag or by digest, in every manifest flavour; its blobs then land in the edge
registry, and its manifest does not (the mirror puts manifests, after all their blobs)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from clusterregistry_sandbox.images import BuiltImage
from tests.integration.front.conftest import (
    ACCEPT_ALL,
    FrontWorld,
    assert_pulled,
    http_session,
    image_digests,
    pull,
    source_requests,
)
from tests.world.images import BuildImage, PushImage


def _one_get_each(world: FrontWorld, repository: str, image: BuiltImage,
                  references: list[str]) -> None:
    """The artifact store served each manifest reference and each blob exactly once."""
    gets = source_requests(world.store)
    expected = {f"/v2/{repository}/manifests/{ref}": 1 for ref in references}
    expected.update({f"/v2/{repository}/blobs/{d}": 1 for d in image_digests(image)})
    assert dict(gets) == expected


@pytest.mark.parametrize(("image_format", "platforms", "by_digest"), [
    ("oci", ["linux/amd64"], False),
    ("oci", ["linux/amd64"], True),
    ("oci", ["linux/amd64", "linux/arm64"], False),
    ("docker", ["linux/amd64"], False),
    ("docker", ["linux/amd64", "linux/arm64/v8"], True),
], ids=["oci-by-tag", "oci-by-digest", "oci-index", "docker-v2", "docker-list-by-digest"])
async def test_a_never_seen_image_is_pulled_through_the_front(
    front_world: FrontWorld, build_image: BuildImage, push_image: PushImage, tmp_path: Path,
    image_format: str, platforms: list[str], by_digest: bool,
) -> None:
    image = build_image("miss", image_format=image_format, platforms=platforms,
                        layer_sizes=[120_000, 40_000])
    await push_image(image, front_world.store, "nf/miss", tag="2.1")
    front = await front_world.start_front()
    reference = image.digest if by_digest else "2.1"

    pulled = await pull(front_world.ref("nf/miss", reference, front=front), tmp_path / "pulled")

    assert_pulled(image, pulled)
    # the index (or lone manifest) by the reference asked, each platform's manifest by digest
    references = [reference] + ([m.digest for m in image.manifests] if image.is_index else [])
    _one_get_each(front_world, "nf/miss", image, references)
    digests = image_digests(image)
    await front_world.wait_stored("nf/miss", digests)

    async def counted() -> bool:  # counted once its PUT has returned, just after the HEAD
        return front.metric("clusterregistry_front_stored_blobs_total") == len(digests)

    await front_world.wait(counted, "the stored blobs counted")
    # the manifests are the mirror's to put: none by tag, none by digest
    path = front_world.path("nf/miss")
    assert await front_world.edge.manifest(path, "2.1") is None
    for digest in {image.digest, *(m.digest for m in image.manifests)}:
        assert await front_world.edge.manifest(path, digest) is None
    assert front.requests("blob", "miss_streamed") == len(digests)
    assert front.requests("manifest", "miss_failed") == 0
    await front_world.wait_spool_empty(front)

    # a second pull: blobs from the edge registry now, the manifest from the front's memory
    assert_pulled(image, await pull(front_world.ref("nf/miss", reference, front=front),
                                    tmp_path / "again"))
    _one_get_each(front_world, "nf/miss", image, references)
    assert front.requests("blob", "hit") >= len(digests)


async def test_a_miss_answers_what_the_source_answers(
    front_world: FrontWorld, build_image: BuildImage, push_image: PushImage,
) -> None:
    """Headers and bytes of a miss, HEAD and GET, manifest and blob, as the store sends them."""
    image = build_image("exact", layer_sizes=[200_000])
    await push_image(image, front_world.store, "nf/exact", tag="1")
    front = await front_world.start_front()
    path = front_world.path("nf/exact")
    layer = image.manifests[0].layers[0]
    store = front_world.store
    expected: dict[str, tuple[bytes, dict[str, str]]] = {}
    async with store.session() as direct:
        for method in ("HEAD", "GET"):
            async with direct.request(method, "/v2/nf/exact/manifests/1",
                                      headers={"Accept": ACCEPT_ALL}) as response:
                assert response.status == 200
                expected[method] = (await response.read(), {
                    name: response.headers[name]
                    for name in ("Docker-Content-Digest", "Content-Type", "Content-Length")})
    before = source_requests(store)
    async with http_session() as session:
        for method in ("HEAD", "GET"):
            async with session.request(method, f"{front.url}/v2/{path}/manifests/1",
                                       headers={"Accept": ACCEPT_ALL}) as response:
                assert response.status == 200, await response.text()
                body = await response.read()
                assert (body, {name: response.headers[name] for name in expected[method][1]}
                        ) == expected[method], method
        assert body == image.read_blob(image.digest)
        assert json.loads(body)["layers"][0]["digest"] == layer.digest

        async with session.head(f"{front.url}/v2/{path}/blobs/{layer.digest}") as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == str(layer.size)
            assert response.headers["Docker-Content-Digest"] == layer.digest
        async with session.get(f"{front.url}/v2/{path}/blobs/{layer.digest}") as response:
            assert response.status == 200
            assert response.headers["Docker-Content-Digest"] == layer.digest
            assert response.headers["Content-Length"] == str(layer.size)
            assert await response.read() == image.read_blob(layer.digest)
    # one GET each: the HEADs were answered without fetching
    assert source_requests(store) - before == {"/v2/nf/exact/manifests/1": 1,
                                               f"/v2/nf/exact/blobs/{layer.digest}": 1}
    await front_world.wait_stored("nf/exact", [layer.digest])


async def test_a_range_of_a_blob_on_its_way(
    front_world: FrontWorld, build_image: BuildImage, push_image: PushImage,
) -> None:
    """A client resuming a download (Range) on a miss gets exactly the bytes it asked for."""
    image = build_image("ranged", layer_sizes=[400_000])
    await push_image(image, front_world.store, "nf/ranged", tag="1")
    front = await front_world.start_front()
    layer = image.manifests[0].layers[0]
    data = image.read_blob(layer.digest)
    url = f"{front.url}/v2/{front_world.path('nf/ranged')}/blobs/{layer.digest}"
    async with http_session() as session, session.get(
        url, headers={"Range": "bytes=1000-"}
    ) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
        assert await response.read() == data[1000:]
    assert source_requests(front_world.store)[f"/v2/nf/ranged/blobs/{layer.digest}"] == 1
    await front_world.wait_stored("nf/ranged", [layer.digest])


async def test_an_image_missing_at_the_source_is_manifest_unknown_naming_it(
    front_world: FrontWorld, build_image: BuildImage, push_image: PushImage,
) -> None:
    image = build_image("there", layer_sizes=[1000])
    await push_image(image, front_world.store, "nf/there", tag="1")
    front = await front_world.start_front()
    store = front_world.store.host
    async with http_session() as session:
        for repository, reference in (("nf/absent", "1"), ("nf/there", "2"),
                                      ("nf/there", "sha256:" + "1" * 64)):
            url = f"{front.url}/v2/{front_world.path(repository)}/manifests/{reference}"
            # asked twice: a retrying kubelet gets the same answer, as quickly (well within
            # the source timeout of 5 s: nothing waits for a fetch that is over)
            for _ in range(2):
                started = asyncio.get_running_loop().time()
                async with session.get(url, headers={"Accept": ACCEPT_ALL}) as response:
                    assert asyncio.get_running_loop().time() - started < 2.5
                    assert response.status == 404
                    assert response.content_type == "application/json"
                    error = (await response.json())["errors"][0]
                assert error["code"] == "MANIFEST_UNKNOWN"
                assert f"{store}/{repository}" in error["message"]
                assert reference in error["message"]
            async with session.head(url, headers={"Accept": ACCEPT_ALL}) as response:
                assert response.status == 404
        blob = f"sha256:{'2' * 64}"
        url = f"{front.url}/v2/{front_world.path('nf/there')}/blobs/{blob}"
        async with session.get(url) as response:
            assert response.status == 404
            error = (await response.json())["errors"][0]
        assert error["code"] == "BLOB_UNKNOWN"
        assert f"{store}/nf/there" in error["message"]
        async with session.head(url) as response:
            assert response.status == 404
    assert front.requests("manifest", "miss_failed") >= 6
