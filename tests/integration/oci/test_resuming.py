"""Copies over a link that drops, and a link that is shared: resume and pacing, against real
distribution registries behind the TCP fault proxy (tests/world/faults.py), and two tiny
servers for what distribution does not do (ignore Range; keep a cut request's bytes)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from clusterregistry.oci.copying import Copier, CopyOptions
from clusterregistry.oci.pacing import Pacer
from clusterregistry.oci.registries import RegistryClient, Retry, ssl_context
from clusterregistry_sandbox.images import BuiltImage
from clusterregistry_sandbox.registries import Registry
from clusterregistry_sandbox.supervising import free_port, wait_for
from tests.integration.oci.conftest import client_for, copy_to_layout
from tests.world.faults import FaultProxy, Faults, StartProxy
from tests.world.images import BuildImage, PushImage

pytestmark = pytest.mark.integration

MiB = 1 << 20
FAST = Retry(attempts=4, base_delay=0.01, max_delay=0.1)


def through(proxy: FaultProxy, registry: Registry, *, actions: str = "pull") -> RegistryClient:
    """A client of `registry` reached through `proxy` (TLS and credentials pass through)."""
    credentials = None
    if registry.credentials:
        from clusterregistry.oci.authenticating import Credentials  # noqa: PLC0415
        credentials = Credentials(*registry.credentials)
    return RegistryClient(
        proxy.host, credentials=credentials, plain_http=not registry.tls,
        ssl_ctx=ssl_context(ca_file=str(registry.ca_path)) if registry.tls else None,
        actions=actions, retry=FAST)


async def read_back(registry: Registry, image: BuiltImage, tmp_path: Path) -> None:
    """skopeo verifies and stores every blob; they are the source's bytes."""
    layout = tmp_path / "read-back"
    await copy_to_layout(registry, f"{registry.host}/mirror/big:1", layout)
    for blob in image.blobs:
        assert (layout / "blobs" / "sha256" / blob.digest[7:]).read_bytes() == \
            image.read_blob(blob.digest)


@pytest.fixture
async def big_image(secure_registry: Registry, build_image: BuildImage,
                    push_image: PushImage) -> BuiltImage:
    image = build_image("nf/big", tag="1", layer_sizes=(16 * MiB,) * 4)
    await push_image(image, secure_registry, "nf/big")
    return image


async def test_a_source_cut_every_4_mib_resumes_with_range_byte_exact(
    secure_registry: Registry, registry: Registry, big_image: BuiltImage,
    fault_proxy: StartProxy, tmp_path: Path,
) -> None:
    image_bytes = sum(blob.size for blob in big_image.blobs) + big_image.size
    proxy = await fault_proxy(secure_registry.port, Faults(cut_after=4 * MiB))
    async with through(proxy, secure_registry) as src, \
            client_for(registry, actions="pull,push") as dst:
        report = await Copier().copy(src, "nf/big", "1", dst, "mirror/big", tag="1")
    assert report.digest == big_image.digest
    assert report.bytes_copied == sum(blob.size for blob in big_image.blobs)
    assert report.resumed.get("download", 0) >= 12 and proxy.cuts >= 12
    ratio = proxy.bytes_down / image_bytes
    print(f"source bytes through the cutting proxy / image bytes: {ratio:.4f} "
          f"({proxy.cuts} cuts)")
    assert ratio <= 1.1
    await read_back(registry, big_image, tmp_path)


async def test_a_destination_cut_loses_distributions_session_and_the_blob_goes_again(
    secure_registry: Registry, registry: Registry, big_image: BuiltImage,
    fault_proxy: StartProxy, tmp_path: Path,
) -> None:
    """distribution cancels an upload whose request was cut mid-body (its `_state` no longer
    matches), so the session's answer is 404 and a new session gets the blob from byte 0."""
    proxy = await fault_proxy(registry.port, Faults(cut_after=6 * MiB, direction="up"))
    options = CopyOptions(chunked_threshold=4 * MiB, chunk_size=4 * MiB)

    async def cut() -> bool:
        return proxy.cuts >= 1

    async def heal() -> None:  # the link drops once per connection open now, then holds
        await wait_for(cut, timeout=60, interval=0.005, description="a destination cut")
        proxy.faults = Faults()

    healing = asyncio.create_task(heal())
    try:
        async with client_for(secure_registry, retry=FAST) as src, \
                through(proxy, registry, actions="pull,push") as dst:
            report = await Copier(options).copy(src, "nf/big", "1", dst, "mirror/big", tag="1")
    finally:
        healing.cancel()
        await asyncio.gather(healing, return_exceptions=True)
    assert report.digest == big_image.digest
    assert report.resumed.get("upload_restarted", 0) >= 1
    assert report.bytes_copied == sum(blob.size for blob in big_image.blobs)
    await read_back(registry, big_image, tmp_path)


