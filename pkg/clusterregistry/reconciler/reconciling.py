"""The reconciler's I/O: refs and Artifact events in, Artifacts, mirror requests and KV out.

A work queue of Artifact names, as Kubernetes controllers have: anything
that may change what an Artifact should say marks its name dirty (an owner
record changing in KV `clusterregistry-refs`, an Artifact changed by someone
else, a mirror result, a timer for a retry, a timeout or a refresh, and a
periodic resync of everything). A pass takes up to `batchSize` names and
reconciles each with one decision (`statuses.plan`) and at most one write,
`concurrency` at a time, so a thousand owners appearing at once become a
steady trickle of writes, not a burst against the API server.

Truth is the API server: the Artifact cache holds what this process last
read or wrote; an Artifact event from the relay with a newer resourceVersion
(another writer: GC, another reconciler) makes the next pass read it again,
and every write carries the resourceVersion it was decided on, so a lost
race is a 409 and a new decision, never an overwrite. The KV record of each
Artifact follows its status; it is written only while the Artifact exists
and is not being deleted, so a record GC removed is never brought back by
a stale cache.

A running copy's progress comes over core NATS (`MirrorProgress`, the
replicas in one queue group): only the newest per Artifact is kept, and a
loop of its own writes it with the same resourceVersion-checked status patch
(`statuses.on_progress` decides, at most once per `progressIntervalSeconds`
per Artifact). It is a display: losing one costs nothing, so a failed write
is dropped, not retried; the next message or the result brings the status on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

from clusterregistry import references, schemas, subjects
from clusterregistry.bus.announcing import Listener
from clusterregistry.bus.connecting import Bus
from clusterregistry.bus.keyvalues import Records, Versioned, watch_bucket
from clusterregistry.bus.pulling import ConsumerSpec, Pulled, Puller
from clusterregistry.bus.streams import ensure_bucket, ensure_stream, publish
from clusterregistry.config import ReconcilerSettings
from clusterregistry.errors import (
    ConflictError,
    NotFoundError,
    PermanentError,
    RetryableError,
)
from clusterregistry.kube.artifacts import Artifacts, reference_of
from clusterregistry.kube.clients import ApiClient
from clusterregistry.kube.events import EventRecorder, source_for
from clusterregistry.reconciler import statuses
from clusterregistry.reconciler.metrics import ReconcilerMetrics
from clusterregistry.runtime.lifecycle import cancel_and_wait, sleep_unless_stopped
from clusterregistry.runtime.running import identity as default_identity
from clusterregistry.schemas import ArtifactRecord, MirrorProgress, MirrorResult, OwnerRecord

log = logging.getLogger(__name__)

_RESULT_ATTEMPTS = 5
_EVENTS_INACTIVE_SECONDS = 3600.0


def consumer_name(base: str, identity: str | None) -> str:
    return f"{base}-{identity}" if identity else base


def _rv(artifact: dict[str, Any] | None) -> int:
    try:
        return int(((artifact or {}).get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class Reconciler:
    def __init__(
        self,
        *,
        api: ApiClient,
        bus: Bus,
        settings: ReconcilerSettings,
        local_registry: str,
        identity: str | None = None,
        stream_replicas: int = 1,
        metrics: ReconcilerMetrics | None = None,
        rand: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        record_events: bool = True,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.stream_replicas = stream_replicas
        self.metrics = metrics or ReconcilerMetrics()
        self.rand = rand or random.Random()
        self.clock = clock
        self.artifacts = Artifacts(api)
        # Events on the Artifacts (Mirrored, MirrorFailed, Refreshed), written in the
        # background: never a wait or a failure for reconciling
        self.recorder: EventRecorder | None = EventRecorder(
            api, source_for("reconciler", identity or default_identity()),
            count=lambda outcome: self.metrics.events.labels(outcome).inc(),
        ) if record_events else None
        self.rules = statuses.Rules(
            local_registry=local_registry, mirror_timeout=settings.mirror_timeout_seconds,
            retry_initial=settings.retry_initial_seconds, retry_max=settings.retry_max_seconds,
            retry_jitter=settings.retry_jitter,
            refresh_interval=settings.refresh_interval_seconds,
            owners_listed=settings.owners_listed,
            progress_interval=settings.progress_interval_seconds)
        # each reconciler sees every Artifact event (its cache must hear of GC's changes);
        # results are shared work: whichever reconciler takes one applies it
        self.events = Puller(bus, ConsumerSpec(
            stream=subjects.KUBE_STREAM,
            durable=consumer_name(subjects.RECONCILER_ARTIFACTS_CONSUMER, identity),
            filter_subject=subjects.kube_kind("artifact"), deliver_new=True,
            max_ack_pending=1000, ack_wait=settings.ack_wait_seconds,
            # a replica that is gone leaves nothing behind (it lists everything at start)
            inactive_threshold=_EVENTS_INACTIVE_SECONDS if identity else 0.0))
        self.results = Puller(bus, ConsumerSpec(
            stream=subjects.MIRROR_STREAM, durable=subjects.RECONCILER_RESULTS_CONSUMER,
            filter_subject=subjects.MIRROR_RESULT_ALL, max_ack_pending=1000,
            ack_wait=settings.ack_wait_seconds))
        # running copies' progress: core NATS, one replica of the queue group gets each
        self.progress = Listener(bus, subjects.MIRROR_PROGRESS_ALL,
                                 queue=subjects.RECONCILER_PROGRESS_QUEUE,
                                 handle=self._on_progress)
        self._progress: dict[str, MirrorProgress] = {}  # Artifact name -> newest not applied
        self._progress_ready = asyncio.Event()
        self._progress_patched: dict[str, float] = {}  # Artifact name -> when, self.clock
        self.records: Records[ArtifactRecord] | None = None
        self.refs: Records[OwnerRecord] | None = None
        # state
        self.cache: dict[str, dict[str, Any]] = {}  # Artifact name -> object as last seen
        self._stale: set[str] = set()  # names to read again before deciding
        self._kv_cache: dict[str, Versioned[ArtifactRecord]] = {}
        self.owners: dict[str, OwnerRecord] = {}  # owner uid -> record
        self._revisions: dict[str, int] = {}  # owner uid -> KV revision held
        self.by_source: dict[str, set[str]] = {}  # canonical source -> owner uids
        self._names: dict[str, str] = {}  # canonical source -> Artifact name
        self._sources: dict[str, str] = {}  # Artifact name -> canonical source
        self._unmappable: set[str] = set()
        self.dirty: set[str] = set()
        self.timers: dict[str, float] = {}
        self._wakeup = asyncio.Event()
        self.ready = False
        self.refs_loaded = False

    # -- start ---------------------------------------------------------------------------------

    async def prepare(self) -> None:
        bus = self.bus
        await ensure_stream(bus, name=subjects.MIRROR_STREAM,
                            subjects=list(subjects.MIRROR_STREAM_SUBJECTS),
                            replicas=self.stream_replicas,
                            max_age=7 * 24 * 3600.0,
                            duplicate_window=max(120.0, self.settings.mirror_timeout_seconds),
                            work_queue=True)
        refs = await ensure_bucket(bus, name=subjects.REFS_BUCKET, replicas=self.stream_replicas)
        self.refs = Records(refs, schemas.owner_record_decoder.decode)
        artifacts = await ensure_bucket(bus, name=subjects.ARTIFACTS_BUCKET,
                                        replicas=self.stream_replicas)
        self.records = Records(artifacts, schemas.artifact_record_decoder.decode)
        await self.events.start()
        await self.results.start()
        if self.settings.progress_interval_seconds > 0:
            await self.progress.start()
        await self._relist_artifacts()
        self._kv_cache = await self.records.snapshot()
        self.ready = True

    async def _relist_artifacts(self) -> None:
        listed = await self.artifacts.list()
        self.cache = {a["metadata"]["name"]: a for a in listed}
        self._stale.clear()
        for name, artifact in self.cache.items():
            source = (artifact.get("spec") or {}).get("sourceArtifact")
            if source:
                self._sources.setdefault(name, source)
        self._count_phases()

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.5
        while not self.ready:
            try:
                await self.prepare()
            except (RetryableError, PermanentError) as exc:
                log.warning("reconciler cannot start yet: %s", exc)
                if await sleep_unless_stopped(stop, delay):
                    return
                delay = min(delay * 2, 10.0)
        loops: list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = [
            self._watch_refs, self._consume_events, self._consume_results,
            self._reconcile_loop, self._resync_loop, self._progress_loop]
        if self.recorder is not None:
            self.recorder.start()
        tasks = [asyncio.create_task(loop(stop), name=loop.__name__) for loop in loops]
        stopping = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait({*tasks, stopping}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopping and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            await cancel_and_wait(*tasks, stopping)
            await self.events.stop()
            await self.results.stop()
            await self.progress.stop()
            if self.recorder is not None:
                await self.recorder.stop()

    # -- inputs --------------------------------------------------------------------------------

    def mark(self, name: str) -> None:
        self.dirty.add(name)
        self._wakeup.set()

    def _name_of(self, source: str) -> str | None:
        name = self._names.get(source)
        if name is None and source not in self._unmappable:
            try:
                statuses.local_of(source, self.rules.local_registry)
                name = references.artifact_name(references.parse(source))
            except references.InvalidReferenceError as exc:
                log.warning("source %s cannot be mirrored: %s", source, exc)
                self._unmappable.add(source)
                return None
            self._names[source] = name
            self._sources[name] = source
        return name

    def set_owner(self, uid: str, record: OwnerRecord | None) -> None:
        """Apply one owner record (None: deleted) to the source -> owners index."""
        old = self.owners.pop(uid, None)
        touched = set(old.images) if old else set()
        if old:
            for source in old.images:
                owners = self.by_source.get(source)
                if owners is not None:
                    owners.discard(uid)
                    if not owners:
                        del self.by_source[source]
        if record is not None:
            self.owners[uid] = record
            for source in record.images:
                self.by_source.setdefault(source, set()).add(uid)
            touched |= set(record.images)
        for source in touched:
            name = self._name_of(source)
            if name is not None:
                self.mark(name)
        self.metrics.references.set(sum(len(o) for o in self.by_source.values()))

    def _apply_ref(self, uid: str, versioned: Versioned[OwnerRecord]) -> None:
        """One key's state, unless what is held is newer (a resync's snapshot may be older
        than what the watch delivered meanwhile)."""
        if versioned.revision and versioned.revision <= self._revisions.get(uid, 0):
            return
        self._revisions[uid] = versioned.revision
        if self.owners.get(uid) != versioned.value:
            self.set_owner(uid, versioned.value)

    def _apply_refs(self, snapshot: dict[str, Versioned[OwnerRecord]]) -> None:
        """A whole bucket's state: keys it lacks were purged, unless written after it."""
        newest = max((v.revision for v in snapshot.values()), default=0)
        for uid in set(self.owners) - set(snapshot):
            if self._revisions.get(uid, 0) <= newest:
                self.set_owner(uid, None)
        for uid, versioned in snapshot.items():
            self._apply_ref(uid, versioned)

    async def _watch_refs(self, stop: asyncio.Event) -> None:
        """Every owner record, then every change, from an ordered watch of the bucket."""
        refs = self.refs
        assert refs is not None
        while not stop.is_set():
            initial: dict[str, Versioned[OwnerRecord]] = {}
            loading = True
            try:
                async with contextlib.aclosing(watch_bucket(
                        self.bus, subjects.REFS_BUCKET, stop=stop, poll=1.0)) as changes:
                    async for change in changes:
                        if change is None:
                            if loading:
                                self._apply_refs(initial)
                                loading = False
                                self.refs_loaded = True
                                # owners may have gone while no reconciler ran: recount them
                                for name in list(self.cache):
                                    self.mark(name)
                            continue
                        versioned = refs.versioned(change)
                        if loading:
                            initial[change.key] = versioned
                        else:
                            self._apply_ref(change.key, versioned)
                return
            except RetryableError as exc:  # the watch broke (NATS restarted): load it all again
                log.warning("reconciler: watching %s: %s; watching again", subjects.REFS_BUCKET,
                            exc)
                if await sleep_unless_stopped(stop, 1.0):
                    return

    async def _consume_events(self, stop: asyncio.Event) -> None:
        """Artifact events: whatever another writer changed is read again before deciding."""
        while not stop.is_set():
            try:
                messages = await self.events.fetch(256, timeout=1.0)
            except RetryableError as exc:
                log.warning("reconciler: %s", exc)
                if await sleep_unless_stopped(stop, 1.0):
                    return
                continue
            for msg in messages:
                if not msg.subject.endswith("._relist"):
                    try:
                        event = schemas.kube_event_decoder.decode(msg.data)
                    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                        log.error("reconciler: undecodable %s: %s", msg.subject, exc)
                        await msg.term()
                        continue
                    self._on_artifact_event(event)
                await msg.ack()

    def _on_artifact_event(self, event: schemas.KubeEvent) -> None:
        cached = self.cache.get(event.name)
        try:
            event_rv = int(event.resource_version)
        except ValueError:
            event_rv = 0
        if event.type == "DELETED":
            if cached is not None and cached["metadata"].get("uid") == event.uid:
                self._stale.add(event.name)
        elif cached is None or event_rv > _rv(cached):
            self._stale.add(event.name)  # someone else's write (ours come back equal)
        else:
            return
        source = (event.artifact.spec.get("sourceArtifact") if event.artifact else None)
        if isinstance(source, str) and source:
            self._sources.setdefault(event.name, source)
        self.mark(event.name)

    async def _consume_results(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                messages = await self.results.fetch(64, timeout=1.0)
            except RetryableError as exc:
                log.warning("reconciler: %s", exc)
                if await sleep_unless_stopped(stop, 1.0):
                    return
                continue
            for msg in messages:
                await self._result_message(msg)

    async def _result_message(self, msg: Pulled) -> None:
        try:
            result = schemas.mirror_result_decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.error("reconciler: undecodable mirror result on %s: %s", msg.subject, exc)
            await msg.term()
            return
        try:
            outcome = await self.apply_result(result)
        except RetryableError as exc:
            log.warning("reconciler: applying a result for %s: %s", result.artifact, exc)
            await msg.nak(delay=exc.delay or 2.0)
            return
        except PermanentError as exc:
            log.error("reconciler: result for %s cannot be applied: %s", result.artifact, exc)
            await msg.term()
            return
        self.metrics.mirror_results.labels(outcome).inc()
        await msg.ack()

    async def apply_result(self, result: MirrorResult) -> str:
        """Store a mirror result in its Artifact's status; 'ok', 'failed' or 'stale'."""
        name = result.artifact
        fresh = False
        for _ in range(_RESULT_ATTEMPTS):
            artifact = await self._current(name)
            if artifact is None:
                return "stale"
            patch = statuses.on_result(result, artifact, now=self.clock(), rules=self.rules,
                                       rand=self.rand)
            if patch is None:
                if not fresh:
                    # the cache may be behind (another reconciler made this request): a
                    # result is only dropped as stale against what the API server holds
                    fresh = True
                    self._stale.add(name)
                    continue
                return "stale"
            written = await self._write_status(name, artifact, patch)
            if written is None:
                return "stale"
            if not written:
                continue
            self._progress_patched.pop(name, None)
            if self.recorder is not None:
                involved = reference_of(artifact)
                for note in statuses.notes_for_result(result, artifact, patch):
                    self.recorder.record(involved, note.type, note.reason, note.message)
            self.mark(name)  # the KV record, and the next timer
            return "ok" if result.ok else "failed"
        raise RetryableError(f"artifact {name}: still conflicting", delay=1.0)

    # -- progress ------------------------------------------------------------------------------

    def _on_progress(self, subject: str, data: bytes) -> None:
        """Keep the newest progress per Artifact for the loop; nothing else (the handler
        runs in the subscription's own task, one message at a time)."""
        try:
            progress = schemas.mirror_progress_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("reconciler: undecodable progress on %s: %s", subject, exc)
            return
        held = self._progress.get(progress.artifact)
        if held is None or (held.generation, held.time) <= (progress.generation, progress.time):
            self._progress[progress.artifact] = progress
            self._progress_ready.set()

    async def _progress_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not self._progress:
                self._progress_ready.clear()
                await sleep_unless_stopped(self._progress_ready, 1.0)
                continue
            pending, self._progress = self._progress, {}
            for progress in pending.values():
                try:
                    await self.apply_progress(progress)
                except (RetryableError, PermanentError) as exc:
                    # a display only: the next message, or the result, brings it on
                    log.info("reconciler: progress of %s not written: %s", progress.artifact,
                             exc)
            # an entry older than the interval limits nothing any more
            horizon = self.clock() - self.rules.progress_interval
            for name, when in list(self._progress_patched.items()):
                if when < horizon:
                    del self._progress_patched[name]

    async def apply_progress(self, progress: MirrorProgress) -> str:
        """Write a running copy's progress to its Artifact's status, if `on_progress` calls
        for it: 'written', or 'skipped' (rate-limited, not Mirroring, another generation,
        nothing new, no such Artifact)."""
        name = progress.artifact
        for _ in range(2):  # a conflict: read again (a result may have landed), decide again
            artifact = await self._current(name)
            if artifact is None:
                return "skipped"
            now = self.clock()
            patch = statuses.on_progress(progress, artifact, now=now, rules=self.rules,
                                         last_patched=self._progress_patched.get(name))
            if patch is None:
                return "skipped"
            written = await self._write_status(name, artifact, patch)
            if written is None:
                return "skipped"
            if not written:
                continue
            self._progress_patched[name] = now
            return "written"
        return "skipped"

    # -- the work queue ------------------------------------------------------------------------

    async def _resync_loop(self, stop: asyncio.Event) -> None:
        """Level-based: every Artifact and every owner record read again, all reconciled
        (a watch that silently stopped, an event lost, cannot leave a status wrong for long)."""
        refs = self.refs
        assert refs is not None
        while not await sleep_unless_stopped(stop, self.settings.resync_seconds):
            try:
                await self._relist_artifacts()
                snapshot = await refs.snapshot()
            except (RetryableError, PermanentError) as exc:
                log.warning("reconciler resync: %s", exc)
                continue
            self._apply_refs(snapshot)
            for name in {*self.cache, *self._names.values()}:
                self.mark(name)

    async def _reconcile_loop(self, stop: asyncio.Event) -> None:
        semaphore = asyncio.Semaphore(self.settings.concurrency)

        async def one(name: str) -> None:
            async with semaphore:
                await self.reconcile(name)

        while not stop.is_set():
            now = self.clock()
            for name, due in list(self.timers.items()):
                if due <= now:
                    del self.timers[name]
                    self.dirty.add(name)
            self.metrics.queue_depth.set(len(self.dirty))
            if not self.dirty or not self.refs_loaded:
                self._wakeup.clear()
                soonest = min(self.timers.values(), default=now + 1.0)
                await sleep_unless_stopped(self._wakeup, max(0.01, min(soonest - now, 1.0)))
                continue
            batch = sorted(self.dirty)[: self.settings.batch_size]
            self.dirty.difference_update(batch)
            await asyncio.gather(*(one(name) for name in batch))
            self._count_phases()

    async def _write_status(self, name: str, artifact: dict[str, Any],
                            patch: dict[str, Any]) -> bool | None:
        """Patch the status at the resourceVersion read: True written; False lost to a
        concurrent writer (409: read again, decide again); None when the Artifact is gone."""
        try:
            self.cache[name] = await self.artifacts.patch_status(
                name, patch, resource_version=artifact["metadata"]["resourceVersion"])
        except ConflictError:
            self.metrics.conflicts.inc()
            self._stale.add(name)
            return False
        except NotFoundError:
            self._stale.add(name)
            return None
        self.metrics.api_writes.labels("status").inc()
        return True

    async def _current(self, name: str) -> dict[str, Any] | None:
        """The Artifact as last seen, read again when someone else changed it."""
        if name in self._stale:
            found = await self.artifacts.get(name)
            self._stale.discard(name)
            if found is None:
                self.cache.pop(name, None)
            else:
                self.cache[name] = found
        return self.cache.get(name)

    def desired(self, name: str) -> statuses.Desired | None:
        source = self._sources.get(name)
        if source is None:
            return None
        uids = self.by_source.get(source, set())
        return statuses.Desired(source, tuple(self.owners[u] for u in sorted(uids)))

    async def reconcile(self, name: str) -> statuses.Plan | None:
        """One decision and at most one write for one Artifact."""
        started = time.perf_counter()
        plan: statuses.Plan | None = None
        try:
            desired = self.desired(name)
            artifact = await self._current(name)
            if desired is None:
                if artifact is None:
                    await self._sync_record(name)
                    return None
                source = (artifact.get("spec") or {}).get("sourceArtifact", "")
                desired = statuses.Desired(source)
            plan = statuses.plan(desired=desired, artifact=artifact, now=self.clock(),
                                 rules=self.rules, rand=self.rand)
            if plan.create is not None:
                try:
                    self.cache[name] = await self.artifacts.create(plan.create)
                except ConflictError:  # created by another reconciler: read it, decide again
                    self._stale.add(name)
                    self.mark(name)
                    return plan
                self.metrics.api_writes.labels("create").inc()
                log.info("artifact %s created for %s", name, desired.source)
            elif plan.status is not None and artifact is not None:
                self.cache[name] = await self.artifacts.patch_status(
                    name, plan.status, resource_version=artifact["metadata"]["resourceVersion"])
                self.metrics.api_writes.labels("status").inc()
                if plan.request is not None:
                    await self._publish(plan)
            await self._sync_record(name)
        except ConflictError:
            self.metrics.conflicts.inc()
            self._stale.add(name)
            self.mark(name)
            return plan
        except NotFoundError:
            self._stale.add(name)
            self.mark(name)
            return plan
        except RetryableError as exc:
            self.metrics.errors.labels("retryable").inc()
            log.warning("reconciling %s: %s; again in 5s", name, exc)
            self.timers[name] = self.clock() + 5.0
            return plan
        except PermanentError as exc:
            self.metrics.errors.labels("permanent").inc()
            log.error("reconciling %s: %s; again at the next resync", name, exc)
            return plan
        finally:
            self.metrics.reconcile_seconds.observe(time.perf_counter() - started)
        if plan.again:
            self.mark(name)
        if plan.wake_at is not None:
            self.timers[name] = plan.wake_at
        else:
            self.timers.pop(name, None)
        return plan

    async def _publish(self, plan: statuses.Plan) -> None:
        request = plan.request
        assert request is not None
        msg_id = subjects.mirror_msg_id(request.artifact, request.generation, request.attempt)
        try:
            await publish(
                self.bus, subjects.MIRROR_REQUEST, schemas.encode(request), timeout=5.0,
                headers={subjects.MSG_ID_HEADER: msg_id, subjects.TRACE_HEADER: msg_id})
        except RetryableError as exc:
            # the status already says Mirroring with a deadline: the timeout asks again
            log.warning("publishing the mirror request for %s: %s; the timeout will ask again",
                        request.artifact, exc)
            return
        self.metrics.mirror_requests.labels(plan.reason).inc()
        if plan.reason in ("retry", "timeout"):
            self.metrics.retries.inc()
        log.info("mirror requested for %s (%s, generation %d, attempt %d)", request.source,
                 plan.reason, request.generation, request.attempt)

    async def _sync_record(self, name: str) -> None:
        """The KV record follows the Artifact (never while GC deletes it, never without it)."""
        assert self.records is not None
        current = self._kv_cache.get(name)
        if current is None:
            current = self._kv_cache[name] = await self.records.read(name)
        artifact = self.cache.get(name)
        try:
            if artifact is None:
                if current.value is not None:
                    await self.records.delete(name, revision=current.revision)
                    self._kv_cache[name] = Versioned(None, 0, deleted=True)
                return
            if (artifact.get("status") or {}).get("phase") == "Deleting":
                return
            wanted = statuses.record_of(artifact, now=self.clock())
            if wanted is None or statuses.same_record(wanted, current.value):
                return
            revision = await self.records.write(name, wanted, revision=current.revision)
            self._kv_cache[name] = Versioned(wanted, revision)
        except ConflictError:
            # GC (or another reconciler) wrote it: read both again before deciding
            self._kv_cache.pop(name, None)
            raise

    def _count_phases(self) -> None:
        counts: dict[str, int] = {}
        for artifact in self.cache.values():
            phase = (artifact.get("status") or {}).get("phase") or "Pending"
            counts[phase] = counts.get(phase, 0) + 1
        self.metrics.set_phases(counts)

    def idle(self) -> bool:
        """Nothing queued (timers may be pending): for tests and the sandbox."""
        return self.refs_loaded and not self.dirty
