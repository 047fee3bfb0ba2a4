"""The tracker's I/O: the relay's stream in, owner records in KV out.

One durable pull consumer on `clusterregistry.kube.>`, read in order, one
message at a time: each is applied (`owners.handle`) and its KV write
stored before it is acked, so a crash redelivers whatever was not stored.
A transient failure (NATS away) is retried in place rather than nak'ed,
which keeps the stream order that relist markers depend on.

Concurrency: every write names the revision it was decided on, so two
trackers (each with its own durable consumer, both reading every event)
never lose an update: the loser re-reads and decides again. Records are
cached in memory, warmed from KV at start; a cache that is behind costs a
conflict, never a wrong record, because records only grow while their owner
lives and a deletion is final.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.msg import Msg

from clusterregistry import schemas, subjects
from clusterregistry.bus.connecting import Bus
from clusterregistry.bus.keyvalues import Records, Versioned
from clusterregistry.bus.pulling import ConsumerSpec, Puller
from clusterregistry.bus.streams import ensure_bucket
from clusterregistry.config import TrackerSettings
from clusterregistry.errors import ConflictError, RetryableError
from clusterregistry.schemas import KubeEvent, OwnerRecord, RelistMarker
from clusterregistry.tracker import owners
from clusterregistry.tracker.metrics import TrackerMetrics

log = logging.getLogger(__name__)

_CONFLICT_ATTEMPTS = 10


def consumer_name(identity: str | None) -> str:
    """Each tracker reads every event through its own durable consumer (relist markers only
    make sense with every SYNC event between them); a single tracker uses the plain name."""
    return f"{subjects.TRACKER_CONSUMER}-{identity}" if identity else subjects.TRACKER_CONSUMER


def _stored(versioned: Versioned[OwnerRecord]) -> owners.Stored:
    if versioned.deleted:
        return owners.TOMBSTONE
    if versioned.value is None:
        return owners.NOTHING
    return owners.Stored(record=versioned.value)


class Tracker:
    def __init__(
        self,
        *,
        bus: Bus,
        settings: TrackerSettings,
        early_loading: bool,
        local_registry: str,
        identity: str | None = None,
        stream_replicas: int = 1,
        metrics: TrackerMetrics | None = None,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.rules = owners.Settings(early_loading=early_loading, local_registry=local_registry)
        self.stream_replicas = stream_replicas
        self.metrics = metrics or TrackerMetrics()
        self.puller = Puller(bus.js, ConsumerSpec(
            stream=subjects.KUBE_STREAM, durable=consumer_name(identity),
            filter_subject=subjects.KUBE_ALL, ack_wait=settings.ack_wait_seconds,
            max_ack_pending=settings.batch_size,
            inactive_threshold=settings.consumer_inactive_seconds if identity else 0.0))
        self.records: Records[OwnerRecord] | None = None
        self.relists = owners.Relists()
        self._cache: dict[str, Versioned[OwnerRecord]] = {}
        self.ready = False
        self.applied = 0  # messages acked, for tests and the bench

    # -- start ---------------------------------------------------------------------------------

    async def prepare(self) -> None:
        """The bucket, the consumer (the relay creates the stream), and the cache warmed."""
        kv = await ensure_bucket(self.bus.js, name=subjects.REFS_BUCKET,
                                 replicas=self.stream_replicas)
        self.records = Records(kv, schemas.owner_record_decoder.decode, name=subjects.REFS_BUCKET)
        self._cache = await self.records.snapshot()
        self._count_owners()
        await self.puller.start()
        self.ready = True

    async def run(self, stop: asyncio.Event) -> None:
        delay = self.settings.retry_initial_seconds
        while not self.ready:
            try:
                await self.prepare()
            except RetryableError as exc:
                log.warning("tracker cannot start consuming yet: %s", exc)
                if await _stopped(stop, delay):
                    return
                delay = min(delay * 2, self.settings.retry_max_seconds)
        purging = asyncio.create_task(self._purge_tombstones(stop), name="purge-tombstones")
        try:
            while not stop.is_set():
                try:
                    messages = await self.puller.fetch(self.settings.batch_size, timeout=1.0)
                except RetryableError as exc:
                    log.warning("tracker fetch: %s", exc)
                    self.metrics.retries.inc()
                    if await _stopped(stop, 1.0):
                        return
                    continue
                if messages:
                    started = time.perf_counter()
                    if not await self._process(messages, stop):
                        return  # stopping: the rest is redelivered to whoever comes next
                    self.metrics.batch_seconds.observe(time.perf_counter() - started)
        finally:
            purging.cancel()
            await self.puller.stop()

    # -- one message ---------------------------------------------------------------------------

    async def _process(self, messages: list[Msg], stop: asyncio.Event) -> bool:
        """Apply a batch and ack it; False when stopped before all of it was stored.

        Events between two relist markers are applied concurrently across owners and in
        order within one owner (different owners' records are independent); a marker waits
        for everything before it, and everything after it waits for the marker.
        """
        segment: list[tuple[Msg, KubeEvent]] = []
        for msg in messages:
            try:
                if msg.subject.endswith("._relist"):
                    item: KubeEvent | RelistMarker = schemas.relist_marker_decoder.decode(
                        msg.data)
                else:
                    item = schemas.kube_event_decoder.decode(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.error("tracker: undecodable message on %s (%s); terminated", msg.subject,
                          exc)
                self.metrics.invalid.inc()
                await msg.term()
                continue
            if isinstance(item, KubeEvent):
                self.relists.event(item)  # seen, whatever happens to its write
                segment.append((msg, item))
                continue
            if not await self._apply_segment(segment, stop):
                return False
            segment = []
            if not await self._retrying(functools.partial(self.apply_marker, item), stop):
                return False
            await msg.ack()
            self.applied += 1
        return await self._apply_segment(segment, stop)

    async def _apply_segment(self, segment: list[tuple[Msg, KubeEvent]],
                             stop: asyncio.Event) -> bool:
        groups: dict[str, list[KubeEvent]] = {}
        for _, event in segment:
            key = owners.owner_of(event)
            groups.setdefault(key.uid if key else "", []).append(event)

        async def in_order(events: list[KubeEvent]) -> bool:
            for event in events:
                if not await self._retrying(functools.partial(self.apply, event), stop):
                    return False
            return True

        if not all(await asyncio.gather(*(in_order(g) for g in groups.values()))):
            return False
        for msg, _ in segment:
            await msg.ack()
        self.applied += len(segment)
        return True

    async def _retrying(self, attempt: Callable[[], Awaitable[object]],
                        stop: asyncio.Event) -> bool:
        """Run `attempt` until it stores its effect; transient failures are retried in place
        (a nak would let later messages overtake it). False when stopped first."""
        delay = self.settings.retry_initial_seconds
        while True:
            try:
                await attempt()
                return True
            except RetryableError as exc:
                self.metrics.retries.inc()
                log.warning("tracker: %s; retrying in %.1fs", exc, delay)
                if await _stopped(stop, delay):
                    return False
                delay = min(delay * 2, self.settings.retry_max_seconds)

    async def _read(self, uid: str, *, fresh: bool = False) -> Versioned[OwnerRecord]:
        assert self.records is not None
        if not fresh:
            cached = self._cache.get(uid)
            if cached is not None:
                return cached
        versioned = await self.records.read(uid)
        self._cache[uid] = versioned
        return versioned

    async def apply(self, event: KubeEvent) -> owners.Outcome:
        """Apply one event to its owner's record, conflict-safe; the outcome."""
        assert self.records is not None
        key = owners.owner_of(event)
        if key is None:
            self.metrics.events.labels(event.kind, "not-tracked").inc()
            return owners.Skip("not-tracked")
        fresh = False
        for _ in range(_CONFLICT_ATTEMPTS):
            current = await self._read(key.uid, fresh=fresh)
            outcome = owners.handle(event, _stored(current), self.rules, now=time.time())
            try:
                await self._execute(key.uid, outcome, current.revision)
            except ConflictError:
                self.metrics.conflicts.inc()
                fresh = True
                continue
            label = outcome.reason if isinstance(outcome, owners.Skip) else (
                "write" if isinstance(outcome, owners.Write) else "delete")
            self.metrics.events.labels(event.kind, label).inc()
            return outcome
        raise RetryableError(f"owner {key.uid}: still conflicting after "
                             f"{_CONFLICT_ATTEMPTS} attempts")

    async def _execute(self, uid: str, outcome: owners.Outcome, revision: int) -> None:
        assert self.records is not None
        if isinstance(outcome, owners.Write):
            new_revision = await self.records.write(uid, outcome.record, revision=revision)
            if self._cache.get(uid, Versioned(None)).value is None:
                self.metrics.owners.inc()
            self._cache[uid] = Versioned(outcome.record, new_revision)
            self.metrics.kv_writes.labels("put").inc()
        elif isinstance(outcome, owners.Delete):
            had = self._cache.get(uid, Versioned(None)).value is not None
            await self.records.delete(uid, revision=revision)
            # the marker's revision is unknown here; a tombstone is never rewritten anyway
            self._cache[uid] = Versioned(None, 0, deleted=True)
            if had:
                self.metrics.owners.dec()
            self.metrics.kv_writes.labels("delete").inc()

    async def apply_marker(self, marker: RelistMarker) -> list[str]:
        """Apply a relist marker; at a completed relist, delete the owners it proved gone."""
        assert self.records is not None
        end = self.relists.marker(marker)
        if end is None:
            return []
        # read KV itself, not the cache: another tracker may have written what we have not
        snapshot = await self.records.snapshot()
        self._cache = snapshot
        live = {uid: v.value for uid, v in snapshot.items() if v.value is not None}
        gone = owners.dereferenced(end, live)
        for uid in gone:
            versioned = snapshot[uid]
            try:
                await self.records.delete(uid, revision=versioned.revision)
            except ConflictError:
                # changed since the snapshot: a newer event touched it, so it is not gone
                self.metrics.conflicts.inc()
                self._cache.pop(uid, None)
                continue
            self._cache[uid] = Versioned(None, 0, deleted=True)
            self.metrics.kv_writes.labels("delete").inc()
            self.metrics.dereferenced.labels(marker.kind).inc()
            log.info("tracker: %s %s not in relist %s; dereferenced", end.owner_kind, uid,
                     marker.relist)
        self.metrics.relists.labels(marker.kind).inc()
        self._count_owners()
        return gone

    def _count_owners(self) -> None:
        self.metrics.owners.set(sum(1 for v in self._cache.values() if v.value is not None))

    async def _purge_tombstones(self, stop: asyncio.Event) -> None:
        """Tombstones only guard against late events of deleted owners; drop old ones."""
        assert self.records is not None
        interval = self.settings.tombstone_seconds / 2
        while not await _stopped(stop, interval):
            try:
                await self.records.purge_tombstones(older_than=self.settings.tombstone_seconds)
            except RetryableError as exc:
                log.warning("tracker: %s", exc)


async def _stopped(stop: asyncio.Event, delay: float) -> bool:
    """Sleep `delay` unless stopped first; True when stopped. (asyncio.wait, not wait_for:
    Python 3.11's wait_for can swallow a cancellation, and a cancelled service must end.)"""
    if stop.is_set():
        return True
    waiter = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=delay)
    finally:
        waiter.cancel()
    return bool(done)
