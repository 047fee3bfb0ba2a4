"""The registry fence: GC's sweep and the mirrors' writes never overlap, and nobody dead holds it.

distribution's `garbage-collect` is a mark-and-sweep over the storage: a blob
uploaded after the mark but before its manifest is pushed is swept as
garbage, and the image it belonged to is left broken. So the sweep must run
while no write happens. The fence lives in the KV bucket `subjects.GC_BUCKET`:

- `subjects.FENCE_LOCK` is GC's exclusive lock, taken with KV *create*
  (which fails when the key exists), so two GC replicas never sweep at once;
- `subjects.fence_writer(<id>)` is one mirror write in flight, one key each.

Every entry is renewed every ttl/3 by its holder, and the bucket has a TTL
(JetStream `max_age`): an entry nobody renews disappears, so a GC or a
mirror killed with SIGKILL cannot leave the registry fenced (the failure
users of the peers report: a GC lock that leaks and a registry stuck
read-only).

Why a writer and GC cannot both get in. Each side first *writes its own
key*, and only then *reads the other side's keys*:

    writer:  put writing.<id>  (seq w)   then  read lock
    GC:      create lock       (seq g)   then  read writing.*

A KV bucket is one stream with one total order of stored messages, and a
write is acknowledged only once stored. If w < g, GC's read happens after g
was stored, hence after w: GC sees the writer (and waits for it). If g < w,
the writer's read happens after w, hence after g: the writer sees the lock
(and backs off, deleting its key). One of the two always sees the other.
Both reads go to the stream leader (the non-direct `STREAM.MSG.GET` API):
a direct get may be answered by a follower that has not applied the latest
write yet, which would break the argument in a replicated bucket.

Liveness rules that keep the argument true over time:
- a holder renews with a compare-and-set on its own last revision; if the
  entry expired meanwhile (or, for the lock, another GC took it), the
  renewal fails, the holder has lost the fence, and the work inside is
  cancelled and surfaces as FenceLostError. It never silently re-creates
  its entry, which would let a writer slip in behind a GC that already
  looked;
- a holder that cannot renew (NATS unreachable) for most of the TTL
  treats the fence as lost too, before the server can expire it;
- GC waits for writer entries to go away, either deleted by a writer that
  finished or expired because the writer died: at most one TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec
from nats.js.kv import KeyValue

from clusterregistry import subjects
from clusterregistry.bus.connecting import Bus
from clusterregistry.bus.streams import ensure_bucket
from clusterregistry.bus.translating import translating
from clusterregistry.errors import (
    ClusterRegistryError,
    ConflictError,
    FenceHeldError,
    FenceLostError,
    NotFoundError,
    RetryableError,
)
from clusterregistry.schemas import FenceEntry, encode, fence_entry_decoder

log = logging.getLogger(__name__)

__all__ = ["SWEEP_PURPOSE", "Fence", "Hold", "wants_read_only"]

# GC relabels its lock `sweep <run>` while blobs are being deleted: the registry must then
# refuse writes (a blob pushed during a sweep may be deleted under its manifest)
SWEEP_PURPOSE = "sweep"


def wants_read_only(lock: FenceEntry | None) -> bool:
    return lock is not None and lock.purpose.startswith(SWEEP_PURPOSE)

_STREAM = f"KV_{subjects.GC_BUCKET}"
_PREFIX = f"$KV.{subjects.GC_BUCKET}."
_KV_OPERATION = "KV-Operation"
# declare a fence lost when no renewal succeeded for this share of the TTL: the server
# expires the entry at 100%, measured from a store time later than our send time
_LOST_AFTER = 0.8


@dataclass
class Hold:
    """One fence entry this process holds (a writer key, or the lock)."""

    key: str
    entry: FenceEntry
    revision: int
    lost: bool = False
    reason: str = ""
    _active: bool = True
    _cancels: int = 0  # cancellations this fence requested of the body's task
    _task: asyncio.Task[object] | None = field(default=None, repr=False)
    # one compare-and-set at a time: a renewal and a relabel must not race on `revision`
    _updating: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)


class Fence:
    """The registry fence in `subjects.GC_BUCKET`, seen from one process (`holder`)."""

    def __init__(
        self,
        bus: Bus,
        *,
        ttl_seconds: float,
        holder: str,
        replicas: int = 1,
        poll_interval: float = 0.1,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("the fence TTL must be positive")
        self._bus = bus
        self.ttl = ttl_seconds
        self.holder = holder
        self.replicas = replicas
        self.poll_interval = poll_interval
        self._kv: KeyValue | None = None

    # -- the bucket --------------------------------------------------------------------------

    async def ensure(self) -> None:
        """Create the bucket with TTL = ttl_seconds, or adopt the TTL of the existing bucket.

        The bucket's TTL is the truth every holder must renew within, so a process
        configured differently renews at the bucket's pace rather than fighting over it.
        """
        bucket = await ensure_bucket(self._bus, name=subjects.GC_BUCKET, history=1,
                                     ttl=self.ttl, replicas=self.replicas)
        with translating(f"fence bucket {subjects.GC_BUCKET}"):
            info = await self._bus._js.stream_info(bucket.stream)
        bucket_ttl = info.config.max_age or 0.0
        if not bucket_ttl:
            raise RetryableError(
                f"fence bucket {subjects.GC_BUCKET} has no TTL: an entry of a dead holder "
                "would never expire; delete the bucket so it is created with one")
        if abs(bucket_ttl - self.ttl) > 1e-3:
            log.warning("fence bucket %s has ttl %.1fs, not the configured %.1fs; using the "
                        "bucket's", subjects.GC_BUCKET, bucket_ttl, self.ttl)
            self.ttl = bucket_ttl
        self._kv = bucket._kv

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            await self.ensure()
        assert self._kv is not None
        return self._kv

    # -- reads (from the stream leader: see the module docstring) ------------------------------

    async def lock_holder(self) -> FenceEntry | None:
        """GC's lock as stored now, or None when nobody holds it."""
        await self._bucket()
        try:
            with translating("cannot read the GC lock"):
                msg = await self._bus._js.get_msg(
                    _STREAM, subject=_PREFIX + subjects.FENCE_LOCK, direct=False)
        except NotFoundError:
            return None
        if msg.headers and msg.headers.get(_KV_OPERATION) in ("DEL", "PURGE"):
            return None
        return _decode(msg.data)

    async def writers(self) -> dict[str, FenceEntry]:
        """The mirror writes in flight now, by key (live, not deleted, not yet expired)."""
        return await self._entries(subjects.FENCE_WRITER_PREFIX, "fence writers")

    async def fronts(self) -> dict[str, FenceEntry]:
        """The registry fronts alive now (each renews `front.<id>`), by key."""
        return await self._entries(subjects.FENCE_FRONT_PREFIX, "registry fronts")

    async def fronts_read_only(self) -> dict[str, FenceEntry]:
        """Each front's acknowledgement that it refuses writes, by key `readonly.<id>`."""
        return await self._entries(subjects.FENCE_READ_ONLY, "read-only acknowledgements")

    async def _entries(self, prefix: str, what: str) -> dict[str, FenceEntry]:
        await self._bucket()
        found: dict[str, FenceEntry] = {}
        seq = 0
        pattern = f"{_PREFIX}{prefix}.>"
        while True:
            try:
                with translating(f"cannot list {what}"):
                    msg = await self._bus._js.get_msg(_STREAM, seq=seq, subject=pattern,
                                                      next=True, direct=False)
            except NotFoundError:
                return found
            seq = (msg.seq or seq) + 1
            key = (msg.subject or "")[len(_PREFIX):]
            # history=1: the last message of a key is its state; a marker means gone
            if msg.headers and msg.headers.get(_KV_OPERATION) in ("DEL", "PURGE"):
                found.pop(key, None)
                continue
            found[key] = _decode(msg.data)

    async def put_entry(self, key: str, entry: FenceEntry | None) -> None:
        """Write (or with None delete) a key of this process's own: a front's presence or its
        read-only acknowledgement. Expires with the bucket's TTL unless written again."""
        kv = await self._bucket()
        with translating(f"cannot write the fence key {key}"):
            if entry is None:
                await kv.delete(key)
            else:
                await kv.put(key, encode(entry))

    # -- mirror side ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def writing(self, purpose: str) -> AsyncIterator[Hold]:
        """Hold a writer entry around one registry write; FenceHeldError while GC holds the lock.

        Raises FenceLostError (cancelling the body) if the entry could not be kept.
        """
        kv = await self._bucket()
        key = subjects.fence_writer(uuid.uuid4().hex)
        now = time.time()
        entry = FenceEntry(holder=self.holder, purpose=purpose, acquired=now, renewed=now)
        with translating("cannot register a fence writer"):
            revision = await kv.create(key, encode(entry))
        hold = Hold(key=key, entry=entry, revision=revision)
        try:
            lock = await self.lock_holder()  # only now: our key is stored before this read
        except BaseException:
            await self._release(kv, hold)
            raise
        if lock is not None:
            await self._release(kv, hold)
            raise FenceHeldError(
                f"the registry is fenced for garbage collection by {lock.holder} "
                f"({lock.purpose or 'gc'}); retry later", delay=self.ttl / 3)
        async with self._held(kv, hold):
            yield hold

    # -- GC side -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def exclusive(self, *, purpose: str, wait_timeout: float) -> AsyncIterator[Hold]:
        """Take GC's lock, then wait (up to wait_timeout) until no mirror write is in flight.

        FenceHeldError when another holder has the lock, or when writes are still in
        flight after wait_timeout (the lock is released first). The lock is released on
        every way out; FenceLostError (cancelling the body) if it could not be kept.
        """
        kv = await self._bucket()
        now = time.time()
        entry = FenceEntry(holder=self.holder, purpose=purpose, acquired=now, renewed=now)
        try:
            with translating("cannot take the GC lock"):
                revision = await kv.create(subjects.FENCE_LOCK, encode(entry))
        except ConflictError as exc:  # the key holds a value: somebody's lock
            current = await self._quiet_lock_holder()
            who = f"{current.holder} ({current.purpose})" if current else "another holder"
            raise FenceHeldError(f"the GC lock is held by {who}",
                                 delay=self.ttl / 3) from exc.__cause__
        hold = Hold(key=subjects.FENCE_LOCK, entry=entry, revision=revision)
        async with self._held(kv, hold):
            await self._wait_for_writers(wait_timeout)
            yield hold

    async def _wait_for_writers(self, wait_timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_timeout
        while True:
            writers = await self.writers()
            if not writers:
                return
            if loop.time() >= deadline:
                holders = sorted({f"{w.holder} ({w.purpose})" for w in writers.values()})
                raise FenceHeldError(
                    f"{len(writers)} registry writes still in flight after {wait_timeout:g}s: "
                    + ", ".join(holders[:5]), delay=self.ttl / 3)
            await asyncio.sleep(min(self.poll_interval, max(0.0, deadline - loop.time())))

    async def _quiet_lock_holder(self) -> FenceEntry | None:
        try:
            return await self.lock_holder()
        except RetryableError:
            return None

    async def relabel(self, hold: Hold, purpose: str) -> None:
        """Change what a held entry says it is for (GC: `sweep ...` asks the registry's
        supervisor to go read-only); FenceLostError if the entry is no longer ours."""
        kv = await self._bucket()
        async with hold._updating:
            entry = FenceEntry(holder=hold.entry.holder, purpose=purpose,
                               acquired=hold.entry.acquired, renewed=time.time())
            try:
                with translating(f"cannot relabel fence entry {hold.key}"):
                    hold.revision = await kv.update(hold.key, encode(entry),
                                                    last=hold.revision)
            except ConflictError as exc:
                hold.lost, hold.reason = True, "it expired or was taken"
                raise FenceLostError(f"fence entry {hold.key} lost before relabelling",
                                     delay=self.ttl / 3) from exc.__cause__
            hold.entry = entry

    # -- the registry's read-only acknowledgement (gc readOnlyMode: follower) -------------------

    async def read_only_state(self) -> FenceEntry | None:
        """The supervisor's acknowledgement that the registry runs read-only (`acquired` is
        the lock's `acquired`, naming the lock it was switched for), or None."""
        await self._bucket()
        try:
            with translating("cannot read the read-only state"):
                msg = await self._bus._js.get_msg(
                    _STREAM, subject=_PREFIX + subjects.FENCE_READ_ONLY, direct=False)
        except NotFoundError:
            return None
        if msg.headers and msg.headers.get(_KV_OPERATION) in ("DEL", "PURGE"):
            return None
        return _decode(msg.data)

    async def set_read_only_state(self, entry: FenceEntry | None) -> None:
        """Acknowledge read-only (an entry) or read-write (None); expires with the TTL."""
        kv = await self._bucket()
        with translating("cannot write the read-only state"):
            if entry is None:
                await kv.delete(subjects.FENCE_READ_ONLY)
            else:
                await kv.put(subjects.FENCE_READ_ONLY, encode(entry))

    # -- holding: renew, detect loss, release ----------------------------------------------------

    @contextlib.asynccontextmanager
    async def _held(self, kv: KeyValue, hold: Hold) -> AsyncIterator[None]:
        task = asyncio.current_task()
        assert task is not None
        hold._task = task
        renewer = asyncio.create_task(self._renew(kv, hold), name=f"fence-renew-{hold.key}")
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:  # kept, and raised after the release below
            error = exc
        hold._active = False  # before any await: from here the renewer cannot cancel us
        if hold._cancels:
            if not isinstance(error, asyncio.CancelledError):
                # the body ended before our cancellation reached it: take delivery here,
                # or it would land in the release below
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0)
            remaining = task.cancelling()
            for _ in range(hold._cancels):
                remaining = task.uncancel()
            if remaining == 0 and (error is None or isinstance(error, asyncio.CancelledError)):
                error = FenceLostError(f"fence entry {hold.key} lost: {hold.reason}",
                                       delay=self.ttl / 3)
        # shielded: a caller being cancelled must not skip the release
        await asyncio.shield(asyncio.ensure_future(self._finish(kv, hold, renewer)))
        if error is not None:
            raise error

    async def _finish(self, kv: KeyValue, hold: Hold, renewer: asyncio.Task[None]) -> None:
        # wait for a renewal in flight, so the release deletes the revision actually stored
        renewer.cancel()
        await asyncio.wait({renewer})
        await self._release(kv, hold)

    async def _renew(self, kv: KeyValue, hold: Hold) -> None:
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        interval = self.ttl / 3
        retry = max(0.05, min(self.ttl / 20, 1.0))
        wait = interval
        while hold._active:
            await asyncio.sleep(wait)
            if not hold._active:
                return
            started = loop.time()
            try:
                # compare-and-set on our own last revision: fails if the entry expired or
                # was taken, and then we must not bring it back (module docstring)
                async with hold._updating:
                    entry = FenceEntry(holder=hold.entry.holder, purpose=hold.entry.purpose,
                                       acquired=hold.entry.acquired, renewed=time.time())
                    with translating(f"renewing fence entry {hold.key}"):
                        hold.revision = await kv.update(hold.key, encode(entry),
                                                        last=hold.revision)
                    hold.entry = entry
                last_ok = started
                wait = interval
            except ConflictError:
                await self._lose(hold, "it expired or was taken before it was renewed")
                return
            except ClusterRegistryError as exc:
                if loop.time() - last_ok >= self.ttl * _LOST_AFTER:
                    await self._lose(hold,
                                     f"no renewal for {loop.time() - last_ok:.1f}s ({exc})")
                    return
                log.warning("%s; retrying", exc)
                wait = retry
            except Exception as exc:
                # a bug: the entry will not be renewed, so the work inside must not go on
                # unfenced; lose it (cancelling the body), then let the bug surface
                await self._lose(hold, f"renewal failed: {type(exc).__name__}: {exc}")
                raise

    async def _lose(self, hold: Hold, reason: str) -> None:
        """Cancel the work inside the lost entry, again and again until it has stopped.

        Once is not enough on Python 3.11: `asyncio.wait_for` (which nats-py's requests use)
        swallows a cancellation that arrives as its awaited reply does, and the body would
        then go on writing unfenced.
        """
        hold.lost, hold.reason = True, reason
        log.error("fence entry %s lost: %s", hold.key, reason)
        while hold._active and hold._task is not None:
            hold._cancels += 1
            hold._task.cancel()
            await asyncio.sleep(0.1)

    async def _release(self, kv: KeyValue, hold: Hold) -> None:
        if hold.lost:
            return  # not ours any more: it expired, or another holder has the key
        try:
            with translating(f"releasing fence entry {hold.key}"):
                await kv.delete(hold.key, last=hold.revision)
        except ConflictError:
            pass  # expired or taken meanwhile: nothing of ours to delete
        except ClusterRegistryError as exc:
            log.warning("%s; it expires within %.1fs", exc, self.ttl)


def _decode(data: bytes | None) -> FenceEntry:
    try:
        return fence_entry_decoder.decode(data or b"")
    except msgspec.DecodeError:  # a foreign or corrupt entry still counts as held
        return FenceEntry(holder="unknown", purpose="unreadable entry")
