"""Misses: one fetch from the source per manifest and per blob, shared by every client.

A blob the registry lacks is fetched from its source once, whatever the number
of clients, nodes and front replicas asking: in this process a dict of flights
by digest (the first request starts the fetch, the others join its spool), and
across replicas a claim in `bus.flights` (the losers stream from the holder's
spool through its `/_front/` endpoint). The fetch is verified (size, sha256)
before the blob is pushed into the registry, once, under the registry fence
(so never into a GC sweep: a miss during a read-only window is served from the
source and stored after it), and recorded in the mirror's blob ledger so the
mirror then mounts or skips it rather than fetching it again.

Manifests are small: fetched once per tag per `tag_ttl_seconds` (a tag may
move at the source) and kept by digest, which never changes. They are not
stored: the mirror puts a manifest only after all its blobs, so the registry
never holds an image it cannot serve whole.

Nothing waits without bytes flowing: opening a source request, and every read
from it, is bounded by `source_timeout_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp

from clusterregistry import subjects
from clusterregistry.bus.fencing import Fence
from clusterregistry.bus.flights import Claimed, Elsewhere, Flights, Unknown
from clusterregistry.bus.ledgers import KvBlobLedger
from clusterregistry.config import FrontSettings
from clusterregistry.errors import (
    BlobUnknownError,
    ClusterRegistryError,
    DigestMismatchError,
    FenceHeldError,
    RegistryError,
    RetryableError,
    TimedOutError,
)
from clusterregistry.front.metrics import FrontMetrics
from clusterregistry.front.spools import READ_CHUNK, Spool, SpoolDir
from clusterregistry.oci.clients import RegistryClients
from clusterregistry.oci.manifests import digest_of
from clusterregistry.oci.pacing import Pacer
from clusterregistry.oci.registries import RegistryClient
from clusterregistry.references import Reference

log = logging.getLogger(__name__)

_MANIFESTS_KEPT = 4096
PEER_PREFIX = "/_front"


@dataclass(frozen=True)
class Manifest:
    media_type: str
    digest: str
    data: bytes
    from_source: bool = False  # fetched from the source by this replica (not a peer)


@dataclass
class BlobFlight:
    """One blob on its way from a source into the registry, in this process."""

    digest: str
    name: str  # the local repository it is stored under
    source: Reference
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # spool or failure is known
    clients: int = 0  # requests served from it: all but the first joined it
    # only the mirror wants it (a background copy): fetched within mirror.maxBytesPerSecond,
    # until a client that is not the mirror (a kubelet: a pod is waiting) joins
    paced: bool = False
    spool: Spool | None = None
    failure: ClusterRegistryError | None = None
    stored: bool = False
    task: asyncio.Task[None] | None = None


@dataclass(frozen=True)
class Peer:
    """Another replica holds the fetch: stream it from there."""

    url: str
    holder: str


@dataclass(frozen=True)
class Stored:
    """Another replica stored the blob already: the registry has it."""


def source_text(source: Reference) -> str:
    """The source's name for messages: host and repository, never credentials."""
    return f"{source.domain}/{source.path}"


