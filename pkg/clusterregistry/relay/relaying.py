"""The relay's I/O: list, watch, publish, checkpoint, and lead.

Per kind, a watch loop publishes the events into a bounded window of
unacknowledged messages (bus.publishing.Pipeline), a batch at a time (what
one read of the watch stream brought, or one relist page), and a second task
takes the acks in send order. A full window blocks the watch loop, so a slow or
absent NATS stops the relay reading the watch instead of buffering without
bound; kube-apiserver may then end the watch, and the relay resumes from the
last resourceVersion it sent, or relists on 410 Gone.

Checkpoints: as acks arrive, the newest resourceVersion among them
that is safe to resume from (a watch event's, a bookmark's, or the list's at
a relist's end marker) is written to KV. A restart watches from there; the
API server replays what followed, and whatever of that was already published
comes back as a duplicate ack (Nats-Msg-Id), not as a second message.

Leading: only the holder of the `clusterregistry-relay` Lease relays. A
single writer keeps relists and their markers coherent; failover resumes
from the shared checkpoints, so nothing is lost, and the duplicate window
absorbs the overlap.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

from clusterregistry import schemas, subjects
from clusterregistry.bus.connecting import Bus
from clusterregistry.bus.keyvalues import Records
from clusterregistry.bus.publishing import Outgoing, Pipeline
from clusterregistry.bus.streams import ensure_bucket, ensure_stream
from clusterregistry.config import RelaySettings
from clusterregistry.errors import RetryableError
from clusterregistry.kinds import WATCHED
from clusterregistry.kube.clients import ApiClient
from clusterregistry.kube.leasing import LeaderElector
from clusterregistry.kube.objects import KubeObject
from clusterregistry.kube.watching import (
    GoneError,
    ResourceMissingError,
    Target,
    WatchEvent,
    list_page,
    watch,
)
from clusterregistry.relay import translating
from clusterregistry.relay.metrics import KindMetrics, RelayMetrics
from clusterregistry.runtime.lifecycle import cancel_and_wait, sleep_unless_stopped

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Item:
    """One entry of a kind's publish window: a message and/or a resume point."""

    outgoing: Outgoing | None
    resume_rv: str | None
    received: float
    event_type: str = ""


Batch = list[tuple[Outgoing | None, Item]]


