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

A blob that fails on a retryable error (a dropped connection, a 5xx) is
restarted from the beginning with a new upload session, up to `blob_attempts`
times: an interrupted upload is never resumed, so nothing half-written counts.

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
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

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
from clusterregistry.oci.registries import RegistryClient

log = logging.getLogger(__name__)

__all__ = ["BlobLedger", "Copier", "CopyOptions", "CopyReport", "MemoryLedger", "Progress"]

MiB = 1 << 20
# batches at least this large are hashed off the event loop
_THREAD_HASH_MIN = 64 * 1024


@dataclass(frozen=True)
class CopyOptions:
    # blobs in flight at once, for one copy
    blob_concurrency: int = 6
    # blobs larger than this are uploaded in PATCH chunks of chunk_size
    chunked_threshold: int = 256 * MiB
    chunk_size: int = 64 * MiB
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


class Progress(Protocol):
    """What a progress display needs; every method is called from the event loop."""

    def planned(self, blobs: int, total_bytes: int) -> None: ...

    def advanced(self, nbytes: int) -> None: ...

    def blob_done(self, digest: str, how: str, size: int) -> None: ...


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


class _Failure:
    """The error a body generator raised, kept because aiohttp wraps it in its own."""

    error: BaseException | None = None


class Copier:
    """Copies images between two RegistryClients; one Copier may run many copies at once."""

    def __init__(self, options: CopyOptions | None = None, *,
                 ledger: BlobLedger | None = None) -> None:
        self.options = options or CopyOptions()
        self.ledger: BlobLedger = ledger or MemoryLedger()

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
            try:
                await self._upload(blob, session)
                return
            except BaseException as exc:
                await asyncio.shield(self.dst.cancel_upload(session, repository=self.dst_repo))
                session = None
                attempt += 1
                if not isinstance(exc, RetryableError) or attempt >= self.options.blob_attempts:
                    raise
                log.info("blob %s: %s; restarting its upload", blob.digest, exc)
                await asyncio.sleep(self.options.retry_delay * attempt)

    async def _upload(self, blob: Descriptor, location: URL) -> None:
        response = await self.src.open_blob(self.src_repo, blob.digest)
        failure = _Failure()
        hasher = hashlib.sha256()
        state = _Stream(response, blob, hasher, failure, self)
        try:
            length = response.content_length
            if length is not None and length != blob.size:
                raise DigestMismatchError(
                    f"blob {blob.digest}: the source serves {length} bytes, the manifest "
                    f"says {blob.size}")
            try:
                if blob.size <= self.options.chunked_threshold:
                    await self.dst.put_blob(location, repository=self.dst_repo,
                                            digest=blob.digest, size=blob.size,
                                            body=state.pieces(blob.size, last=True))
                else:
                    start = 0
                    while start < blob.size:
                        length = min(self.options.chunk_size, blob.size - start)
                        last = start + length >= blob.size
                        location = await self.dst.patch_blob(
                            location, repository=self.dst_repo, start=start, length=length,
                            body=state.pieces(length, last=last))
                        start += length
                    await self.dst.put_blob(location, repository=self.dst_repo,
                                            digest=blob.digest, size=0, body=b"")
            except (RegistryError, aiohttp.ClientError, TimeoutError) as exc:
                # the body's own failure (corrupt source, source gone) is the real cause
                if failure.error is not None:
                    raise failure.error from exc
                raise
            if failure.error is not None:
                raise failure.error
        finally:
            response.release()


class _Stream:
    """The source body as pieces for upload requests, verified on the way.

    Pieces are passed on as the source connection delivered them (each is the HTTP
    parser's own buffer): joining them into larger reads would copy every byte once
    more, in a process whose CPU the destination registry needs (it hashes every
    byte too, on the same cores in a small cluster). Each piece is hashed as it
    passes, or, with `hash_in_thread`, in batches of about `hash_batch` bytes in a
    worker thread, each batch strictly after the previous one.

    The very last piece is yielded only after the sha256 and size are proven, so
    a destination never receives a complete corrupt blob.
    """

    def __init__(self, response: aiohttp.ClientResponse, blob: Descriptor,
                 hasher: hashlib._Hash, failure: _Failure, job: _Job) -> None:
        self.response = response
        self.blob = blob
        self.hasher = hasher
        self.failure = failure
        self.job = job
        self.received = 0
        # what a piece held beyond the end of the previous upload chunk
        self.spare: memoryview | None = None
        self.batch: list[bytes | memoryview] = []
        self.batched = 0
        self.hashing: asyncio.Future[None] | None = None

    async def _read(self, limit: int) -> bytes | memoryview:
        """The next piece, at most `limit` bytes; empty at the end of the body."""
        piece: bytes | memoryview
        if self.spare is not None:
            piece, self.spare = self.spare, None
        else:
            piece = await self._receive()
        if len(piece) > limit:
            view = memoryview(piece)
            piece, self.spare = view[:limit], view[limit:]
        return piece

    async def _receive(self) -> bytes:
        content = self.response.content
        try:
            while True:
                data, end_of_http_chunk = await content.readchunk()
                # (b"", True) marks a boundary of a chunked-encoded body, (b"", False) its end
                if data or not end_of_http_chunk:
                    return data
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RegistryError(
                f"blob {self.blob.digest}: the source connection broke after "
                f"{self.received} of {self.blob.size} bytes ({type(exc).__name__})") from exc

    async def _hash(self, piece: bytes | memoryview, *, flush: bool) -> None:
        """Feed the hash; with `flush`, return only once every byte so far is hashed."""
        options = self.job.options
        if not options.verify_locally:
            return
        if not options.hash_in_thread:
            self.hasher.update(piece)
            return
        self.batch.append(piece)
        self.batched += len(piece)
        if self.batched < options.hash_batch and not flush:
            return
        if self.hashing is not None:
            await self.hashing
            self.hashing = None
        batch, size = self.batch, self.batched
        self.batch, self.batched = [], 0
        if size < _THREAD_HASH_MIN:
            _update(self.hasher, batch)
        else:
            self.hashing = asyncio.get_running_loop().run_in_executor(
                None, _update, self.hasher, batch)
        if flush and self.hashing is not None:
            await self.hashing
            self.hashing = None

    async def pieces(self, length: int, *, last: bool) -> AsyncIterator[bytes | memoryview]:
        try:
            async for piece in self._pieces(length, last=last):
                yield piece
        except BaseException as exc:
            self.failure.error = exc
            raise

    async def _pieces(self, length: int, *, last: bool) -> AsyncIterator[bytes | memoryview]:
        remaining = length
        counters, progress = self.job.counters, self.job.progress
        while remaining > 0:
            piece = await self._read(remaining)
            if not piece:
                raise RegistryError(
                    f"blob {self.blob.digest}: the source ended after {self.received} of "
                    f"{self.blob.size} bytes")
            remaining -= len(piece)
            self.received += len(piece)
            final = last and remaining == 0
            await self._hash(piece, flush=final)
            if final:
                await self._verify()
            counters.bytes_copied += len(piece)
            if progress is not None:
                progress.advanced(len(piece))
            yield piece

    async def _verify(self) -> None:
        if self.spare is not None or await self._receive():
            raise DigestMismatchError(
                f"blob {self.blob.digest}: the source sent more than the {self.blob.size} "
                "bytes the manifest says")
        actual = "sha256:" + self.hasher.hexdigest()
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