class Fetcher:
    """The misses of one front replica."""

    def __init__(
        self,
        *,
        settings: FrontSettings,
        clients: RegistryClients,
        registry: RegistryClient,
        spools: SpoolDir,
        metrics: FrontMetrics,
        flights: Flights | None = None,
        ledger: KvBlobLedger | None = None,
        fence: Fence | None = None,
        peers: aiohttp.ClientSession | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.registry = registry
        self.spools = spools
        self.metrics = metrics
        self.flights = flights
        self.ledger = ledger
        self.fence = fence
        self.peers = peers
        self.pacer = pacer if pacer is not None and pacer.limited else None
        self.timeout = settings.source_timeout_seconds
        self.blobs: dict[str, BlobFlight] = {}
        self._manifests: OrderedDict[str, Manifest] = OrderedDict()  # by digest
        self._tags: dict[str, tuple[str, float]] = {}  # source ref -> (digest, expires)
        self._manifest_flights: dict[str, asyncio.Future[Manifest]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    # -- manifests ------------------------------------------------------------------------------

    def cached_manifest(self, key: str) -> Manifest | None:
        """A manifest this replica has, by flight key (for a peer) or by digest."""
        tagged = self._tags.get(key)
        if tagged is not None:
            digest, expires = tagged
            if time.monotonic() < expires:
                return self._manifests.get(digest)
            return None
        return self._manifests.get(key)

    def running_manifest(self, key: str) -> asyncio.Future[Manifest] | None:
        """The fetch of a manifest under way here, by flight key (for a peer to wait on)."""
        running = self._manifest_flights.get(key)
        return asyncio.shield(running) if running is not None else None

    async def manifest(self, source: Reference, *,
                       from_peer: bool = False) -> tuple[Manifest, bool]:
        """The manifest `source` names (tag or digest), fetched once for all its clients;
        and whether this request shared a fetch made for another (or a peer's)."""
        key = manifest_key(source)
        cached = self.cached_manifest(source.digest or key)
        if cached is not None:
            return cached, True
        running = self._manifest_flights.get(key)
        joined = running is not None
        if running is None:
            running = self._manifest_flights[key] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._fly_manifest(source, key, running,
                                                          from_peer=from_peer))
            self._keep(task)
        manifest = await asyncio.shield(running)
        return manifest, joined or not manifest.from_source

    async def _fly_manifest(self, source: Reference, key: str, done: asyncio.Future[Manifest],
                            *, from_peer: bool) -> None:
        try:
            manifest = None
            if not from_peer and self.flights is not None:
                outcome = await self.flights.claim(subjects.flight_key("manifest", key))
                # a claim of our own is an earlier fetch of ours (a manifest claim is never
                # released): asking ourselves would wait on this very flight until the
                # source timeout, e.g. every retry of a manifest the source lacks
                if (isinstance(outcome, Elsewhere) and outcome.claim.peer
                        and outcome.claim.holder != self.flights.holder):
                    manifest = await self._manifest_from_peer(outcome.claim.peer, key, source)
            if manifest is None:
                manifest = await self._manifest_from_source(source)
            self._remember(source, key, manifest)
            done.set_result(manifest)
        except ClusterRegistryError as exc:
            done.set_exception(exc)
        except Exception as exc:
            done.set_exception(RegistryError(
                f"fetching {source_text(source)} failed: {type(exc).__name__}"))
        finally:
            self._manifest_flights.pop(key, None)
            if not done.done():
                done.set_exception(RegistryError("the fetch was cancelled"))
            done.exception()  # retrieved: a flight nobody awaits any more is no error

    def _remember(self, source: Reference, key: str, manifest: Manifest) -> None:
        self._manifests[manifest.digest] = manifest
        self._manifests.move_to_end(manifest.digest)
        while len(self._manifests) > _MANIFESTS_KEPT:
            self._manifests.popitem(last=False)
        # by flight key too, for peers: a tag for its TTL, a digest for as long as it is kept
        expires = (time.monotonic() + self.settings.tag_ttl_seconds if not source.digest
                   else float("inf"))
        self._tags[key] = (manifest.digest, expires)
        if len(self._tags) > _MANIFESTS_KEPT:
            now = time.monotonic()
            for stale in [k for k, (_, e) in self._tags.items() if e < now]:
                del self._tags[stale]
            while len(self._tags) > _MANIFESTS_KEPT:
                del self._tags[next(iter(self._tags))]

    async def _manifest_from_source(self, source: Reference) -> Manifest:
        client = self.clients.source(source.domain)
        reference = source.digest or source.tag
        try:
            async with asyncio.timeout(self.timeout):
                media_type, digest, data = await client.get_manifest(source.path, reference)
        except TimeoutError:
            self.metrics.source_fetch("manifest", "timeout")
            raise TimedOutError(f"the source {source.domain} did not answer within "
                                f"{self.timeout:g}s for {source_text(source)}:{reference}"
                                ) from None
        except ClusterRegistryError:
            self.metrics.source_fetch("manifest", "failed")
            raise
        self.metrics.source_fetch("manifest", "fetched")
        self.metrics.source_bytes.inc(len(data))
        return Manifest(media_type, digest, data, from_source=True)

    async def _manifest_from_peer(self, peer: str, key: str,
                                  source: Reference) -> Manifest | None:
        if self.peers is None:
            return None
        try:
            async with asyncio.timeout(self.timeout), self.peers.get(
                f"{peer}{PEER_PREFIX}/manifests/{key}", headers={subjects.FRONT_PEER_HEADER: "1"},
            ) as response:
                if response.status != 200:
                    return None
                data = await response.read()
                media_type = response.headers.get("Content-Type", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("peer %s did not give the manifest %s (%s): fetching it here",
                     peer, source_text(source), type(exc).__name__)
            return None
        digest = digest_of(data)
        if source.digest and digest != source.digest:
            return None
        return Manifest(media_type, digest, data)

    # -- blobs --------------------------------------------------------------------------------

    async def blob(self, source: Reference, *, name: str, digest: str,
                   from_peer: bool = False, background: bool = False
                   ) -> BlobFlight | Peer | Stored:
        """The flight to read `digest` from: this process's, another replica's, or none.
        `background`: asked for by the mirror only, so the link is shared (paced)."""
        flight = self.blobs.get(digest)
        if flight is not None:
            if not background:
                flight.paced = False
            return flight
        key = subjects.flight_key("blob", digest)
        revision = None
        if self.flights is not None and not from_peer:
            outcome = await self.flights.claim(key)
            flight = self.blobs.get(digest)  # another request of ours may have won meanwhile
            if flight is not None:
                if isinstance(outcome, Claimed):
                    await self.flights.abandon(key, outcome.revision)
                if not background:
                    flight.paced = False
                return flight
            if isinstance(outcome, Elsewhere):
                if outcome.claim.state == "stored":
                    return Stored()
                if outcome.claim.peer and outcome.claim.holder != self.flights.holder:
                    return Peer(outcome.claim.peer, outcome.claim.holder)
            elif isinstance(outcome, Claimed):
                revision = outcome.revision
            elif isinstance(outcome, Unknown):
                log.info("no flight claim for %s (%s): fetching it alone", digest,
                         outcome.reason)
        flight = self.blobs[digest] = BlobFlight(digest=digest, name=name, source=source,
                                                 paced=background and self.pacer is not None)
        flight.task = asyncio.create_task(self._fly_blob(flight, key, revision))
        self._keep(flight.task)
        return flight

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fly_blob(self, flight: BlobFlight, key: str, revision: int | None) -> None:
        try:
            await self._fetch_blob(flight, key, revision)
        except ClusterRegistryError as exc:
            self._fail(flight, exc)
        except Exception as exc:
            log.exception("fetching %s failed", flight.digest)
            self._fail(flight, RegistryError(
                f"fetching {flight.digest} from {flight.source.domain} failed: "
                f"{type(exc).__name__}"))
        finally:
            if not flight.ready.is_set():
                self._fail(flight, RegistryError("the fetch was cancelled"))
        if flight.failure is not None:
            if revision is not None and self.flights is not None:
                await self.flights.abandon(key, revision)
            return
        try:
            await self._store(flight, key)
        finally:
            self.blobs.pop(flight.digest, None)
            if flight.spool is not None:
                self.spools.release_when_read(flight.spool)
                self.metrics.spool_bytes.set(self.spools.used)

    def _fail(self, flight: BlobFlight, exc: ClusterRegistryError) -> None:
        if flight.failure is None:
            flight.failure = exc
        log.warning("blob %s from %s: %s", flight.digest, flight.source.domain, exc)
        if flight.spool is not None:
            flight.spool.fail(str(exc))
            flight.spool.discard()
            self.metrics.spool_bytes.set(self.spools.used)
        self.blobs.pop(flight.digest, None)
        flight.ready.set()

    async def _open_source_blob(self, flight: BlobFlight) -> aiohttp.ClientResponse:
        source = flight.source
        client = self.clients.source(source.domain)
        what = f"get blob {source_text(source)}@{flight.digest}"
        try:
            async with asyncio.timeout(self.timeout):
                response = await client.request(
                    "GET", f"/v2/{source.path}/blobs/{flight.digest}",
                    scopes=[client.scope(source.path)], what=what)
        except TimeoutError:
            self.metrics.source_fetch("blob", "timeout")
            raise TimedOutError(f"the source {source.domain} did not answer within "
                                f"{self.timeout:g}s for {what}") from None
        if response.status == 404:
            response.release()
            self.metrics.source_fetch("blob", "failed")
            raise BlobUnknownError(f"blob unknown at the source: {source_text(source)}@"
                                   f"{flight.digest}")
        if response.status != 200:
            self.metrics.source_fetch("blob", "failed")
            await client.raise_for(response, what)
        return response

    async def _fetch_blob(self, flight: BlobFlight, key: str, revision: int | None) -> None:
        response = await self._open_source_blob(flight)
        source = flight.source
        async with response:
            size = int(response.headers.get("Content-Length", "-1"))
            flight.spool = self.spools.create(size=size)
            self.metrics.spool_bytes.set(self.spools.used)
            flight.ready.set()
            hasher = hashlib.sha256()
            renew_every = self.settings.claim_stale_seconds / 3
            renewed = time.monotonic()
            try:
                async for chunk in response.content.iter_chunked(READ_CHUNK):
                    if flight.paced and self.pacer is not None:
                        await self.pacer.take(source.domain, len(chunk))
                    hasher.update(chunk)
                    flight.spool.append(chunk)
                    self.metrics.source_bytes.inc(len(chunk))
                    if revision is not None and self.flights is not None and (
                        time.monotonic() - renewed > renew_every
                    ):
                        renewed = time.monotonic()
                        revision = await self.flights.renew(key, revision) or revision
            except TimeoutError:
                self.metrics.source_fetch("blob", "timeout")
                raise TimedOutError(
                    f"the source {source.domain} sent nothing for {self.timeout:g}s while "
                    f"sending {source_text(source)}@{flight.digest}") from None
            except aiohttp.ClientError as exc:
                self.metrics.source_fetch("blob", "failed")
                raise RegistryError(f"the source {source.domain} broke off "
                                    f"{source_text(source)}@{flight.digest}: "
                                    f"{type(exc).__name__}") from exc
        written = flight.spool.written
        actual = "sha256:" + hasher.hexdigest()
        if (size >= 0 and written != size) or (
            flight.digest.startswith("sha256:") and actual != flight.digest
        ):
            self.metrics.source_fetch("blob", "corrupt")
            raise DigestMismatchError(
                f"the source {source.domain} served {written} bytes with digest {actual} for "
                f"{source_text(source)}@{flight.digest}; nothing was stored")
        flight.spool.size = written
        flight.spool.finish()
        self.metrics.source_fetch("blob", "fetched")

    async def _store(self, flight: BlobFlight, key: str) -> None:
        """Push the verified blob into the registry once; after any read-only window."""
        spool = flight.spool
        assert spool is not None
        attempt = 0
        while True:
            try:
                if self.fence is None:
                    pushed = await self._push(flight, spool)
                else:
                    async with self.fence.writing(f"front store {flight.digest}"):
                        pushed = await self._push(flight, spool)
                break
            except FenceHeldError:
                # GC holds the registry (possibly sweeping): store after its window
                await asyncio.sleep(self.fence.ttl / 3 if self.fence else 1.0)
            except RetryableError as exc:
                attempt += 1
                if attempt > 5:
                    log.warning("storing %s in %s failed for good: %s (the mirror will copy "
                                "it)", flight.digest, flight.name, exc)
                    return
                await asyncio.sleep(min(2.0 ** attempt, 30.0))
            except ClusterRegistryError as exc:
                log.warning("storing %s in %s failed: %s (the mirror will copy it)",
                            flight.digest, flight.name, exc)
                return
        flight.stored = True
        if pushed:  # not when the mirror (or a client) put it there
            self.metrics.stored_blobs.inc()
        if self.ledger is not None:
            await self.ledger.record(flight.digest, flight.name)
        if self.flights is not None:
            await self.flights.stored(key)

    async def _push(self, flight: BlobFlight, spool: Spool) -> bool:
        """Upload the spooled blob; False when someone else's upload landed it."""
        if await self.registry.head_blob(flight.name, flight.digest) is not None:
            return False  # the mirror (or a client's push) got it there first
        # A mirror worker reading the image through this front (mirror.sourceThroughFront)
        # joins this flight and uploads the same blob into the same repository, under its
        # blob-ledger claim. Two uploads of one blob into one
        # repository race in distribution 2.8 (its filesystem driver rewrites the
        # repository's link file in place), and the mirror's manifest PUT that reads the
        # link meanwhile fails with DIGEST_INVALID/MANIFEST_BLOB_UNKNOWN (the Artifact goes
        # Failed until a retry). So the front takes the same ledger claim: when a mirror
        # holds it, its upload lands the blob once and the front waits for that (bounded);
        # when the front holds it, the mirror waits and then skips or mounts.
        claimed = False
        if self.ledger is not None:
            claimed = await self.ledger.claim(flight.digest)
            # a "stored" entry while the registry lacks the blob (a layer lost from storage)
            # is stale: nobody is uploading it, so store it now rather than wait for it
            if (not claimed and await self.ledger.lookup(flight.digest) is None
                    and await self._landed(flight)):
                return False
        try:
            _, location = await self.registry.start_upload(flight.name)

            async def body() -> AsyncIterator[bytes]:
                async for chunk in spool.read(spool.open_reader()):
                    yield chunk

            await self.registry.put_blob(location, repository=flight.name,
                                         digest=flight.digest, size=spool.written, body=body())
        except BaseException:
            if claimed and self.ledger is not None:
                await self.ledger.release(flight.digest)
            raise
        return True

    async def _landed(self, flight: BlobFlight) -> bool:
        """Whether the blob another writer claimed lands in the registry within the source
        timeout (False: the claim is stale or its upload failed, store it here)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while loop.time() < deadline:
            if await self.registry.head_blob(flight.name, flight.digest) is not None:
                return True
            await asyncio.sleep(0.1)
        return False


def manifest_key(source: Reference) -> str:
    """The flight key of a manifest: the sha256 of its source reference (a KV-safe token)."""
    return hashlib.sha256(str(source).encode()).hexdigest()


__all__ = ["PEER_PREFIX", "BlobFlight", "Fetcher", "Manifest", "Peer",
           "Stored", "manifest_key", "source_text"]
