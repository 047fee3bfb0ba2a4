"""The copy engine: one image from a source registry to a destination, byte for byte.

Order is what keeps a copy from ever being visible half-done:
blobs first, then each image manifest once all its blobs are there, then an
index once all its children are, and the tag last, once what it names exists.
Manifests are pushed as the exact bytes the source served, so every digest
(and every `@sha256:` pin in a pod spec) stays valid.

Each blob takes the cheapest path the destination allows:
1. skip: the destination repository already has it (a mount from itself answers 201);
2. mount: the destination has it in another repository (the `BlobLedger` says
   where), so one POST links it without moving a byte;
3. upload: streamed from the source's response into the destination's request,
   never held in memory, the sha256 and the size checked on the way. The last
   piece is held back until the digest is proven, so a corrupt blob is never
   completed in the destination: the upload is cancelled instead. Blobs up to
   `chunked_threshold` go in one PUT, larger ones in PATCH chunks of `chunk_size`.

Over a link that drops, an interrupted transfer is taken up where it stopped
(`_Source`, `_BlobUpload`; the decisions in `oci/resuming.py`): a download with
`Range: bytes=N-`, the sha256 state carried on, so the whole blob is still
verified once; a chunked upload from the offset its session reports, or in a
new session when that one is gone. A source that ignores ranges is read again
from byte 0 (logged). Transfers that keep failing without progress, and other
retryable errors, end the attempt; the blob then restarts in a new upload
session, up to `blob_attempts` times. Either way the destination completes a
blob only with the source's exact bytes (its digest is checked there too), and
no manifest is pushed before all of its blobs.

Blob reads are paced by the copier's `Pacer` (mirror.maxBytesPerSecond): the
link is shared with the workloads the cluster exists for.

The ledger is what lets several workers share work: before uploading a blob a
worker claims it; another worker needing the same blob waits for the claim to
turn into a location and mounts it from there. The ledger is a hint only: a
mount that fails, or a claim that never completes, falls back to an upload.

Platform selection: with `platforms` set, only matching children of an index
are copied. When that is every child, the index is pushed as is. Otherwise the
source index cannot be pushed (its digest names children the destination would
not have), so a filtered index with only the selected entries is pushed under the
tag instead; its digest differs from the source's, and the report says so
(`filtered=True`). A pod that pins the source index by digest then needs every
platform copied (leave `platforms` empty).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import aiohttp
from yarl import URL

from clusterregistry.errors import (
    DigestMismatchError,
    RegistryError,
    RetryableError,
    UnsupportedManifestError,
)
from clusterregistry.oci import manifests
from clusterregistry.oci.manifests import Descriptor, Manifest
from clusterregistry.oci.pacing import Pacer
from clusterregistry.oci.registries import RegistryClient
from clusterregistry.oci.resuming import Stalls, body_start

log = logging.getLogger(__name__)

__all__ = ["BlobLedger", "Copier", "CopyOptions", "CopyProgress", "CopyReport", "MemoryLedger",
           "Progress"]

MiB = 1 << 20
# batches at least this large are hashed off the event loop
_THREAD_HASH_MIN = 64 * 1024
_T = TypeVar("_T")


@dataclass(frozen=True)
class CopyOptions:
    # blobs in flight at once, for one copy
    blob_concurrency: int = 6
    # blobs larger than this are uploaded in PATCH chunks of chunk_size
    chunked_threshold: int = 256 * MiB
    chunk_size: int = 64 * MiB
    # the last bytes sent of a chunk, kept to send again after an interrupted chunk: what a
    # session lacks is about what was in flight (socket buffers), so a tail this size
    # spares the source link almost every re-read, at this much memory per chunked blob
    resume_memory: int = 8 * MiB
    # True: hash in a worker thread (hashlib releases the GIL), overlapping the sha256 with
    # this loop's I/O, `hash_batch` bytes per handoff. For a node where this process's core
    # is what limits a copy (fast links, idle cores). Off by default: where the registry
    # shares the cores (a small edge cluster, and bench/mirror.py on 2 cores) the handoffs
    # and GIL round trips cost about 15% of the copier's CPU and buy no speed.
    hash_in_thread: bool = False
    hash_batch: int = 1 * MiB
    # tries of one blob on retryable errors (each a fresh upload)
    blob_attempts: int = 3
    retry_delay: float = 0.5
    # how long to wait for another worker's claimed upload before uploading anyway
    claim_wait_seconds: float = 300.0
    claim_poll_seconds: float = 0.05
    # False: leave the sha256 check to the destination registry (it refuses to commit an
    # upload whose bytes do not match `?digest=`, so nothing corrupt becomes visible either),
    # saving this process one hash pass; sizes are still checked here. For trusted networks
    # where the CPU matters more than catching a corrupt source before the upload ends.
    verify_locally: bool = True


@dataclass
class CopyReport:
    """What a copy did; `digest` is what the destination tag names."""

    digest: str = ""
    media_type: str = ""
    source_digest: str = ""
    # manifests plus unique blobs, as the destination now holds the image
    size: int = 0
    platforms: list[str] = field(default_factory=list)
    filtered: bool = False
    already_present: bool = False
    bytes_copied: int = 0
    blobs_copied: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    manifests_pushed: int = 0
    duration_seconds: float = 0.0
    # interrupted transfers taken up again: download (Range), download_restarted (a source
    # that ignores Range, read from byte 0), upload (the session's offset), upload_restarted
    # (a new session)
    resumed: dict[str, int] = field(default_factory=dict)


class Progress(Protocol):
    """What a progress display needs; every method is called from the event loop."""

    def planned(self, blobs: int, total_bytes: int) -> None: ...

    def advanced(self, nbytes: int) -> None: ...

    def blob_done(self, digest: str, how: str, size: int) -> None: ...


class CopyProgress:
    """A `Progress` that only counts, for whoever reads it while the copy runs (the mirror
    publishes it every few seconds; the Artifact's status and a metric show it).

    `bytes_total` is the unique blob bytes the manifests name, known once they are read
    (`known`); `bytes_done` counts each blob byte once, whether it was uploaded (as it
    goes: the copier reports a resent byte once), mounted from another repository or
    already there. Manifests are not counted: they are small and pushed last. An image
    already complete in the destination is never planned: nothing to show.
    """

    def __init__(self) -> None:
        self.known = False
        self.bytes_total = 0
        self.bytes_done = 0
        self.blobs_total = 0
        self.blobs_done = 0

    def planned(self, blobs: int, total_bytes: int) -> None:
        self.known = True
        self.blobs_total, self.bytes_total = blobs, total_bytes

    def advanced(self, nbytes: int) -> None:
        self.bytes_done += nbytes

    def blob_done(self, digest: str, how: str, size: int) -> None:
        self.blobs_done += 1
        if how != "copied":  # an uploaded blob's bytes were counted as they went
            self.bytes_done += size

    @property
    def bytes_remaining(self) -> int:
        return max(0, self.bytes_total - self.bytes_done)


class BlobLedger(Protocol):
    """Where the destination registry holds blobs, and which blobs are being uploaded now."""

    async def lookup(self, digest: str) -> str | None:
        """A destination repository that held the blob when last seen, or None."""

    async def claim(self, digest: str) -> bool:
        """True: the caller uploads it. False: someone else uploads it now, or it was
        recorded meanwhile (look it up again)."""

    async def record(self, digest: str, repository: str) -> None:
        """The blob is in `repository` now (ends the caller's claim)."""

    async def release(self, digest: str) -> None:
        """The caller's upload failed: drop its claim, so another may try."""


class MemoryLedger:
    """A ledger for one process (the CLI, a single worker, tests)."""

    def __init__(self) -> None:
        self._where: dict[str, str] = {}
        self._claimed: set[str] = set()

    async def lookup(self, digest: str) -> str | None:
        return self._where.get(digest)

    async def claim(self, digest: str) -> bool:
        if digest in self._claimed or digest in self._where:
            return False
        self._claimed.add(digest)
        return True

    async def record(self, digest: str, repository: str) -> None:
        self._where[digest] = repository
        self._claimed.discard(digest)

    async def release(self, digest: str) -> None:
        self._claimed.discard(digest)


@dataclass
class _Counters:
    bytes_copied: int = 0
    copied: int = 0
    skipped: int = 0
    mounted: int = 0
    manifests: int = 0
    resumed: dict[str, int] = field(default_factory=dict)


class _Failure:
    """The error a body generator raised, kept because aiohttp wraps it in its own."""

    error: BaseException | None = None


class Copier:
    """Copies images between two RegistryClients; one Copier may run many copies at once."""

    def __init__(self, options: CopyOptions | None = None, *,
                 ledger: BlobLedger | None = None, pacer: Pacer | None = None,
                 on_resume: Callable[[str], None] | None = None) -> None:
        self.options = options or CopyOptions()
        self.ledger: BlobLedger = ledger or MemoryLedger()
        # blob reads of every copy share its buckets (mirror.maxBytesPerSecond)
        self.pacer = pacer if pacer is not None and pacer.limited else None
        # told of every resumed transfer (CopyReport.resumed names them)
        self.on_resume = on_resume

    async def copy(
        self,
        source: RegistryClient,
        source_repository: str,
        source_reference: str,
        destination: RegistryClient,
        destination_repository: str,
        *,
        tag: str | None = None,
        platforms: Sequence[str] = (),
        progress: Progress | None = None,
    ) -> CopyReport:
        """Copy `source_repository:source_reference` (a tag or digest) and tag it `tag`.

        Raises the project's errors: RetryableError subclasses for what may pass
        (network, 5xx, read-only registry), PermanentError subclasses otherwise
        (DigestMismatchError, AuthenticationError, ManifestUnknownError, schema 1).
        """
        started = time.perf_counter()
        job = _Job(self, (source, source_repository), (destination, destination_repository),
                   progress=progress)
        media_type, digest, data = await source.get_manifest(source_repository,
                                                              source_reference)
        top = manifests.parse(data, media_type=media_type, digest=digest)
        report = await job.run(top, tag=tag, platforms=tuple(platforms))
        report.duration_seconds = time.perf_counter() - started
        return report


class _Job:
    """One copy in progress: its clients, its counters, and the blobs it already handled."""

    def __init__(self, copier: Copier, source: tuple[RegistryClient, str],
                 destination: tuple[RegistryClient, str], *,
                 progress: Progress | None) -> None:
        self.options = copier.options
        self.ledger = copier.ledger
        self.pacer = copier.pacer
        self.on_resume = copier.on_resume
        # per blob: the bytes counted as copied (resent bytes count once)
        self.reported: dict[str, int] = {}
        self.src, self.src_repo = source
        self.dst, self.dst_repo = destination
        self.progress = progress
        self.counters = _Counters()
        self.slots = asyncio.Semaphore(self.options.blob_concurrency)
        self.blobs: dict[str, asyncio.Task[None]] = {}

    async def run(self, top: Manifest, *, tag: str | None,
                  platforms: tuple[str, ...]) -> CopyReport:
        report = CopyReport(source_digest=top.digest, media_type=top.media_type)
        images: list[Manifest]
        to_push = top
        if top.is_index:
            children = [c for c in top.children if not platforms or c.platform in platforms]
            if not children:
                available = ", ".join(c.platform or "?" for c in top.children)
                raise UnsupportedManifestError(
                    f"none of the platforms {', '.join(platforms)} is in the index "
                    f"(it has {available})")
            if len(children) < len(top.children):
                to_push = _filtered_index(top, children)
                report.filtered = True
            report.platforms = [c.platform for c in children if c.platform]
            images = [await self._fetch_child(child) for child in children]
        else:
            images = [top]
        report.digest, report.media_type = to_push.digest, to_push.media_type
        unique: dict[str, Descriptor] = {}
        for image in images:
            for blob in image.blobs:
                unique.setdefault(blob.digest, blob)
        report.size = to_push.size + sum(b.size for b in unique.values()) + (
            sum(i.size for i in images) if top.is_index else 0)

        if await self.dst.head_manifest(self.dst_repo, to_push.digest) is not None:
            # complete already (a registry accepts a manifest only with everything it names)
            report.already_present = True
            self.counters.skipped += len(unique)
        else:
            if self.progress is not None:
                self.progress.planned(len(unique), sum(b.size for b in unique.values()))
            await self._push_all(images)
            if top.is_index:
                await self._push_manifest(to_push, to_push.digest)
        # A manifest that was missing cannot be what the tag names already: no HEAD for it.
        if tag and (not report.already_present
                    or await self.dst.head_manifest(self.dst_repo, tag) != to_push.digest):
            await self._push_manifest(to_push, tag)
        counters = self.counters
        report.bytes_copied, report.blobs_copied = counters.bytes_copied, counters.copied
        report.blobs_skipped, report.blobs_mounted = counters.skipped, counters.mounted
        report.manifests_pushed = counters.manifests
        report.resumed = dict(counters.resumed)
        return report

    async def _push_all(self, images: list[Manifest]) -> None:
        """Every image's blobs and manifest. On any failure (or cancellation) everything
        still running is cancelled and awaited before the error propagates: no upload of
        this copy may outlive it, since the GC fence is released when the copy returns."""
        pushes = [asyncio.ensure_future(self._push_image(image)) for image in images]
        try:
            await asyncio.gather(*pushes)
        except BaseException:
            running = [*pushes, *self.blobs.values()]
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise

    async def _fetch_child(self, child: Descriptor) -> Manifest:
        media_type, _, data = await self.src.get_manifest(self.src_repo, child.digest)
        manifest = manifests.parse(data, media_type=media_type or child.media_type,
                                   digest=child.digest)
        if manifest.is_index:
            raise UnsupportedManifestError(f"nested index {child.digest} is not supported")
        return manifest

    async def _push_image(self, image: Manifest) -> None:
        tasks = [self._blob_task(blob) for blob in image.blobs]
        if tasks:
            await asyncio.gather(*tasks)
        await self._push_manifest(image, image.digest)

    async def _push_manifest(self, manifest: Manifest, reference: str) -> None:
        await self.dst.put_manifest(self.dst_repo, reference, media_type=manifest.media_type,
                                    data=manifest.data)
        self.counters.manifests += 1

    def _blob_task(self, blob: Descriptor) -> asyncio.Task[None]:
        """One task per blob per copy: children of an index often share layers."""
        task = self.blobs.get(blob.digest)
        if task is None:
            task = self.blobs[blob.digest] = asyncio.ensure_future(self._copy_blob(blob))
        return task

    # -- one blob ------------------------------------------------------------------------

    def _done(self, blob: Descriptor, how: str) -> None:
        if self.progress is not None:
            self.progress.blob_done(blob.digest, how, blob.size)

    async def _copy_blob(self, blob: Descriptor) -> None:
        async with self.slots:
            deadline = time.monotonic() + self.options.claim_wait_seconds
            pause = self.options.claim_poll_seconds
            while True:
                where = await self.ledger.lookup(blob.digest)
                # One POST does the work of a HEAD and an upload start: a mount from the
                # repository the ledger names, or from the destination repository itself,
                # answers 201 when the blob is there (linked), else 202 with an upload session.
                origin = where or self.dst_repo
                mounted, location = await self.dst.start_upload(
                    self.dst_repo, mount=blob.digest, mount_from=origin)
                if mounted:
                    how = "skipped" if origin == self.dst_repo else "mounted"
                    if how == "skipped":
                        self.counters.skipped += 1
                    else:
                        self.counters.mounted += 1
                    await self.ledger.record(blob.digest, self.dst_repo)
                    self._done(blob, how)
                    return
                if where is not None:
                    break  # a stale hint (the blob went away): upload it again
                if await self.ledger.claim(blob.digest) or time.monotonic() > deadline:
                    break
                # someone else uploads it now: wait, then mount from where it lands
                await self.dst.cancel_upload(location, repository=self.dst_repo)
                await asyncio.sleep(pause)
                pause = min(pause * 1.5, 1.0)
            try:
                await self._upload_with_retries(blob, location)
            except BaseException:
                await self.ledger.release(blob.digest)
                raise
            self.counters.copied += 1
            await self.ledger.record(blob.digest, self.dst_repo)
            self._done(blob, "copied")

    async def _upload_with_retries(self, blob: Descriptor, location: URL) -> None:
        attempt = 0
        session: URL | None = location
        while True:
            if session is None:
                _, session = await self.dst.start_upload(self.dst_repo)
            upload = _BlobUpload(self, blob, session)
            try:
                await upload.run()
                return
            except BaseException as exc:
                await asyncio.shield(self.dst.cancel_upload(upload.location,
                                                            repository=self.dst_repo))
                session = None
                attempt += 1
                if not isinstance(exc, RetryableError) or attempt >= self.options.blob_attempts:
                    raise
                log.info("blob %s: %s; restarting it in a new upload session", blob.digest, exc)
                await asyncio.sleep(self.options.retry_delay * attempt)

    def resumed(self, what: str) -> None:
        self.counters.resumed[what] = self.counters.resumed.get(what, 0) + 1
        if self.on_resume is not None:
            self.on_resume(what)

    def advanced(self, blob: Descriptor, position: int) -> None:
        """The blob's bytes up to `position` went to the destination: count what is new
        (a resumed or restarted transfer sends some bytes again; they count once)."""
        delta = position - self.reported.get(blob.digest, 0)
        if delta > 0:
            self.reported[blob.digest] = position
            self.counters.bytes_copied += delta
            if self.progress is not None:
                self.progress.advanced(delta)


class _Source:
    """A source blob as pieces, in order, that survive broken connections.

    A connection that breaks (or a body that ends short) is reopened with
    `Range: bytes=N-` from the first byte not yet received. A source that
    answers such a request with 200 (it ignores ranges) is read again from byte
    0, and the bytes already received are dropped: that is logged, since it
    costs the link the whole prefix again. Pieces are passed on as the HTTP
    parser delivered them (joining them would copy every byte once more).
    """

    def __init__(self, job: _Job, blob: Descriptor) -> None:
        self.job = job
        self.client, self.repository = job.src, job.src_repo
        self.blob = blob
        self.what = f"blob {blob.digest} from {self.client.host}"
        # the blob offset of the next byte the connection delivers
        self.position = 0
        # bytes below this are dropped: what a source that ignored Range sent again
        self.skip_to = 0
        # what a piece held beyond the `limit` of the last read
        self.spare: memoryview | None = None
        self.response: aiohttp.ClientResponse | None = None
        self.stalls = Stalls(limit=self.client.retry.attempts)
        self.received = 0  # bytes read from the network, dropped ones included

    @property
    def offset(self) -> int:
        """The blob offset of the next byte `read` returns."""
        return self.position - (len(self.spare) if self.spare is not None else 0)

    async def read(self, limit: int) -> bytes | memoryview:
        """The next piece, at most `limit` bytes; empty at the end of the blob."""
        piece: bytes | memoryview
        if self.spare is not None:
            piece, self.spare = self.spare, None
        else:
            piece = await self._next()
        if len(piece) > limit:
            view = memoryview(piece)
            piece, self.spare = view[:limit], view[limit:]
        return piece

    def seek(self, offset: int) -> None:
        """Read from `offset` next (a new connection, with Range when offset > 0)."""
        self.close()
        self.spare = None
        self.position, self.skip_to = offset, 0

    async def extra(self) -> bool:
        """Whether the source sends more than the blob's size (a corrupt source)."""
        if self.spare is not None or self.position > self.blob.size:
            return True
        if self.response is None:
            return False
        try:
            return bool(await _read_chunk(self.response))
        except (aiohttp.ClientError, TimeoutError):
            return False  # the size is reached and the digest checks the bytes

    def close(self) -> None:
        if self.response is not None:
            self.response.close()
            self.response = None

    async def _next(self) -> bytes | memoryview:
        while True:
            if self.response is None:
                await self._open()
            assert self.response is not None
            try:
                data = await _read_chunk(self.response)
            except (aiohttp.ClientError, TimeoutError) as exc:
                await self._interrupted(type(exc).__name__)
                continue
            if not data:
                if self.position >= self.blob.size:
                    return b""
                await self._interrupted("the body ended early")
                continue
            self.received += len(data)
            start = self.position
            self.position += len(data)
            piece: bytes | memoryview | None = None
            if self.position > self.skip_to:
                piece = memoryview(data)[self.skip_to - start:] if start < self.skip_to else data
                # held as spare while the pacer waits: a read cancelled there (aiohttp cancels
                # the body of a request it can no longer send) loses no byte it received
                self.spare = memoryview(piece)
            pacer = self.job.pacer
            if pacer is not None:
                await pacer.take(self.client.host, len(data))
            if piece is None:
                continue
            self.spare = None
            return piece

    async def _open(self) -> None:
        start = self.position
        response = await self.client.open_blob(self.repository, self.blob.digest, start=start)
        try:
            begins = body_start(
                status=response.status, content_range=response.headers.get("Content-Range"),
                content_length=response.content_length, start=start, size=self.blob.size,
                what=self.what)
        except BaseException:
            response.release()
            raise
        if begins != start:
            log.warning("%s: the source ignores Range requests (HTTP 200 to bytes=%d-): "
                        "reading the blob again from byte 0 and dropping the %d bytes "
                        "already copied", self.what, start, start)
            self.skip_to, self.position = max(self.skip_to, start), 0
            self.job.resumed("download_restarted")
        elif start > 0:
            log.info("%s: resumed from byte %d of %d", self.what, start, self.blob.size)
            self.job.resumed("download")
        self.response = response

    async def _interrupted(self, reason: str) -> None:
        self.close()
        count = self.stalls.interrupted(self.position)
        if self.stalls.exhausted:
            hint = ("; the source ignores Range requests, so every try starts again at "
                    "byte 0" if self.skip_to else "")
            raise RegistryError(
                f"{self.what}: the connection broke {count} times at byte {self.position} "
                f"of {self.blob.size} without progress ({reason}){hint}")
        log.info("%s: the connection broke at byte %d of %d (%s); resuming",
                 self.what, self.position, self.blob.size, reason)
        attempt = self.stalls.backoff_attempt()
        if attempt is not None:
            await self.client.sleep(self.client.retry.delay(attempt))


async def _read_chunk(response: aiohttp.ClientResponse) -> bytes:
    """The next piece of a body as the parser holds it; empty at its end."""
    content = response.content
    while True:
        data, end_of_http_chunk = await content.readchunk()
        # (b"", True) marks a boundary of a chunked-encoded body, (b"", False) its end
        if data or not end_of_http_chunk:
            return data


class _Hash:
    """The sha256 of what the destination session holds, inline or in a worker thread
    (`hash_in_thread`: batches of about `hash_batch` bytes, each strictly after the
    previous one). `snapshot` and `restore` carry its state across a resumed upload."""

    def __init__(self, options: CopyOptions) -> None:
        self.options = options
        self.hasher = hashlib.sha256()
        self.batch: list[bytes | memoryview] = []
        self.batched = 0
        self.hashing: asyncio.Future[None] | None = None

    async def update(self, piece: bytes | memoryview, *, flush: bool) -> None:
        """Feed the hash; with `flush`, return only once every byte so far is hashed."""
        options = self.options
        if not options.verify_locally:
            return
        if not options.hash_in_thread:
            self.hasher.update(piece)
            return
        self.batch.append(piece)
        self.batched += len(piece)
        if self.batched < options.hash_batch and not flush:
            return
        await self.settle()
        batch, size = self.batch, self.batched
        self.batch, self.batched = [], 0
        if size < _THREAD_HASH_MIN:
            _update(self.hasher, batch)
        else:
            self.hashing = asyncio.get_running_loop().run_in_executor(
                None, _update, self.hasher, batch)
        if flush:
            await self.settle()

    async def settle(self) -> None:
        if self.hashing is not None:
            await self.hashing
            self.hashing = None

    async def snapshot(self) -> hashlib._Hash:
        """The state over every byte fed so far (hashlib objects continue from a copy)."""
        if self.batch:
            batch, self.batch, self.batched = self.batch, [], 0
            await self.settle()
            _update(self.hasher, batch)
        await self.settle()
        return self.hasher.copy()

    async def restore(self, state: hashlib._Hash) -> None:
        await self.settle()
        self.batch, self.batched = [], 0
        self.hasher = state.copy()

    def hexdigest(self) -> str:
        return self.hasher.hexdigest()


class _BlobUpload:
    """One blob into one upload session (or its successors), from a resumable source.

    Blobs up to `chunked_threshold` go in one PUT: a failure ends this attempt and the
    job starts a new session (`blob_attempts`). Larger ones go in PATCH chunks; after an
    interrupted chunk the session is asked how much it holds (`upload_status`) and the
    upload continues from there. The bytes it lacks come from memory when they are in
    the tail of the last `resume_memory` bytes sent (they almost always are: what a
    session lacks is what was in flight), else from the source again, with Range from the
    end of the last acknowledged chunk, the hash restored to its state there. Keeping
    whole chunks instead would cost 64 MiB per blob in flight on an edge node; re-reading
    every time cost 2.9 x the image's bytes from the source (the WAN) with a destination
    cut every 3 MiB, against ~1.0 with the tail. A session that is gone (404) is replaced
    by a new one, from byte 0. Distribution (2.8 and 3) is such a case after every cut
    inside a request: the `_state` in the upload URL then names an offset the session no
    longer has, and distribution cancels the upload (BLOB_UPLOAD_INVALID) when asked.
    """

    def __init__(self, job: _Job, blob: Descriptor, location: URL) -> None:
        self.job = job
        self.blob = blob
        self.dst, self.repository = job.dst, job.dst_repo
        self.location = location
        self.source = _Source(job, blob)
        self.hash = _Hash(job.options)
        self.failure = _Failure()
        # chunked uploads: the last bytes sent, from blob offset tail_start, to send again
        self.keep_tail = blob.size > job.options.chunked_threshold
        self.tail: collections.deque[bytes | memoryview] = collections.deque()
        self.tail_start = 0
        self.tail_bytes = 0
        # what the next request sends first (from the tail), before the source's next bytes
        self.replay: collections.deque[bytes | memoryview] = collections.deque()

    async def run(self) -> None:
        try:
            if self.blob.size <= self.job.options.chunked_threshold:
                await self._send(self.dst.put_blob(
                    self.location, repository=self.repository, digest=self.blob.digest,
                    size=self.blob.size, body=self._body(self.blob.size)))
            else:
                await self._chunked()
        finally:
            self.source.close()

    async def _send(self, request: Awaitable[_T]) -> _T:
        """A request whose body is the source: the body's own failure (a corrupt source, a
        source that cannot progress) is the real cause of the request's failure."""
        try:
            result = await request
        except (RegistryError, aiohttp.ClientError, TimeoutError) as exc:
            if self.failure.error is not None:
                raise self.failure.error from exc
            raise
        if self.failure.error is not None:
            raise self.failure.error
        return result

    async def _chunked(self) -> None:
        size, chunk = self.blob.size, self.job.options.chunk_size
        acked = 0  # the session holds bytes [0, acked)
        saved = await self.hash.snapshot()  # the hash over them
        stalls = Stalls(limit=self.dst.retry.attempts)
        while acked < size:
            end = min(acked + chunk, size)
            try:
                self.location = await self._send(self.dst.patch_blob(
                    self.location, repository=self.repository, start=acked,
                    length=end - acked, body=self._body(end)))
            except RetryableError as exc:
                if self.failure.error is not None:
                    raise
                acked = await self._resume(exc, acked, saved, stalls)
                saved = await self.hash.snapshot()
                continue
            acked = end
            saved = await self.hash.snapshot()
            self._forget(acked)
        await self.dst.put_blob(self.location, repository=self.repository,
                                digest=self.blob.digest, size=0, body=b"")

    async def _resume(self, exc: BaseException, acked: int, saved: hashlib._Hash,
                      stalls: Stalls) -> int:
        """After an interrupted chunk: where the session (or a new one) continues."""
        what = f"blob {self.blob.digest} to {self.dst.host}"
        status = await self.dst.upload_status(self.location, repository=self.repository)
        if status is not None and acked <= status[0] <= self.source.offset:
            held, self.location = status
            log.info("%s: chunk interrupted (%s); the session holds %d of %d bytes; "
                     "continuing", what, exc, held, self.blob.size)
            self.job.resumed("upload")
        else:
            if status is not None:
                await self.dst.cancel_upload(self.location, repository=self.repository)
            log.info("%s: chunk interrupted (%s) and the upload session is %s; starting "
                     "a new one from byte 0", what, exc,
                     "gone" if status is None else f"at byte {status[0]}, unusable")
            self.job.resumed("upload_restarted")
            _, self.location = await self.dst.start_upload(self.repository)
            held, acked, saved = 0, 0, hashlib.sha256()
        count = stalls.interrupted(held)
        if stalls.exhausted:
            raise RegistryError(
                f"{what}: the upload was interrupted {count} times at byte {held} of "
                f"{self.blob.size} without progress (last: {exc})") from exc
        attempt = stalls.backoff_attempt()
        if attempt is not None:
            await self.dst.sleep(self.dst.retry.delay(attempt))
        if held != self.source.offset and not self._replay_from(held):
            # the hash and the source go back to `acked`, then catch up to `held`
            self._forget(held)
            await self.hash.restore(saved)
            self.source.seek(acked)
            while self.source.offset < held:
                piece = await self.source.read(held - self.source.offset)
                if not piece:
                    raise RegistryError(f"{what}: the source ended before byte {held}")
                await self.hash.update(piece, flush=False)
        return held

    def _forget(self, offset: int) -> None:
        self.tail.clear()
        self.replay.clear()
        self.tail_start, self.tail_bytes = offset, 0

    def _replay_from(self, held: int) -> bool:
        """Send [held, source offset) again from the tail, when it holds those bytes."""
        if not self.tail_start <= held <= self.source.offset:
            return False
        skip = held - self.tail_start
        kept: collections.deque[bytes | memoryview] = collections.deque()
        for piece in self.tail:
            if skip >= len(piece):
                skip -= len(piece)
                continue
            kept.append(memoryview(piece)[skip:] if skip else piece)
            skip = 0
        self.tail, self.tail_start = kept, held
        self.tail_bytes = sum(len(piece) for piece in kept)
        self.replay = collections.deque(kept)
        return True

    def _keep(self, piece: bytes | memoryview) -> None:
        self.tail.append(piece)
        self.tail_bytes += len(piece)
        limit = self.job.options.resume_memory
        while self.tail and self.tail_bytes - len(self.tail[0]) >= limit:
            dropped = self.tail.popleft()
            self.tail_bytes -= len(dropped)
            self.tail_start += len(dropped)

    async def _body(self, end: int) -> AsyncIterator[bytes | memoryview]:
        try:
            async for piece in self._pieces(end):
                yield piece
        except (GeneratorExit, asyncio.CancelledError):
            # the request ended without the rest of the body (closed, or cancelled by aiohttp
            # when the destination went away): not the body's failure
            raise
        except BaseException as exc:
            self.failure.error = exc
            raise

    async def _pieces(self, end: int) -> AsyncIterator[bytes | memoryview]:
        """The source's bytes from where it is up to `end`, hashed on the way; the very last
        piece of the blob only once the sha256 and the size are proven, so a destination
        never receives a complete corrupt blob."""
        source, size = self.source, self.blob.size
        while self.replay:  # already hashed, verified and counted
            yield self.replay.popleft()
        while source.offset < end:
            piece = await source.read(end - source.offset)
            if not piece:
                raise RegistryError(
                    f"blob {self.blob.digest}: the source ended after {source.offset} of "
                    f"{size} bytes")
            final = source.offset == size
            try:
                await self.hash.update(piece, flush=final)
                if final:
                    await self._verify()
            except asyncio.CancelledError:
                # aiohttp cancels the body of a request it can no longer send (the
                # destination cut the connection) wherever the body waits. This piece is
                # read and hashed (or queued for the hash): keep it, so a resumed upload
                # sends it again from the tail. The last piece, not proven yet, is instead
                # read again from the source, hashed from the chunk's start (`_resume`
                # finds the session's offset outside an emptied tail)
                if final:
                    self._forget(source.offset)
                else:
                    self._sent(piece)
                raise
            self._sent(piece)
            yield piece

    def _sent(self, piece: bytes | memoryview) -> None:
        """`piece`, read, hashed and verified, goes into the request body now."""
        self.job.advanced(self.blob, self.source.offset)
        if self.keep_tail:
            self._keep(piece)

    async def _verify(self) -> None:
        if await self.source.extra():
            raise DigestMismatchError(
                f"blob {self.blob.digest}: the source sent more than the {self.blob.size} "
                "bytes the manifest says")
        actual = "sha256:" + self.hash.hexdigest()
        if self.job.options.verify_locally and actual != self.blob.digest:
            raise DigestMismatchError(
                f"blob {self.blob.digest}: the source's bytes have digest {actual}; "
                "upload cancelled")


def _update(hasher: hashlib._Hash, pieces: list[bytes | memoryview]) -> None:
    for piece in pieces:
        hasher.update(piece)


def _filtered_index(index: Manifest, children: Sequence[Descriptor]) -> Manifest:
    """The index with only the selected entries (everything else in it kept as it was)."""
    document = json.loads(index.data)
    wanted = {child.digest for child in children}
    document["manifests"] = [entry for entry in document["manifests"]
                             if entry.get("digest") in wanted]
    data = json.dumps(document, separators=(",", ":")).encode()
    return manifests.parse(data, media_type=index.media_type)
