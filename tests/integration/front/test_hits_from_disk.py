"""Hits from distribution's volume (`front.storagePath`): answered as distribution answers
them, without distribution sending a byte, and only for blobs the repository links."""

from __future__ import annotations

from clusterregistry_sandbox.images import BuiltImage
from tests.integration.front.conftest import FrontWorld, http_session, source_requests
from tests.world.images import BuildImage, PushImage

_COMPARED = ("Docker-Content-Digest", "Content-Type", "Content-Length", "Content-Range",
             "Docker-Distribution-API-Version")


async def test_blob_hits_come_from_the_volume_as_distribution_would_send_them(
    front_world: FrontWorld, build_image: BuildImage, push_image: PushImage,
) -> None:
    image: BuiltImage = build_image("disk", layer_sizes=[2_000_000, 70_000])
    other: BuiltImage = build_image("other", layer_sizes=[40_000])
    await push_image(image, front_world.store, "nf/disk", tag="1.0")
    path = front_world.path("nf/disk")
    await push_image(image, front_world.edge, path, tag="1.0")
    await push_image(other, front_world.edge, front_world.path("nf/other"), tag="1.0")
    front = await front_world.start_front(front={"storagePath": str(front_world.edge.root_dir)})
    layer = image.manifests[0].layers[0]
    data = image.read_blob(layer.digest)
    cases = [("GET", {}), ("HEAD", {}), ("GET", {"Range": "bytes=100-1099"}),
             ("GET", {"Range": f"bytes={len(data) - 10}-"})]
    edge_gets_before = source_requests(front_world.edge)
    async with http_session() as session:
        for method, headers in cases:
            uri = f"/v2/{path}/blobs/{layer.digest}"
            async with session.request(method, front.url + uri, headers=headers) as response:
                through = (response.status, {h: response.headers.get(h) for h in _COMPARED},
                           await response.read())
            async with session.request(method, front_world.edge.url + uri,
                                       headers=headers) as response:
                direct = (response.status, {h: response.headers.get(h) for h in _COMPARED},
                          await response.read())
            assert through == direct, f"{method} {headers}"
        async with session.get(f"{front.url}/v2/{path}/blobs/{layer.digest}") as response:
            assert await response.read() == data
        edge_gets_after = source_requests(front_world.edge)

        # a blob another repository holds is not this repository's: distribution says 404,
        # and so does the front (it asks distribution, which the volume cannot overrule)
        foreign = other.manifests[0].layers[0].digest
        async with session.get(f"{front.url}/v2/{path}/blobs/{foreign}") as response:
            through_status = response.status
        async with session.get(f"{front_world.edge.url}/v2/{path}/blobs/{foreign}") as response:
            assert through_status == response.status == 404

    # the front's blob GETs never reached distribution: the volume served them
    front_gets = [uri for uri in edge_gets_after - edge_gets_before
                  if uri.endswith(layer.digest)]
    # the only GETs distribution served for the layer are the test's direct ones (3)
    assert (edge_gets_after - edge_gets_before)[f"/v2/{path}/blobs/{layer.digest}"] == 3, \
        front_gets
    assert front.requests("blob", "hit") == 5
