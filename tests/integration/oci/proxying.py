"""A tiny HTTP proxy in front of a registry, for tests: counts what passes, can corrupt blobs.

It forwards every request as is (Authorization included) to the upstream
registry, over TLS with the registry's CA when it has one, and rewrites the
upstream's Location headers so upload sessions keep going through it.
"""

from __future__ import annotations

import collections
import re
import ssl
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from clusterregistry_sandbox.registries import Registry
from clusterregistry_sandbox.supervising import free_port

_BLOB_GET = re.compile(r"^/v2/.+/blobs/sha256:[0-9a-f]{64}$")
_HOP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class RegistryProxy:
    """`corrupt_blobs`: flip one byte in the middle of every blob body served (GET).
    `chunked_blobs`: serve blob bodies with chunked transfer-encoding (no Content-Length, as
    some registries behind proxies do), in several chunks; `extra_blob_bytes`: append these
    to every blob body (only a chunked body can carry them: a length would give them away).
    `midway`: awaited once, when half of the first blob body has been streamed: to kill
    the upstream (the client's connection is then dropped mid-body), or to stall."""

    def __init__(self, upstream: Registry, *, corrupt_blobs: bool = False,
                 chunked_blobs: bool = False, extra_blob_bytes: bytes = b"",
                 midway: Callable[[], Awaitable[None]] | None = None) -> None:
        self.upstream = upstream
        self.corrupt_blobs = corrupt_blobs
        self.chunked_blobs = chunked_blobs
        self.extra_blob_bytes = extra_blob_bytes
        self.midway = midway
        self.port = free_port()
        # digest -> completed uploads (PUT ...?digest=), and mounts that linked a blob
        self.uploads: collections.Counter[str] = collections.Counter()
        self.mounts: collections.Counter[str] = collections.Counter()
        self.manifest_puts: collections.Counter[str] = collections.Counter()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        context: ssl.SSLContext | bool = self.upstream.ssl_context() or False
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context), auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        body = await request.read()
        url = f"{self.upstream.url}{request.rel_url}"
        try:
            async with self._session.request(request.method, url, headers=headers, data=body,
                                             allow_redirects=False) as upstream:
                out = {k: v for k, v in upstream.headers.items()
                       if k.lower() not in _HOP_HEADERS}
                if "Location" in out:
                    out["Location"] = out["Location"].replace(self.upstream.url, "")
                blob = (request.method == "GET" and upstream.status == 200
                        and _BLOB_GET.match(request.path) is not None)
                if blob and self.midway is not None:
                    return await self._stream_midway(request, upstream, out)
                data = await upstream.read()
                self._count(request, upstream.status)
                if self.corrupt_blobs and blob and data:
                    middle = len(data) // 2
                    data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
                if blob and self.chunked_blobs:
                    return await self._stream_chunked(request, out, data + self.extra_blob_bytes)
                return web.Response(status=upstream.status, headers=out, body=data)
        except aiohttp.ClientConnectionError:
            return web.Response(status=502, text="upstream unreachable")

    @staticmethod
    async def _stream_chunked(request: web.Request, headers: dict[str, str],
                              data: bytes) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        step = max(1, len(data) // 5)
        for start in range(0, len(data), step):
            await response.write(data[start:start + step])
        await response.write_eof()
        return response

    async def _stream_midway(self, request: web.Request, upstream: aiohttp.ClientResponse,
                             headers: dict[str, str]) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, headers=headers)
        response.content_length = upstream.content_length
        await response.prepare(request)
        sent, half = 0, (upstream.content_length or 0) // 2
        async for piece in upstream.content.iter_chunked(16384):
            await response.write(piece)
            sent += len(piece)
            # only truly mid-body: a small blob sent whole in one piece is left alone
            if self.midway is not None and half <= sent < (upstream.content_length or 0):
                hook, self.midway = self.midway, None
                await hook()
                if not self.upstream.running:
                    # the upstream is gone: drop the client's connection mid-body
                    assert request.transport is not None
                    request.transport.close()
                    return response
        await response.write_eof()
        return response

    def _count(self, request: web.Request, status: int) -> None:
        query = request.rel_url.query
        if request.method == "PUT" and "/blobs/uploads/" in request.path and status == 201:
            self.uploads[query.get("digest", "")] += 1
        elif request.method == "POST" and "mount" in query and status == 201:
            self.mounts[query["mount"]] += 1
        elif request.method == "PUT" and "/manifests/" in request.path and status == 201:
            self.manifest_puts[request.path] += 1