class SpecDestination:
    """A destination that keeps what a cut PATCH delivered and says so (GET: 204, Range),
    as the distribution spec describes; manifests and finished blobs in memory."""

    def __init__(self) -> None:
        self.port = free_port()
        self.uploads: dict[str, bytearray] = {}
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, bytes] = {}
        self.status_asked = 0
        self._runner: web.AppRunner | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _location(self, repo: str, uid: str) -> str:
        return f"/v2/{repo}/blobs/uploads/{uid}"

    async def start(self) -> None:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/v2/{repo:.+}/blobs/uploads/{uid:.*}", self._upload)
        app.router.add_route("*", "/v2/{repo:.+}/manifests/{ref}", self._manifest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        repo, uid = request.match_info["repo"], request.match_info["uid"]
        if request.method == "POST":
            uid = f"u{len(self.uploads)}"
            self.uploads[uid] = bytearray()
            return web.Response(status=202, headers={"Location": self._location(repo, uid)})
        data = self.uploads.get(uid)
        if data is None:
            return web.Response(status=404)
        if request.method == "GET":
            self.status_asked += 1
            return web.Response(status=204, headers={
                "Location": self._location(repo, uid), "Range": f"0-{max(len(data) - 1, 0)}"})
        if request.method == "DELETE":
            del self.uploads[uid]
            return web.Response(status=204)
        start = int(request.headers.get("Content-Range", "0-0").split("-")[0] or 0)
        if request.method == "PATCH" and start != len(data):
            return web.Response(status=416)
        try:
            async for piece in request.content.iter_any():
                data += piece  # a cut request keeps what arrived
        except (ConnectionError, asyncio.CancelledError):
            raise
        if request.method == "PATCH":
            return web.Response(status=202, headers={
                "Location": self._location(repo, uid), "Range": f"0-{len(data) - 1}"})
        digest = request.query["digest"]
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            return web.json_response({"errors": [{"code": "DIGEST_INVALID"}]}, status=400)
        self.blobs[digest] = bytes(data)
        del self.uploads[uid]
        return web.Response(status=201)

    async def _manifest(self, request: web.Request) -> web.StreamResponse:
        ref = request.match_info["ref"]
        if request.method == "PUT":
            data = await request.read()
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            self.manifests[ref] = self.manifests[digest] = data
            return web.Response(status=201, headers={"Docker-Content-Digest": digest})
        return web.Response(status=404)


@pytest.fixture
async def spec_destination() -> AsyncIterator[SpecDestination]:
    destination = SpecDestination()
    await destination.start()
    try:
        yield destination
    finally:
        await destination.stop()


async def test_a_paced_upload_cut_while_its_body_waits_loses_no_byte(
    secure_registry: Registry, big_image: BuiltImage, spec_destination: SpecDestination,
    fault_proxy: StartProxy,
) -> None:
    """aiohttp cancels the body of a request whose connection is gone, wherever the body
    waits. Paced, the body waits in the pacer almost all the time, with a piece already
    received from the source: that piece must neither be lost nor count as the body's own
    failure (a CancelledError the copy would raise), and the upload continues byte-exact."""
    source_proxy = await fault_proxy(secure_registry.port)
    proxy = await fault_proxy(spec_destination.port, Faults(cut_after=3 * MiB, direction="up"))
    options = CopyOptions(chunked_threshold=4 * MiB, chunk_size=4 * MiB)
    waits: list[float] = []
    copier = Copier(options, pacer=Pacer(24 * MiB, on_wait=waits.append))
    async with through(source_proxy, secure_registry) as src, \
            RegistryClient(proxy.host, plain_http=True, actions="pull,push", retry=FAST) as dst:
        report = await copier.copy(src, "nf/big", "1", dst, "mirror/big", tag="1")
    assert waits and proxy.cuts >= 8
    assert report.resumed.get("upload", 0) >= 8
    for blob in big_image.blobs:
        assert spec_destination.blobs[blob.digest] == big_image.read_blob(blob.digest)
    assert spec_destination.manifests["1"] == big_image.read_blob(big_image.digest)


async def test_a_destination_that_keeps_cut_chunks_is_continued_from_its_offset(
    secure_registry: Registry, big_image: BuiltImage, spec_destination: SpecDestination,
    fault_proxy: StartProxy,
) -> None:
    source_proxy = await fault_proxy(secure_registry.port)
    proxy = await fault_proxy(spec_destination.port, Faults(cut_after=3 * MiB, direction="up"))
    options = CopyOptions(chunked_threshold=4 * MiB, chunk_size=4 * MiB)
    async with through(source_proxy, secure_registry) as src, \
            RegistryClient(proxy.host, plain_http=True, actions="pull,push", retry=FAST) as dst:
        report = await Copier(options).copy(src, "nf/big", "1", dst, "mirror/big", tag="1")
    assert report.resumed.get("upload", 0) >= 8 and spec_destination.status_asked >= 8
    assert report.resumed.get("upload_restarted", 0) == 0
    for blob in big_image.blobs:
        assert spec_destination.blobs[blob.digest] == big_image.read_blob(blob.digest)
    assert spec_destination.manifests["1"] == big_image.read_blob(big_image.digest)
    layers = sum(blob.size for blob in big_image.blobs)
    # what the session lacked after a cut was sent again from memory, not read again
    ratio = source_proxy.bytes_down / layers
    print(f"source bytes / image bytes with a destination cut every 3 MiB: {ratio:.3f} "
          f"({proxy.cuts} cuts)")
    assert ratio <= 1.1


class BlobServer:
    """A source registry serving one image; the first GET of each blob breaks halfway.
    `ranges=False`: every blob answer is a 200 with the whole blob (Range ignored);
    `ranges=True`: blobs redirect to a storage path that honours Range (a 206)."""

    def __init__(self, image: BuiltImage, *, ranges: bool) -> None:
        self.image = image
        self.ranges = ranges
        self.port = free_port()
        self.gets: dict[str, int] = {}
        self.served = 0
        self._runner: web.AppRunner | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v2/{repo:.+}/manifests/{ref}", self._manifest)
        app.router.add_get("/v2/{repo:.+}/blobs/{digest}", self._blob)
        app.router.add_get("/storage/{digest}", self._storage)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _manifest(self, request: web.Request) -> web.StreamResponse:
        manifest = self.image.manifests[0]
        return web.Response(body=self.image.read_blob(self.image.digest), headers={
            "Content-Type": manifest.media_type, "Docker-Content-Digest": self.image.digest})

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        if self.ranges:
            raise web.HTTPTemporaryRedirect(f"/storage/{digest}")
        return await self._send(request, digest, self.image.read_blob(digest))

    async def _storage(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        data = self.image.read_blob(digest)
        header = request.headers.get("Range")
        if header is None:
            return await self._send(request, digest, data)
        start = int(header.removeprefix("bytes=").split("-")[0])
        self.served += len(data) - start
        return web.Response(status=206, body=data[start:], headers={
            "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})

    async def _send(self, request: web.Request, digest: str, data: bytes) -> web.StreamResponse:
        self.gets[digest] = self.gets.get(digest, 0) + 1
        response = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await response.prepare(request)
        if self.gets[digest] == 1 and len(data) > MiB:
            await response.write(data[:len(data) // 2])
            self.served += len(data) // 2
            assert request.transport is not None
            request.transport.abort()  # the link drops halfway
            return response
        await response.write(data)
        self.served += len(data)
        return response


@pytest.mark.parametrize("ranges", [False, True], ids=["ignores-range", "redirect-to-ranges"])
async def test_a_source_that_ignores_range_is_read_again_and_still_verified(
    registry: Registry, build_image: BuildImage, tmp_path: Path, ranges: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    image = build_image("nf/odd", tag="1", layer_sizes=(4 * MiB,))
    server = BlobServer(image, ranges=ranges)
    await server.start()
    try:
        async with RegistryClient(server.host, plain_http=True, retry=FAST) as src, \
                client_for(registry, actions="pull,push") as dst:
            report = await Copier().copy(src, "nf/odd", "1", dst, "mirror/big", tag="1")
    finally:
        await server.stop()
    layers = sum(blob.size for blob in image.blobs)
    layer = max(blob.size for blob in image.blobs)
    if ranges:
        assert report.resumed == {"download": 1}
        assert server.served == layers  # not one byte twice
    else:
        assert report.resumed == {"download_restarted": 1}
        assert server.served == layers + layer // 2  # the first half, twice
        assert "ignores Range requests" in caplog.text
    await read_back(registry, image, tmp_path)


async def test_the_rate_limit_holds_at_the_proxy(
    secure_registry: Registry, registry: Registry, build_image: BuildImage,
    push_image: PushImage, fault_proxy: StartProxy,
) -> None:
    image = build_image("nf/paced", tag="1", layer_sizes=(4 * MiB,) * 4)
    await push_image(image, secure_registry, "nf/paced")
    limit = 8 * MiB
    proxy = await fault_proxy(secure_registry.port)
    waits: list[float] = []
    async with through(proxy, secure_registry) as src, \
            client_for(registry, actions="pull,push") as dst:
        copier = Copier(pacer=Pacer(limit, on_wait=waits.append))
        started = time.monotonic()
        await copier.copy(src, "nf/paced", "1", dst, "mirror/paced", tag="1")
        elapsed = time.monotonic() - started
    observed = proxy.bytes_down / elapsed
    print(f"rate limit {limit} B/s, observed at the proxy {observed:.0f} B/s "
          f"(error {(observed - limit) / limit:+.3f})")
    # load can only slow a copy down: the limit is what must never be exceeded
    assert observed <= limit * 1.1
    assert sum(waits) > 0


