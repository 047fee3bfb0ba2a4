"""Hits: what the edge registry has is served through the front exactly as distribution serves
it (status, headers that clients rely on, bytes, Range), and the source is never asked."""

from __future__ import annotations

from pathlib import Path

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

# the headers a client acts on; the rest (Date, an ETag quoting the digest) may differ
_COMPARED = ("Docker-Content-Digest", "Content-Type", "Content-Length", "Content-Range",
             "Docker-Distribution-API-Version")


def _view(status: int, headers: object, body: bytes) -> tuple[int, dict[str, str | None], bytes]:
    assert hasattr(headers, "get")
    return status, {name: headers.get(name) for name in _COMPARED}, body


async def test_a_hit_is_answered_as_distribution_answers_it(
    front_world: FrontWorld, build_image: BuildImage, push_image: PushImage, tmp_path: Path,
) -> None:
    image: BuiltImage = build_image("hit", layer_sizes=[300_000, 50_000])
    await push_image(image, front_world.store, "nf/hit", tag="1.0")
    path = front_world.path("nf/hit")
    await push_image(image, front_world.edge, path, tag="1.0")  # the mirror's work, done
    before = source_requests(front_world.store), source_requests(front_world.store, "HEAD")
    front = await front_world.start_front()
    layer = image.manifests[0].layers[0]
    data = image.read_blob(layer.digest)
    requests: list[tuple[str, str, dict[str, str]]] = []
    for reference in ("1.0", image.digest):
        for method in ("GET", "HEAD"):
            requests.append((method, f"/v2/{path}/manifests/{reference}",
                             {"Accept": ACCEPT_ALL}))
    for method in ("GET", "HEAD"):
        requests.append((method, f"/v2/{path}/blobs/{layer.digest}", {}))
    requests += [
        ("GET", f"/v2/{path}/blobs/{layer.digest}", {"Range": "bytes=100-1099"}),
        ("GET", f"/v2/{path}/blobs/{layer.digest}", {"Range": f"bytes={len(data) - 10}-"}),
        ("GET", f"/v2/{path}/tags/list", {}),
        ("GET", "/v2/", {}),
    ]
    async with http_session() as session:
        for method, uri, headers in requests:
            async with session.request(method, front.url + uri, headers=headers) as response:
                through = _view(response.status, response.headers, await response.read())
            async with session.request(method, front_world.edge.url + uri,
                                       headers=headers) as response:
                direct = _view(response.status, response.headers, await response.read())
            assert through == direct, f"{method} {uri} {headers}"

        # and what distribution said is right: the bytes of the image, ranges cut as asked
        async with session.get(f"{front.url}/v2/{path}/blobs/{layer.digest}",
                               headers={"Range": "bytes=100-1099"}) as response:
            assert response.status == 206
            assert response.headers["Content-Range"] == f"bytes 100-1099/{len(data)}"
            assert await response.read() == data[100:1100]
        async with session.get(f"{front.url}/v2/{path}/manifests/1.0",
                               headers={"Accept": ACCEPT_ALL}) as response:
            assert response.status == 200
            assert response.headers["Docker-Content-Digest"] == image.digest
            assert response.headers["Content-Type"] == image.media_type
            assert await response.read() == image.read_blob(image.digest)

    # a real client pulls the whole image
    assert_pulled(image, await pull(front_world.ref("nf/hit", "1.0", front=front),
                                    tmp_path / "pulled"))
    # the source was never asked, not even whether it has something
    assert (source_requests(front_world.store),
            source_requests(front_world.store, "HEAD")) == before
    assert front.requests("blob", "hit") >= len(image_digests(image))
    assert front.requests("manifest", "miss_streamed") == 0
    assert front.requests("blob", "miss_streamed") == 0
    assert front.metric("clusterregistry_front_source_bytes_total") == 0
    assert front.metric("clusterregistry_front_served_bytes_total", result="hit") >= sum(
        blob.size for blob in image.blobs)


async def test_a_blob_the_registry_fails_to_read_is_served_from_the_source(
    front_world: FrontWorld, build_image: BuildImage, push_image: PushImage,
) -> None:
    """distribution answers 500 ("invalid checksum digest format") when it reads a blob's
    link file while an upload of that blob commits: the front's own store of a fetched
    blob races its clients' GETs so. Made to last here with an empty link file: the
    front must serve the blob as a miss rather than pass the 500 on to a kubelet."""
    image = build_image("torn", layer_sizes=[100_000])
    await push_image(image, front_world.store, "nf/torn", tag="1")
    path = front_world.path("nf/torn")
    await push_image(image, front_world.edge, path, tag="1")
    layer = image.manifests[0].layers[0]
    link = (front_world.edge.root_dir / "docker" / "registry" / "v2" / "repositories" / path
            / "_layers" / "sha256" / layer.digest.split(":", 1)[1] / "link")
    link.write_bytes(b"")
    front = await front_world.start_front()
    uri = f"/v2/{path}/blobs/{layer.digest}"
    async with http_session() as session:
        async with session.get(front_world.edge.url + uri) as response:
            assert response.status == 500  # what distribution says in the race
        async with session.get(front.url + uri) as response:
            assert response.status == 200
            assert response.headers["Docker-Content-Digest"] == layer.digest
            assert await response.read() == image.read_blob(layer.digest)
    assert source_requests(front_world.store)[f"/v2/nf/torn/blobs/{layer.digest}"] == 1
    assert front.requests("blob", "miss_streamed") == 1
