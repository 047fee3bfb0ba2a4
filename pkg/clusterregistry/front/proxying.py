"""The front's HTTP side: every registry request, answered as distribution would.

A request goes to the registry behind the front unchanged (headers, body,
status, streamed both ways), with three exceptions:

- a GET or HEAD of a manifest or blob the registry answers 404 for, under a
  local name that maps to an allowed source: a miss, served by `fetching`;
- a write (PUT, POST, PATCH, DELETE) in a read-only window: 503 with a
  Retry-After (`windows`);
- `/_front/...`: the peer endpoints, where another replica streams a fetch this
  replica holds.

The client's Host header is forwarded, so the Location of an upload session
names the front, where the client must come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping
from pathlib import Path

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from clusterregistry import subjects
from clusterregistry.errors import (
    AuthenticationError,
    BlobUnknownError,
    ClusterRegistryError,
    DigestMismatchError,
    ManifestUnknownError,
    TimedOutError,
)
from clusterregistry.front import answers, layouts, paths
from clusterregistry.front.fetching import (
    PEER_PREFIX,
    BlobFlight,
    Fetcher,
    Manifest,
    Peer,
    Stored,
    source_text,
)
from clusterregistry.front.metrics import FrontMetrics
from clusterregistry.front.spools import READ_CHUNK, Spool, SpoolFailedError
from clusterregistry.front.windows import Window
from clusterregistry.references import Reference
from clusterregistry.sources import SourceRules

log = logging.getLogger(__name__)

WRITES = frozenset({"PUT", "POST", "PATCH", "DELETE"})
# RFC 9110 hop-by-hop fields, and what aiohttp sets itself
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate",
                         "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"})
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def _forwarded(headers: Mapping[str, str]) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in _HOP_BY_HOP)


class Front:
    """The aiohttp application of one front replica."""

    def __init__(self, *, upstream: str, local_registry: str, rules: SourceRules,
                 fetcher: Fetcher, window: Window, metrics: FrontMetrics,
                 session: aiohttp.ClientSession, storage: Path | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.storage = storage  # distribution's volume, read-only, when the front mounts it
        self.local_registry = local_registry
        self.rules = rules
        self.fetcher = fetcher
        self.window = window
        self.metrics = metrics
        self.session = session
        self.app = web.Application(client_max_size=0)
        self.app.router.add_route("GET", PEER_PREFIX + "/blobs/{digest}", self._peer_blob)
        self.app.router.add_route("GET", PEER_PREFIX + "/manifests/{key}", self._peer_manifest)
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    # -- every request ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        target = paths.parse(request.path)
        kind = target.kind if target.kind in ("manifest", "blob") else "other"
        if request.method in WRITES:
            if self.window.read_only:
                self.metrics.read_only_refusals.inc()
                self.metrics.answered(kind, "refused")
                return answers.error(
                    503, answers.UNAVAILABLE,
                    "the registry is read-only while garbage collection sweeps; reads "
                    f"continue, retry the write in {self.window.retry_after}s",
                    method=request.method,
                    headers={"Retry-After": str(self.window.retry_after)})
            with self.window.writing():
                return await self._forward(request, kind=kind)
        if (self.storage is not None and target.kind == "blob" and target.by_digest
                and request.method in ("GET", "HEAD")):
            # off the loop: the volume may be a network filesystem (ReadWriteMany)
            data = await asyncio.to_thread(layouts.blob_data, self.storage, name=target.name,
                                           digest=target.reference)
            if data is not None:
                return self._from_disk(request, data, digest=target.reference)
        source = None
        if request.method in ("GET", "HEAD"):
            source = paths.source_of(target, local_registry=self.local_registry,
                                     rules=self.rules)
        if source is None:
            return await self._forward(request, kind=kind)
        if (target.kind == "manifest" and not target.by_digest
                and request.headers.get(subjects.FRONT_SOURCE_VIEW_HEADER)):
            return await self._miss_manifest(request, source)
        answered = await self._try_forward(request, kind=kind, miss_on_404=True)
        if answered is not None:
            return answered
        if target.kind == "manifest":
            return await self._miss_manifest(request, source)
        return await self._miss_blob(request, source, name=target.name,
                                     digest=target.reference)

    def _from_disk(self, request: web.Request, data: Path, *,
                   digest: str) -> web.StreamResponse:
        """A hit from distribution's volume: sendfile, Range and HEAD by aiohttp's FileResponse."""
        self.metrics.answered("blob", "hit")
        if request.method == "GET":
            size = data.stat().st_size  # the link was just read: its inode is cached
            wanted = _RANGE.match(request.headers.get("Range", ""))
            if wanted is not None:
                end = min(int(wanted[2]) + 1 if wanted[2] else size, size)
                size = max(0, end - int(wanted[1]))
            self.metrics.served_bytes.labels("hit").inc(size)
        return web.FileResponse(data, chunk_size=READ_CHUNK, headers={
            "Docker-Content-Digest": digest, "Content-Type": "application/octet-stream",
            "Docker-Distribution-API-Version": "registry/2.0",
            "Cache-Control": "max-age=31536000", "ETag": f'"{digest}"'})

    # -- to the registry ---------------------------------------------------------------------------

    async def _forward(self, request: web.Request, *, kind: str) -> web.StreamResponse:
        answered = await self._try_forward(request, kind=kind)
        assert answered is not None
        return answered

    async def _try_forward(self, request: web.Request, *, kind: str,
                           miss_on_404: bool = False) -> web.StreamResponse | None:
        """Proxy the request; with `miss_on_404`, None instead of a 404 (a miss) or a 5xx.

        A 5xx is a miss too: distribution answers 500 ("invalid checksum digest format")
        to a GET that reads a blob's link file while an upload of that blob commits, which
        the front's own store of a fetched blob does while its clients still pull; and a
        registry that fails is no reason to fail a pull the source can serve."""
        headers = _forwarded(request.headers)
        data = request.content if request.body_exists else None
        try:
            response = await self.session.request(
                request.method, self.upstream + request.rel_url.raw_path_qs, headers=headers,
                data=data, allow_redirects=False)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.metrics.answered(kind, "passed")
            log.warning("the registry behind the front did not answer: %s", exc)
            return answers.error(503, answers.UNAVAILABLE,
                                 f"the registry is not reachable: {type(exc).__name__}",
                                 method=request.method, headers={"Retry-After": "5"})
        async with response:
            if miss_on_404 and (response.status == 404 or response.status >= 500):
                if response.status != 404:
                    log.info("the registry answered %s %s with %d: serving it as a miss",
                             request.method, request.path, response.status)
                return None
            hit = request.method in ("GET", "HEAD") and kind != "other" and (
                response.status in (200, 206, 307))
            result = "hit" if hit else "passed"
            self.metrics.answered(kind, result)
            out = web.StreamResponse(status=response.status, reason=response.reason,
                                     headers=_forwarded(response.headers))
            if "Content-Length" in response.headers:
                out.content_length = int(response.headers["Content-Length"])
            await out.prepare(request)
            if request.method != "HEAD":
                served = self.metrics.served_bytes.labels("hit") if hit else None
                async for chunk in response.content.iter_chunked(READ_CHUNK):
                    await out.write(chunk)
                    if served is not None:
                        served.inc(len(chunk))
            await out.write_eof()
            return out

    # -- misses --------------------------------------------------------------------------------

    async def _miss_manifest(self, request: web.Request, source: Reference,
                             *, peer: bool = False) -> web.StreamResponse:
        try:
            manifest, joined = await self.fetcher.manifest(source, from_peer=peer)
        except ClusterRegistryError as exc:
            self.metrics.answered("manifest", "miss_failed")
            return self._failed(request, exc, source, kind="manifest")
        result = "joined" if joined else "miss_streamed"
        self.metrics.answered("manifest", result)
        return await self._send_manifest(request, manifest, result)

    async def _send_manifest(self, request: web.Request, manifest: Manifest,
                             result: str) -> web.StreamResponse:
        headers = {"Docker-Content-Digest": manifest.digest,
                   "Docker-Distribution-API-Version": "registry/2.0",
                   "Content-Type": manifest.media_type}
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(manifest.data))
            return web.Response(status=200, headers=headers)
        self.metrics.served_bytes.labels(result).inc(len(manifest.data))
        return web.Response(status=200, body=manifest.data, headers=headers)

    async def _miss_blob(self, request: web.Request, source: Reference, *, name: str,
                         digest: str) -> web.StreamResponse:
        if request.method == "HEAD":
            return await self._head_blob(request, source, digest=digest)
        # the mirror's background copy shares the link (mirror.maxBytesPerSecond); anyone
        # else (a kubelet) is a pod waiting, and lifts the pacing of a fetch it joins
        background = bool(request.headers.get(subjects.FRONT_SOURCE_VIEW_HEADER))
        outcome = await self.fetcher.blob(source, name=name, digest=digest,
                                          background=background)
        if isinstance(outcome, Stored):
            # another replica stored it since the registry said 404: ask again, and fetch
            # alone if the registry still lacks it (swept, or the store failed)
            answered = await self._try_forward(request, kind="blob", miss_on_404=True)
            if answered is not None:
                return answered
            outcome = await self.fetcher.blob(source, name=name, digest=digest,
                                              from_peer=True, background=background)
        if isinstance(outcome, Peer):
            answered = await self._from_peer(request, outcome, digest)
            if answered is None:
                # the peer's flight may have just ended with the blob stored: the registry
                # first, the source only if the registry still lacks it
                answered = await self._try_forward(request, kind="blob", miss_on_404=True)
            if answered is not None:
                return answered
            outcome = await self.fetcher.blob(source, name=name, digest=digest,
                                              from_peer=True, background=background)
        assert isinstance(outcome, BlobFlight)
        return await self._from_flight(request, outcome, source)

    async def _from_flight(self, request: web.Request, flight: BlobFlight,
                           source: Reference) -> web.StreamResponse:
        joined = flight.clients > 0
        flight.clients += 1
        await flight.ready.wait()
        if flight.failure is not None:
            self.metrics.answered("blob", "miss_failed")
            return self._failed(request, flight.failure, source, kind="blob")
        spool = flight.spool
        assert spool is not None
        try:
            fd = spool.open_reader()
        except FileNotFoundError:
            # stored and cleaned up while we waited: the registry has it now
            return await self._forward(request, kind="blob")
        result = "joined" if joined else "miss_streamed"
        return await self._stream_spool(request, spool, fd, digest=flight.digest,
                                        result=result)

    async def _stream_spool(self, request: web.Request, spool: Spool, fd: int, *,
                            digest: str, result: str) -> web.StreamResponse:
        """Serve a spool (from the reader `fd`, which this closes) as the blob's GET would."""
        start, end = 0, None
        out = web.StreamResponse(status=200)
        out.headers["Docker-Content-Digest"] = digest
        out.headers["Docker-Distribution-API-Version"] = "registry/2.0"
        out.content_type = "application/octet-stream"
        wanted = _RANGE.match(request.headers.get("Range", ""))
        if spool.size >= 0:
            if wanted is not None:
                start = int(wanted[1])
                end = min(int(wanted[2]) + 1 if wanted[2] else spool.size, spool.size)
                if start >= end:
                    spool.close_reader(fd)
                    return web.Response(status=416, headers={
                        "Content-Range": f"bytes */{spool.size}"})
                out.set_status(206)
                out.headers["Content-Range"] = f"bytes {start}-{end - 1}/{spool.size}"
            out.content_length = (spool.size if end is None else end) - start
        self.metrics.answered("blob", result)
        served = self.metrics.served_bytes.labels(result)
        try:
            await out.prepare(request)
        except BaseException:
            # the client hung up while the source had not answered yet: closing a reader
            # generator that never started would not run its `finally`, so the descriptor
            # would stay open, the spool counted as read, and never be deleted
            spool.close_reader(fd)
            raise
        reader = spool.read(fd, start=start, end=end)
        async with contextlib.aclosing(reader):
            try:
                async for chunk in reader:
                    await out.write(chunk)
                    served.inc(len(chunk))
            except SpoolFailedError as exc:
                # the headers are gone: cutting the connection is how a client learns it
                log.warning("cutting the response of %s: %s", digest, exc)
                if request.transport is not None:
                    request.transport.close()
                return out
        await out.write_eof()
        return out

    async def _from_peer(self, request: web.Request, peer: Peer,
                         digest: str) -> web.StreamResponse | None:
        """Stream another replica's fetch; None when the peer cannot serve it."""
        url = f"{peer.url}{PEER_PREFIX}/blobs/{digest}"
        headers = {subjects.FRONT_PEER_HEADER: "1"}
        if request.headers.get(subjects.FRONT_SOURCE_VIEW_HEADER):
            headers[subjects.FRONT_SOURCE_VIEW_HEADER] = "1"  # so the holder keeps pacing
        if "Range" in request.headers:
            headers["Range"] = request.headers["Range"]
        try:
            response = await self.session.get(url, headers=headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("peer %s cannot serve %s (%s): fetching it here", peer.holder, digest,
                     type(exc).__name__)
            return None
        async with response:
            if response.status not in (200, 206):
                return None
            self.metrics.answered("blob", "joined")
            out = web.StreamResponse(status=response.status,
                                     headers=_forwarded(response.headers))
            if "Content-Length" in response.headers:
                out.content_length = int(response.headers["Content-Length"])
            await out.prepare(request)
            served = self.metrics.served_bytes.labels("joined")
            try:
                async for chunk in response.content.iter_chunked(READ_CHUNK):
                    await out.write(chunk)
                    served.inc(len(chunk))
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("peer %s broke off %s: %s", peer.holder, digest, exc)
                if request.transport is not None:
                    request.transport.close()
                return out
            await out.write_eof()
            return out

    async def _head_blob(self, request: web.Request, source: Reference, *,
                         digest: str) -> web.StreamResponse:
        flight = self.fetcher.blobs.get(digest)
        size: int | None
        if flight is not None and flight.ready.is_set() and flight.spool is not None:
            size = flight.spool.size
        else:
            client = self.fetcher.clients.source(source.domain)
            timeout = self.fetcher.timeout
            try:
                # bounded like every source request: the client's own read timeout is per
                # attempt, and it retries, so a silent source would hold a HEAD for twice
                # sourceTimeoutSeconds and then answer 502 rather than 504
                try:
                    async with asyncio.timeout(timeout):
                        size = await client.head_blob(source.path, digest)
                except TimeoutError:
                    raise TimedOutError(
                        f"the source {source.domain} did not answer within {timeout:g}s "
                        f"for head blob {source_text(source)}@{digest}") from None
            except ClusterRegistryError as exc:
                self.metrics.answered("blob", "miss_failed")
                return self._failed(request, exc, source, kind="blob")
        if size is None:
            self.metrics.answered("blob", "miss_failed")
            return self._failed(request, BlobUnknownError("blob unknown at the source"),
                                source, kind="blob")
        self.metrics.answered("blob", "miss_streamed")
        headers = {"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream",
                   "Docker-Distribution-API-Version": "registry/2.0"}
        if size >= 0:
            headers["Content-Length"] = str(size)
        return web.Response(status=200, headers=headers)

    def _failed(self, request: web.Request, exc: ClusterRegistryError, source: Reference, *,
                kind: str) -> web.Response:
        where = source_text(source)
        method = request.method
        if isinstance(exc, ManifestUnknownError):
            return answers.error(404, answers.MANIFEST_UNKNOWN,
                                 f"manifest unknown at the source {where}: "
                                 f"{source.digest or source.tag}", method=method)
        if isinstance(exc, BlobUnknownError):
            return answers.error(404, answers.BLOB_UNKNOWN,
                                 f"blob unknown at the source {where}: {source.digest}",
                                 method=method)
        if isinstance(exc, AuthenticationError):
            # the message names the user at most (Credentials.__str__), never a secret
            return answers.error(502, answers.DENIED,
                                 f"the source {source.domain} refused the credentials "
                                 f"configured for it: {exc}", method=method)
        if isinstance(exc, TimedOutError):
            return answers.error(504, answers.UNAVAILABLE, str(exc), method=method,
                                 headers={"Retry-After": "10"})
        if isinstance(exc, DigestMismatchError):
            return answers.error(502, answers.UNKNOWN, str(exc), method=method)
        del kind
        return answers.error(502, answers.UNAVAILABLE, f"the source {where} failed: {exc}",
                             method=method, headers={"Retry-After": "10"})

    # -- peers ---------------------------------------------------------------------------------

    async def _peer_blob(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        flight = self.fetcher.blobs.get(digest)
        if flight is None:
            return answers.error(404, answers.BLOB_UNKNOWN, "no fetch of this blob here")
        if not request.headers.get(subjects.FRONT_SOURCE_VIEW_HEADER):
            flight.paced = False  # a kubelet at the other replica is waiting for it
        await flight.ready.wait()
        if flight.failure is not None or flight.spool is None:
            return answers.error(502, answers.UNAVAILABLE, str(flight.failure))
        try:
            fd = flight.spool.open_reader()
        except FileNotFoundError:
            return answers.error(404, answers.BLOB_UNKNOWN, "stored already")
        return await self._stream_spool(request, flight.spool, fd, digest=digest,
                                        result="joined")

    async def _peer_manifest(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        manifest = self.fetcher.cached_manifest(key)
        if manifest is None:
            running = self.fetcher.running_manifest(key)
            if running is not None:
                with contextlib.suppress(ClusterRegistryError):
                    manifest = await running
        if manifest is None:
            return answers.error(404, answers.MANIFEST_UNKNOWN, "no such manifest here")
        return await self._send_manifest(request, manifest, "joined")