class Relay:
    def __init__(
        self,
        *,
        api: ApiClient,
        bus: Bus,
        settings: RelaySettings,
        namespace: str,
        identity: str,
        stream_replicas: int = 1,
        metrics: RelayMetrics | None = None,
        kinds: tuple[str, ...] = tuple(WATCHED),
    ) -> None:
        self.api = api
        self.bus = bus
        self.settings = settings
        self.identity = identity
        self.stream_replicas = stream_replicas
        self.metrics = metrics or RelayMetrics()
        self.kinds = kinds
        self.elector = LeaderElector(
            api, namespace=namespace, name=subjects.RELAY_LEASE, identity=identity,
            lease_duration=settings.lease_duration_seconds,
            renew_deadline=settings.renew_deadline_seconds,
            retry_period=settings.retry_period_seconds,
        )
        self._checkpoints: Records[schemas.Checkpoint] | None = None
        self._kind_metrics = {kind: KindMetrics(self.metrics, kind) for kind in kinds}
        self.ready = False

    async def prepare(self) -> None:
        """The stream and the checkpoint bucket, created or updated to our settings."""
        await ensure_stream(
            self.bus, name=subjects.KUBE_STREAM, subjects=[subjects.KUBE_ALL],
            replicas=self.stream_replicas, max_age=self.settings.stream_max_age_seconds,
            duplicate_window=self.settings.duplicate_window_seconds,
        )
        bucket = await ensure_bucket(self.bus, name=subjects.RELAY_BUCKET,
                                     replicas=self.stream_replicas)
        self._checkpoints = Records(bucket, schemas.checkpoint_decoder.decode)
        self.ready = True

    async def run(self, stop: asyncio.Event) -> None:
        """Stand by, lead, relay; until `stop` is set."""
        while not self._checkpoints:
            try:
                await self.prepare()
            except RetryableError as exc:
                log.warning("relay cannot prepare NATS: %s", exc)
                if await sleep_unless_stopped(stop, 2.0):
                    return
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                acquiring = asyncio.create_task(self.elector.acquire())
                await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if stop.is_set():
                    await cancel_and_wait(acquiring)
                    break
                self.metrics.leader.set(1)
                log.info("relay %s leads", self.identity)
                tasks = {asyncio.create_task(self._relay_kind(kind), name=f"relay-{kind}")
                         for kind in self.kinds}
                keeping = asyncio.create_task(self.elector.keep())
                try:
                    done, _ = await asyncio.wait({*tasks, keeping, stopping},
                                                 return_when=asyncio.FIRST_COMPLETED)
                    for task in done & tasks:
                        if task.exception() is not None:
                            raise task.exception()  # type: ignore[misc]
                finally:
                    await cancel_and_wait(*tasks, keeping)
                    self.metrics.leader.set(0)
                if not stop.is_set():
                    log.warning("relay %s lost the lease; standing by", self.identity)
        finally:
            stopping.cancel()
            await self.elector.release()

    # -- one kind ------------------------------------------------------------------------------

    async def _relay_kind(self, kind: str) -> None:
        metrics = self._kind_metrics[kind]
        pipeline: Pipeline[Item] = Pipeline(
            self.bus, window=self.settings.queue_size,
            on_retry=lambda _exc: metrics.publish_retries.inc())
        watcher = asyncio.create_task(self._watch_loop(kind, pipeline), name=f"watch-{kind}")
        acking = asyncio.create_task(self._ack_loop(kind, pipeline), name=f"acks-{kind}")
        try:
            done, _ = await asyncio.wait({watcher, acking}, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            await cancel_and_wait(watcher, acking)
            await pipeline.close()

    async def _load_checkpoint(self, kind: str) -> str | None:
        assert self._checkpoints is not None
        while True:
            try:
                current = await self._checkpoints.read(kind)
            except RetryableError as exc:
                log.warning("reading the %s checkpoint: %s", kind, exc)
                await asyncio.sleep(1.0)  # NATS unavailable: the checkpoint decides everything
                continue
            # none, deleted or unreadable (Records logs it): relist
            if current.value is None:
                return None
            return current.value.resource_version or None

    async def _save_checkpoint(self, kind: str, rv: str) -> None:
        assert self._checkpoints is not None
        checkpoint = schemas.Checkpoint(kind=kind,  # type: ignore[arg-type]
                                        resource_version=rv, updated=time.time())
        try:
            # the last writer wins: only the Lease holder writes, and a checkpoint older than
            # what was sent only makes a restart replay more (duplicates the window absorbs)
            await self._checkpoints.put(kind, checkpoint)
        except RetryableError as exc:  # the next batch writes a newer one; a restart replays more
            log.warning("writing the %s checkpoint: %s", kind, exc)

    async def _watch_loop(self, kind: str, pipeline: Pipeline[Item]) -> None:
        target = Target(*WATCHED[kind])
        rv = await self._load_checkpoint(kind)
        delay = 0.2
        missing_logged = False
        while True:
            try:
                if rv is None:
                    rv = await self._relist(kind, target, pipeline)
                async for events in watch(self.api, target, resource_version=rv,
                                          object_type=translating.object_type(kind),
                                          timeout_seconds=self.settings.watch_timeout_seconds):
                    rv = await self._enqueue_watched(kind, events, pipeline, rv)
                    delay = 0.2
                self._kind_metrics[kind].watch_restarts.inc()
            except GoneError as exc:
                log.info("%s: %s; relisting", kind, exc)
                self._kind_metrics[kind].gone.inc()
                rv = None
            except ResourceMissingError as exc:
                if not missing_logged:
                    log.info("%s not served (yet): %s; retrying every %.0fs", kind, exc,
                             self.settings.missing_resource_retry_seconds)
                    missing_logged = True
                rv = None
                await asyncio.sleep(self.settings.missing_resource_retry_seconds)
            except RetryableError as exc:
                log.warning("%s watch: %s; resuming in %.1fs", kind, exc, delay)
                self._kind_metrics[kind].watch_restarts.inc()
                await asyncio.sleep(delay)  # back-off before re-watching the API server
                delay = min(delay * 2, 10.0)

    async def _enqueue_watched(self, kind: str, events: list[WatchEvent[KubeObject]],
                               pipeline: Pipeline[Item], rv: str) -> str:
        """Publish a batch of watch events; return the newest resourceVersion among them."""
        batch: Batch = []
        received = time.monotonic()
        counts: dict[str, int] = {}
        for event in events:
            obj = event.object
            if obj is None:  # a BOOKMARK: a resume point, nothing to publish
                rv = event.resource_version or rv
                batch.append((None, Item(None, rv, received)))
                continue
            counts[event.type] = counts.get(event.type, 0) + 1
            rv = self._prepare(kind, event.type, obj, batch, received) or rv
        self._count_received(kind, counts)
        await self._send(pipeline, batch)
        return rv

    def _count_received(self, kind: str, counts: dict[str, int]) -> None:
        received = self._kind_metrics[kind].received
        for event_type, count in counts.items():
            received[event_type].inc(count)

    def _prepare(self, kind: str, event_type: str, obj: KubeObject, batch: Batch,
                 received: float, *, relist: str = "") -> str:
        """Translate one object into `batch`; return its resourceVersion."""
        event = translating.translate(kind, event_type, obj, relist=relist)
        outgoing, oversized = translating.message(event, max_payload=self.bus.max_payload)
        if oversized:
            self._kind_metrics[kind].oversized.inc()
            log.warning(
                "%s %s/%s (uid %s, rv %s) exceeds the NATS max payload of %d bytes; published "
                "without its state, marked oversized", kind, event.namespace, event.name,
                event.uid, event.resource_version, self.bus.max_payload)
        resume = None if relist else event.resource_version
        batch.append((outgoing, Item(outgoing, resume, received, event_type)))
        return event.resource_version

    async def _relist(self, kind: str, target: Target, pipeline: Pipeline[Item]) -> str:
        """Publish begin, a SYNC event per live object, end; return the list's version."""
        self._kind_metrics[kind].relists.inc()
        relist_id = uuid.uuid4().hex[:16]
        view = translating.object_type(kind)
        items, list_rv, token = await list_page(self.api, target, object_type=view,
                                                limit=self.settings.batch_size)
        log.info("%s relist %s at resourceVersion %s", kind, relist_id, list_rv)
        begin = translating.marker(schemas.RelistMarker(
            kind=kind, phase="begin", relist=relist_id,  # type: ignore[arg-type]
            resource_version=list_rv))
        batch: Batch = [(begin, Item(begin, None, time.monotonic()))]
        count = 0
        while True:
            received = time.monotonic()
            for obj in items:
                self._prepare(kind, "SYNC", obj, batch, received, relist=relist_id)
            self._count_received(kind, {"SYNC": len(items)})
            count += len(items)
            await self._send(pipeline, batch)
            batch = []
            if not token:
                break
            # every page comes from the first page's snapshot; an expired token is 410
            # and the whole relist starts over under a new id
            items, _, token = await list_page(self.api, target, object_type=view,
                                              limit=self.settings.batch_size,
                                              continue_token=token)
        end = translating.marker(schemas.RelistMarker(
            kind=kind, phase="end", relist=relist_id,  # type: ignore[arg-type]
            resource_version=list_rv, count=count))
        await self._send(pipeline, [(end, Item(end, list_rv, time.monotonic()))])
        return list_rv

    @staticmethod
    async def _send(pipeline: Pipeline[Item], batch: Batch) -> None:
        # blocks while the window is full or a resend is under way: back-pressure on the watch
        await pipeline.send_many(batch)

    async def _ack_loop(self, kind: str, pipeline: Pipeline[Item]) -> None:
        """Acks in send order: metrics, and a checkpoint at most every quarter second (and
        whenever the pipeline runs dry), so checkpoints never cost a write per event."""
        metrics = self._kind_metrics[kind]
        observe_lag = metrics.lag_seconds.observe
        observe_publish = metrics.publish_seconds.observe
        loop = asyncio.get_running_loop()
        resume: str | None = None
        last_write = 0.0
        while True:
            batch = await pipeline.acked()
            now, loop_now = time.monotonic(), loop.time()
            published: dict[str, int] = {}
            duplicates = 0
            # publish latency once per batch of acks, for its oldest send: per event it would
            # cost more than the rest of the ack handling
            observe_publish(loop_now - batch[0].sent)
            for acked in batch:
                item = acked.token
                if item.outgoing is not None:
                    observe_lag(now - item.received)
                    event_type = item.event_type or "MARKER"
                    published[event_type] = published.get(event_type, 0) + 1
                    duplicates += acked.duplicate
                if item.resume_rv is not None:
                    resume = item.resume_rv
            for event_type, count in published.items():
                metrics.published[event_type].inc(count)
            metrics.queue_depth.set(len(pipeline))
            if duplicates:
                metrics.duplicates.inc(duplicates)
            if resume is not None and (len(pipeline) == 0
                                       or time.monotonic() - last_write > 0.25):
                await self._save_checkpoint(kind, resume)
                resume = None
                last_write = time.monotonic()
