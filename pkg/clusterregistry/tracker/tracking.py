"""The tracker's I/O: the relay's stream in, owner records in KV out.

Every tracker replica pulls from ONE shared durable consumer on
`clusterregistry.kube.>` (`subjects.TRACKER_CONSUMER`), so the replicas
split the stream between them, and a replica that dies leaves its
unacknowledged messages to the others (redelivered after `ack_wait`). The
tracker runs as a Deployment whose pods are renamed by every rollout and
scaled by an HPA: a consumer per pod would replay the whole stream for each
new pod and do all the work once per replica.

Each message is applied (`owners.handle`) and its KV write stored before it
is acked, so a crash redelivers whatever was not stored. A transient failure
(NATS away) is retried in place. Nothing relies on stream order between
replicas: records only grow while their owner lives, deletions are final
(tombstones), older owner states are stale, and every write names the
revision it was decided on, so the loser of a race re-reads and decides
again. Records are cached in memory, warmed from KV at start; other
replicas write too, so the cache only ever proposes: a write from a stale
entry conflicts and is decided again on a fresh read, and a skip decided on
an entry the cache holds as absent is checked against KV first.

Relists are concluded from shared state: each owner's own SYNC event marks
its record (`owners.handle`); the replica that gets the end marker waits
until the consumer's ack floor shows every earlier message applied (else it
naks the marker with a short delay, and NATS redelivers it to whichever
replica asks next), then reads the bucket and deletes what the relist did
not mark.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

import msgspec

from clusterregistry import schemas, subjects
from clusterregistry.bus.connecting import Bus
from clusterregistry.bus.keyvalues import Records, Versioned
from clusterregistry.bus.pulling import ConsumerSpec, Pulled, Puller
from clusterregistry.bus.streams import ensure_bucket
from clusterregistry.config import TrackerSettings
from clusterregistry.errors import ConflictError, RetryableError
from clusterregistry.runtime.lifecycle import sleep_unless_stopped
from clusterregistry.schemas import KubeEvent, OwnerRecord, RelistMarker
from clusterregistry.tracker import owners
from clusterregistry.tracker.metrics import TrackerMetrics

log = logging.getLogger(__name__)

_CONFLICT_ATTEMPTS = 10


# an end marker whose earlier messages are not all acked yet: looked at again after these
# (another replica may just be acking them), then put back for this long
_FLOOR_CHECKS: Final = (0.02, 0.05, 0.1)
_MARKER_DELAY: Final = 0.5


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
        self.identity = identity or "tracker"  # for logs: every replica reads one consumer
        self.puller = Puller(bus, ConsumerSpec(
            stream=subjects.KUBE_STREAM, durable=subjects.TRACKER_CONSUMER,
            filter_subject=subjects.KUBE_ALL, ack_wait=settings.ack_wait_seconds,
            max_ack_pending=settings.max_ack_pending))
        self.records: Records[OwnerRecord] | None = None
        self._cache: dict[str, Versioned[OwnerRecord]] = {}
        self.ready = False
        self.applied = 0  # messages acked, for tests and the bench

    # -- start ---------------------------------------------------------------------------------

    async def prepare(self) -> None:
        """The bucket, the consumer (the relay creates the stream), and the cache warmed."""
        bucket = await ensure_bucket(self.bus, name=subjects.REFS_BUCKET,
                                     replicas=self.stream_replicas)
        self.records = Records(bucket, schemas.owner_record_decoder.decode)
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
                if await sleep_unless_stopped(stop, delay):
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
                    if await sleep_unless_stopped(stop, 1.0):
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

    async def _process(self, messages: list[Pulled], stop: asyncio.Event) -> bool:
        """Apply a batch and ack it; False when stopped before all of it was stored.

        Events between two relist markers are applied concurrently across owners and in
        order within one owner (different owners' records are independent, and fewer
        conflicts this way); a marker waits for what this replica holds before it.
        """
        segment: list[tuple[Pulled, KubeEvent]] = []
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
                segment.append((msg, item))
                continue
            if not await self._apply_segment(segment, stop):
                return False
            segment = []
            concluded: list[bool] = []

            async def marker(item: RelistMarker = item, msg: Pulled = msg,
                             concluded: list[bool] = concluded) -> None:
                concluded.append(await self.apply_marker(
                    item, sequence=msg.stream_sequence) is not None)

            if not await self._retrying(marker, stop):
                return False
            if concluded[-1]:
                await msg.ack()
                self.applied += 1
            else:
                # messages before it are still out (with another replica, or to be
                # redelivered): NATS hands the marker out again shortly, and this replica
                # goes on with the rest, so whoever holds those messages can ack them
                self.metrics.relist_waits.inc()
                await msg.nak(delay=_MARKER_DELAY)
        return await self._apply_segment(segment, stop)

    async def _apply_segment(self, segment: list[tuple[Pulled, KubeEvent]],
                             stop: asyncio.Event) -> bool:
        groups: dict[str, list[tuple[KubeEvent, int]]] = {}
        for msg, event in segment:
            key = owners.owner_of(event)
            # the stream sequence only matters to a SYNC (the relist mark); parsing it from
            # the reply subject for every message costs measurably
            groups.setdefault(key.uid if key else "", []).append(
                (event, msg.stream_sequence if event.type == "SYNC" else 0))

        async def in_order(events: list[tuple[KubeEvent, int]]) -> bool:
            for event, sequence in events:
                if not await self._retrying(
                        functools.partial(self.apply, event, sequence=sequence), stop):
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
                if await sleep_unless_stopped(stop, delay):
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

    async def apply(self, event: KubeEvent, *, sequence: int = 0) -> owners.Outcome:
        """Apply one event (stream sequence `sequence`) to its owner's record, conflict-safe;
        the outcome."""
        assert self.records is not None
        key = owners.owner_of(event)
        if key is None:
            self.metrics.events.labels(event.kind, "not-tracked").inc()
            return owners.Skip("not-tracked")
        fresh = False
        for _ in range(_CONFLICT_ATTEMPTS):
            current = await self._read(key.uid, fresh=fresh)
            outcome = owners.handle(event, _stored(current), self.rules, now=time.time(),
                                    sequence=sequence)
            if (isinstance(outcome, owners.Skip) and not fresh and current.value is None
                    and not current.deleted):
                # nothing to write because the cache holds no record: another replica may
                # have created it since (the template counts once a pod appeared)
                fresh = True
                continue
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

    async def apply_marker(self, marker: RelistMarker, *, sequence: int
                           ) -> list[str] | None:
        """Apply a relist marker (stream sequence `sequence`): at the end of a relist, delete
        the owners it proved gone. None: not yet, messages before it are not all applied."""
        assert self.records is not None
        end = owners.relist_end(marker, sequence=sequence)
        if end is None:
            return []  # a begin: the relist's state is the marks its SYNC events leave
        if not await self._all_acked_before(sequence):
            return None
        # the bucket, not the cache: the other replicas wrote most of this relist's marks
        snapshot = await self.records.snapshot()
        self._cache = snapshot
        live = {uid: v.value for uid, v in snapshot.items() if v.value is not None}
        gone = []
        for uid in owners.dereferenced(end, live):
            if await self._dereference(uid, end, snapshot[uid]):
                gone.append(uid)
                log.info("tracker %s: %s %s not in relist %s; dereferenced", self.identity,
                         end.owner_kind, uid, marker.relist)
        self.metrics.relists.labels(marker.kind).inc()
        self._count_owners()
        return gone

    async def _dereference(self, uid: str, end: owners.RelistEnd,
                           versioned: Versioned[OwnerRecord]) -> bool:
        """Delete a record the relist proved gone, unless a change since says otherwise."""
        assert self.records is not None
        for _ in range(_CONFLICT_ATTEMPTS):
            if versioned.value is None or not owners.dereferenced(end, {uid: versioned.value}):
                return False  # deleted meanwhile, or changed after the relist: not proof
            try:
                await self.records.delete(uid, revision=versioned.revision)
            except ConflictError:
                self.metrics.conflicts.inc()
                versioned = await self._read(uid, fresh=True)
                continue
            self._cache[uid] = Versioned(None, 0, deleted=True)
            self.metrics.kv_writes.labels("delete").inc()
            self.metrics.dereferenced.labels(end.owner_kind.lower()).inc()
            return True
        raise RetryableError(f"owner {uid}: still conflicting after {_CONFLICT_ATTEMPTS} "
                             "attempts")

    async def _all_acked_before(self, sequence: int) -> bool:
        """Whether every message before stream sequence `sequence` is acked (the consumer's
        ack floor): applied by some replica, so their marks are in KV."""
        for pause in (0.0, *_FLOOR_CHECKS):
            if pause:
                await asyncio.sleep(pause)
            # asked after this replica's acks on the same connection; the server may still
            # be processing those, hence a few looks before putting the marker back
            if await self.puller.ack_floor() >= sequence - 1:
                return True
        return False

    def _count_owners(self) -> None:
        self.metrics.owners.set(sum(1 for v in self._cache.values() if v.value is not None))

    async def _purge_tombstones(self, stop: asyncio.Event) -> None:
        """Tombstones only guard against late events of deleted owners; drop old ones."""
        assert self.records is not None
        interval = self.settings.tombstone_seconds / 2
        while not await sleep_unless_stopped(stop, interval):
            try:
                await self.records.purge_tombstones(older_than=self.settings.tombstone_seconds)
            except RetryableError as exc:
                log.warning("tracker: %s", exc)
