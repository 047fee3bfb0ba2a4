"""One GC run: measure, choose, soft-delete, sweep, report; never two at once.

The order is what keeps every referenced image intact:

1. Usage against the threshold (`scheduling`); below it the run is skipped.
2. GC's lock (`bus.fencing`, waits for mirror writes in flight). Everything that
   changes the registry happens under it, so no copy is half-done while
   manifests are deleted or blobs swept, and two GC replicas never overlap.
3. Choose garbage from the tracker's owner records and the reconciler's artifact
   records (`selecting.choose`: unreferenced past the grace period).
4. Soft delete, per artifact: mark it Deleting (record and Artifact, each with a
   compare-and-set on what was read, so a concurrent reconciler change wins);
   the webhook stops rewriting to it. Then re-read the owner records: a reference
   that appeared meanwhile wins, and the artifact goes back to what it was.
5. Delete the manifests through the registry API, minus any a live image shares
   (`selecting.manifests_to_delete`), then the record and the Artifact.
6. The sweep (`sweeping`): relabel the lock `sweep ...`; in `follower` mode wait
   for the registry's supervisor to confirm read-only (`readonly`), in `front` mode
   for every live registry front to confirm it refuses writes (`readonly.<id>`,
   naming this lock), and a front not confirming in time means no sweep. Run
   `garbage-collect`. The lock is released on every way out (`Fence.exclusive`); in
   either mode GC then waits (bounded) for the acknowledgements to go.
7. Usage again; every step is published as a GcEvent on `clusterregistry.gc.*`.

The read-only window a run reports (`read_only_seconds`, the metrics) runs in `none`
and `follower` mode from the relabel until the release (follower: until the
supervisor's acknowledgement is gone). In `front` mode it is the window as the fronts
saw it, measured by GC: from the moment every live front had confirmed (not the
relabel: a front drains its writes in flight first) until the last acknowledgement
was gone (not the release: a front notices it on its next look at the lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import msgspec

from clusterregistry import references, subjects
from clusterregistry.bus.connecting import Bus
from clusterregistry.bus.fencing import Fence
from clusterregistry.bus.keyvalues import Records, Versioned, open_records
from clusterregistry.bus.streams import ensure_bucket, ensure_stream, publish
from clusterregistry.config import GcSettings
from clusterregistry.errors import (
    ConflictError,
    FenceHeldError,
    ManifestUnknownError,
    RetryableError,
)
from clusterregistry.gc import selecting, usage
from clusterregistry.gc.metrics import GcMetrics
from clusterregistry.gc.readonly import SWEEP_PURPOSE
from clusterregistry.gc.scheduling import Schedule
from clusterregistry.gc.selecting import Tree
from clusterregistry.gc.sweeping import Sweeper, SweepResult
from clusterregistry.kube.artifacts import Artifacts, reference_of
from clusterregistry.kube.events import NORMAL, WARNING, EventRecorder, EventType, ObjectRef
from clusterregistry.oci import manifests
from clusterregistry.oci.registries import RegistryClient
from clusterregistry.runtime.logs import fields
from clusterregistry.schemas import (
    ArtifactRecord,
    FenceEntry,
    GcEvent,
    GcEventType,
    OwnerRecord,
    ReleasedTag,
    artifact_record_decoder,
    encode,
    owner_record_decoder,
    released_tag_decoder,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["Collector", "live_records"]


@dataclass
class _Held:
    record: ArtifactRecord
    revision: int
    previous_phase: str
    cr_marked: bool = False
    repository: str = ""
    version: str = ""


@dataclass
class _Plan:
    """What one run deletes in the registry, and the tags it leaves or is done with."""

    # artifact name -> manifest digests to delete
    deletes: dict[str, list[str]]
    # the same as (repository, digest)
    deleted: set[tuple[str, str]]
    # artifact name -> (repository, tag, digest): a tag that stays, its manifest kept
    left: dict[str, tuple[str, str, str]]
    # released tags read this run: key -> (revision, value)
    released: dict[str, tuple[int, ReleasedTag]]
    # keys of released tags the registry no longer has as released (gone, pushed again,
    # owned again), to forget once the run's deletions are done
    stale: list[str]


@dataclass
class _Run:
    id: str
    dry_run: bool
    started: float
    deleted: list[str] = field(default_factory=list)
    manifests: int = 0
    kept: list[str] = field(default_factory=list)


async def _each(items: Iterable[T], act: Callable[[T], Awaitable[R]], *, limit: int = 16
                ) -> list[R]:
    """`act` on every item, at most `limit` at once, results in order: a thousand registry
    round trips one after another would hold the mirrors fenced for tens of seconds."""
    gate = asyncio.Semaphore(limit)

    async def one(item: T) -> R:
        async with gate:
            return await act(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


async def live_records(records: Records[T]) -> dict[str, Versioned[T]]:
    """Every live key of a bucket with its value and revision, in one pass; tombstones left
    out. A value of None: the key holds something that cannot be decoded."""
    return {key: found for key, found in (await records.snapshot()).items()
            if not found.deleted}


def _human(size: int) -> str:
    """Bytes with a binary suffix and at most one decimal (as the Artifact's sizeHuman)."""
    value = float(size)
    for unit in ("", "Ki", "Mi", "Gi", "Ti"):
        if value < 1024 or unit == "Ti":
            text = f"{value:.1f}".removesuffix(".0") if unit else str(size)
            return f"{text}{unit}" if unit else f"{text} bytes"
        value /= 1024
    raise AssertionError("unreachable")


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds)) if seconds else "unknown"


class Collector:
    """GC runs for one registry; `run()` is safe to call from the schedule and on demand."""

    def __init__(
        self,
        *,
        bus: Bus,
        fence: Fence,
        registry: RegistryClient,
        settings: GcSettings,
        schedule: Schedule,
        storage_bytes: int,
        sweeper: Sweeper | None,
        artifacts: Artifacts | None = None,
        metrics: GcMetrics | None = None,
        holder: str = "gc",
        stream_replicas: int = 1,
        recorder: EventRecorder | None = None,
        run_object: ObjectRef | None = None,
    ) -> None:
        self.bus = bus
        self.fence = fence
        self.registry = registry
        self.settings = settings
        self.schedule = schedule
        self.storage_bytes = storage_bytes
        self.sweeper = sweeper
        self.artifacts = artifacts
        self.metrics = metrics
        self.holder = holder
        self.stream_replicas = stream_replicas
        # Events: Collected on each Artifact before it is deleted; a run's ReadOnlyWindow,
        # Collected and GcFailed on `run_object` (GC's own Pod: see gc.serving)
        self.recorder = recorder
        self.run_object = run_object
        self._one_at_a_time = asyncio.Lock()
        # manifests deleted and not swept yet: by this run, by a run whose sweep failed, or
        # (unknowable after a restart, so assumed) by a GC that died before sweeping
        self._sweep_pending = True
        self._refs: Records[OwnerRecord] | None = None
        self._records: Records[ArtifactRecord] | None = None
        self._tags: Records[ReleasedTag] | None = None

    async def ensure(self) -> None:
        await ensure_stream(self.bus, name=subjects.GC_STREAM, subjects=[subjects.GC_ALL],
                            replicas=self.stream_replicas, max_age=30 * 24 * 3600.0)
        await self.fence.ensure()
        await self._released_tags()

    async def _released_tags(self) -> Records[ReleasedTag]:
        if self._tags is None:
            bucket = await ensure_bucket(self.bus, name=subjects.GC_TAGS_BUCKET, history=1,
                                         replicas=self.stream_replicas)
            self._tags = Records(bucket, released_tag_decoder.decode)
        return self._tags

    # -- events ------------------------------------------------------------------------------

    async def _publish(self, run: _Run, event: GcEventType, **values: object) -> GcEvent:
        message = GcEvent(run=run.id, event=event, dry_run=run.dry_run, time=time.time(),
                          **values)  # type: ignore[arg-type]
        try:
            await publish(self.bus, subjects.gc(event), encode(message))
        except RetryableError as exc:  # an event lost is a gap in the trace, not a failed run
            log.warning("cannot publish gc %s event: %s", event, exc)
        return message

    def _note(self, involved: ObjectRef | None, type_: EventType, reason: str,
              message: str) -> None:
        if self.recorder is not None and involved is not None:
            self.recorder.record(involved, type_, reason, message)

    # -- the run -----------------------------------------------------------------------------

    async def run(self, *, dry_run: bool = False, force: bool = False) -> GcEvent:
        """One run; returns its last event (finished, skipped or failed)."""
        async with self._one_at_a_time:
            run = _Run(id=uuid.uuid4().hex[:12], dry_run=dry_run, started=time.monotonic())
            outcome = "failed"
            try:
                result = await self._run(run, force=force)
                outcome = result.event
                return result
            except Exception as exc:
                log.exception("gc run %s failed", run.id)
                self._note(self.run_object, WARNING, "GcFailed",
                           f"run {run.id} failed after deleting {len(run.deleted)} artifacts: "
                           f"{type(exc).__name__}: {exc}")
                return await self._publish(
                    run, "failed", message=f"{type(exc).__name__}: {exc}",
                    deleted=len(run.deleted),
                    duration_seconds=time.monotonic() - run.started)
            finally:
                if self.metrics is not None:
                    self.metrics.runs.labels(outcome, str(dry_run).lower()).inc()

    def _usage(self) -> usage.Usage:
        measured = usage.measure(Path(self.settings.storage_path),
                                 source=self.settings.usage_source,
                                 configured_bytes=self.storage_bytes)
        if self.metrics is not None:
            self.metrics.used_bytes.set(measured.used_bytes)
            self.metrics.capacity_bytes.set(measured.total_bytes)
        return measured

    async def _run(self, run: _Run, *, force: bool) -> GcEvent:
        before = await asyncio.to_thread(self._usage)
        await self._publish(run, "started", usage_percent=before.percent)
        if not force and not self.schedule.should_collect(before.percent):
            return await self._publish(
                run, "skipped", usage_percent=before.percent,
                message=f"usage {before.percent:.1f}% is below the threshold "
                        f"{self.schedule.threshold:g}%")
        window = 0.0
        sweep: SweepResult | None = None
        if run.dry_run:  # reads only: no lock, so mirrors are not held up by a dry run
            garbage_names = await self._collect(run)
            return await self._finish(run, before, garbage_names, window)
        mode = self.settings.read_only_mode
        window_started = 0.0
        sweep_lock = 0.0  # the sweep lock's `acquired`: the fronts' acknowledgements name it
        try:
            async with self.fence.exclusive(purpose=f"gc {run.id}",
                                            wait_timeout=self.settings.writer_wait_seconds
                                            ) as hold:
                if self.metrics is not None:
                    self.metrics.lock_held.set(1)
                garbage_names = await self._collect(run)
                if run.manifests:
                    self._sweep_pending = True
                if self._sweep_pending and self.sweeper is not None:
                    await self.fence.relabel(hold, f"{SWEEP_PURPOSE} {run.id}")
                    window_started = time.monotonic()
                    sweep_lock = hold.entry.acquired
                    if mode == "follower":
                        await self._wait_read_only(hold.entry.acquired)
                    elif mode == "front":
                        # the window starts once every front refuses writes, not at the relabel
                        window_started = await self._wait_fronts_read_only(sweep_lock)
                    sweep = await self.sweeper.sweep(run=run.id)
                    self._sweep_pending = False
        except FenceHeldError as exc:
            return await self._publish(run, "skipped", usage_percent=before.percent,
                                       message=str(exc))
        finally:
            if self.metrics is not None:
                self.metrics.lock_held.set(0)
        if sweep is not None:
            if mode == "follower":
                await self._wait_read_write()
            if mode == "front":
                # ...and ends when the last front accepts writes again, not at the release
                window = await self._wait_fronts_read_write(sweep_lock) - window_started
            else:
                window = time.monotonic() - window_started
            if self.metrics is not None:
                self.metrics.read_only_seconds.observe(window)
                self.metrics.last_read_only_seconds.set(window)
            self._note(self.run_object, NORMAL, "ReadOnlyWindow",
                       f"run {run.id}: the registry refused writes for {window:.2f}s "
                       f"(readOnlyMode {mode}) while garbage-collect swept "
                       f"{sweep.blobs_deleted} blobs and {sweep.manifests_deleted} manifests")
            await self._publish(run, "swept", read_only_seconds=window,
                                duration_seconds=sweep.seconds,
                                message=f"{sweep.blobs_deleted} blobs and "
                                        f"{sweep.manifests_deleted} manifests swept")
        return await self._finish(run, before, garbage_names, window)

    async def _finish(self, run: _Run, before: usage.Usage, garbage_names: list[str],
                      window: float) -> GcEvent:
        after = await asyncio.to_thread(self._usage)
        freed = max(0, before.used_bytes - after.used_bytes)
        duration = time.monotonic() - run.started
        if self.metrics is not None and not run.dry_run:
            self.metrics.bytes_freed.inc(freed)
            self.metrics.run_seconds.observe(duration)
            self.metrics.last_success.set(time.time())
        if run.dry_run:
            # bounded: an event must stay far below the NATS max payload
            shown = garbage_names[:50]
            message = f"would delete {len(garbage_names)}: " + ", ".join(shown)
            if len(garbage_names) > len(shown):
                message += f", and {len(garbage_names) - len(shown)} more"
        else:
            message = f"deleted {len(run.deleted)} artifacts, {run.manifests} manifests"
            if run.deleted or freed:
                self._note(self.run_object, NORMAL, "Collected",
                           f"run {run.id}: {message}, {_human(freed)} freed; usage "
                           f"{before.percent:.1f}% -> {after.percent:.1f}%")
            if run.kept:
                message += (f"; kept {len(run.kept)} referenced meanwhile: "
                            f"{', '.join(run.kept[:50])}")
        return await self._publish(
            run, "finished", deleted=len(garbage_names) if run.dry_run else len(run.deleted),
            bytes_freed=freed, usage_percent=after.percent, read_only_seconds=window,
            duration_seconds=duration, message=message)

    async def _wait_read_only(self, acquired: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.read_only_wait_seconds
        while True:
            state = await self.fence.read_only_state()
            if state is not None and abs(state.acquired - acquired) < 1e-6:
                return
            if loop.time() > deadline:
                raise RetryableError(
                    f"the registry did not confirm read-only within "
                    f"{self.settings.read_only_wait_seconds:g}s; not sweeping")
            await asyncio.sleep(0.05)

    async def _wait_read_write(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.read_only_wait_seconds
        while True:
            if await self.fence.read_only_state() is None or loop.time() >= deadline:
                return
            await asyncio.sleep(0.05)

    # -- registry fronts (readOnlyMode: front) -------------------------------------------------

    def _renewed_within_ttl(self, entry: FenceEntry, now: float) -> bool:
        """An entry nobody renews expires with the bucket's TTL, but not every read path shows
        a delete marker for it: one not renewed within the TTL is gone. An entry without a
        renewal time (unreadable) is not known dead, so it counts as alive; the server
        still expires it within the TTL."""
        return entry.renewed <= 0 or now - entry.renewed <= self.fence.ttl

    def _confirms(self, ack: FenceEntry | None, acquired: float, now: float) -> bool:
        """A front's acknowledgement, alive and naming this lock (not an earlier one)."""
        return (ack is not None and abs(ack.acquired - acquired) < 1e-6
                and self._renewed_within_ttl(ack, now))

    async def _wait_fronts_read_only(self, acquired: float) -> float:
        """Wait until every live registry front (`front.<id>` renewed within the TTL) confirms
        it refuses writes for the lock taken at `acquired` (`readonly.<id>`); a front that
        dies meanwhile is not waited for any longer, one that starts must confirm too.

        Returns the moment (`time.monotonic()`) all had confirmed, which starts the window as
        the fronts saw it. RetryableError naming the fronts still missing after
        `gc.readOnlyWaitSeconds`: a front that might still accept a write must not see a
        sweep.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.read_only_wait_seconds
        prefix = f"{subjects.FENCE_FRONT_PREFIX}."
        while True:
            fronts = await self.fence.fronts()
            # read after the presences: a front confirming between the two reads counts
            acks = await self.fence.fronts_read_only()
            now = time.time()
            live = sorted(key[len(prefix):] for key, entry in fronts.items()
                          if self._renewed_within_ttl(entry, now))
            missing = [front for front in live if not self._confirms(
                acks.get(f"{subjects.FENCE_READ_ONLY}.{front}"), acquired, now)]
            if not missing:
                confirmed = time.monotonic()
                if live:
                    log.info("%d registry fronts confirmed read-only: %s", len(live),
                             ", ".join(live))
                else:
                    log.info("no registry front is alive: none to wait for before sweeping")
                return confirmed
            if loop.time() > deadline:
                raise RetryableError(
                    f"registry fronts {', '.join(missing)} did not confirm read-only within "
                    f"{self.settings.read_only_wait_seconds:g}s; not sweeping")
            await asyncio.sleep(0.05)

    async def _wait_fronts_read_write(self, acquired: float) -> float:
        """After the release: wait until no live front still acknowledges read-only for the
        lock taken at `acquired`, at most `gc.readOnlyWaitSeconds`.

        Returns the moment (`time.monotonic()`) the last acknowledgement was seen gone, or
        the deadline: the end of the window as the fronts saw it. A front that holds on is
        logged, not an error: the sweep is done, and every front goes read-write on its own
        once it sees the lock gone.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.read_only_wait_seconds
        while True:
            acks = await self.fence.fronts_read_only()
            now = time.time()
            holding = sorted(key for key, ack in acks.items()
                             if self._confirms(ack, acquired, now))
            if not holding:
                return time.monotonic()
            if loop.time() >= deadline:
                log.warning("registry fronts still read-only %gs after the sweep: %s",
                            self.settings.read_only_wait_seconds, ", ".join(holding))
                return time.monotonic()
            await asyncio.sleep(0.05)

    # -- choosing and soft-deleting -------------------------------------------------------------

    async def _owners(self) -> list[OwnerRecord]:
        # no bucket: nobody wrote one yet, so no owners
        refs = self._refs = self._refs or await open_records(
            self.bus, subjects.REFS_BUCKET, owner_record_decoder.decode)
        if refs is None:
            return []
        owners = []
        for key, found in (await live_records(refs)).items():
            if found.value is None:
                # unreadable: its images cannot be known, so nothing may be collected
                raise RetryableError(f"owner record {key} cannot be decoded; not collecting")
            owners.append(found.value)
        return owners

    async def _artifact_records(self) -> dict[str, tuple[ArtifactRecord, int]]:
        records = self._records = self._records or await open_records(
            self.bus, subjects.ARTIFACTS_BUCKET, artifact_record_decoder.decode)
        if records is None:
            return {}  # nobody wrote the bucket yet: no artifacts
        found: dict[str, tuple[ArtifactRecord, int]] = {}
        for key, current in (await live_records(records)).items():
            if current.value is None:
                log.warning("artifact record %s cannot be decoded; left alone", key)
                continue
            found[key] = (current.value, current.revision)
        return found

    async def _collect(self, run: _Run) -> list[str]:
        referenced = selecting.referenced_images(await self._owners())
        records = await self._artifact_records()
        choice = selecting.choose((r for r, _ in records.values()), referenced,
                                  now=time.time(), grace=self.settings.grace_period_seconds)
        names = sorted(r.name for r in choice.garbage)
        log.info("gc run %s: %d garbage, %d in grace, %d kept", run.id, len(choice.garbage),
                 len(choice.waiting), len(choice.kept), extra=fields(run=run.id))
        if run.dry_run or not choice.garbage:
            return names
        held = await _each(choice.garbage,
                           lambda r: self._mark_deleting(*records[r.name]))
        marked = [h for h in held if h is not None]
        # the re-check: a reference that appeared while we decided wins
        referenced = selecting.referenced_images(await self._owners())
        doomed: list[_Held] = []
        for item in marked:
            if selecting.canonical_or_raw(item.record.source) in referenced:
                await self._unmark(item)
                run.kept.append(item.record.name)
                if self.metrics is not None:
                    self.metrics.kept_on_recheck.inc()
            else:
                doomed.append(item)
        if not doomed:
            return names
        doomed_names = {item.record.name for item in doomed}
        survivors = [r for r, _ in records.values() if r.name not in doomed_names]
        plan = await self._plan(doomed, survivors)
        tags = await self._released_tags()
        # remembered before anything is deleted: a run that dies after deleting the Artifact
        # must not leave a tag nobody knows GC left
        for name, (repository, tag, digest) in sorted(plan.left.items()):
            await tags.put(subjects.released_tag_key(repository, tag), ReleasedTag(
                repository=repository, tag=tag, digest=digest, artifact=name,
                released=time.time()))
            log.info("gc run %s: %s leaves %s:%s behind (%s is kept for a live image)",
                     run.id, name, repository, tag, digest, extra=fields(run=run.id))
        await _each(doomed, lambda item: self._delete(
            run, item, plan.deletes.get(item.record.name, [])))
        await self._forget_tags(plan)
        return names

    async def _forget_tags(self, plan: _Plan) -> None:
        """Drop the released tags this run untagged (their manifest deleted by digest) or
        found stale; a conflict means a later run wrote the key again, which then stands."""
        tags = await self._released_tags()
        left = {subjects.released_tag_key(repository, tag)
                for repository, tag, _ in plan.left.values()}
        done = set(plan.stale) | {
            key for key, (_, tag) in plan.released.items()
            if (tag.repository, tag.digest) in plan.deleted}
        for key in sorted(done - left):
            with contextlib.suppress(ConflictError):
                await tags.delete(key, revision=plan.released[key][0])

    async def _mark_deleting(self, record: ArtifactRecord, revision: int) -> _Held | None:
        """Mark one artifact Deleting: the Artifact first, then its record.

        The order matters: the reconciler keeps the record in step with the Artifact but
        never touches either while the Artifact is Deleting, so once the Artifact says so,
        the record is GC's alone. Marking the record first would let the reconciler copy
        the Artifact's old phase back over it between the two writes.
        """
        records = self._records
        assert records is not None
        item = _Held(record=record, revision=revision, previous_phase=record.phase)
        if self.artifacts is not None:
            outcome = await self._mark_artifact(record.name)
            if outcome == "changed":
                log.info("artifact %s changed since it was read; deciding next run",
                         record.name)
                return None
            item.cr_marked = outcome == "marked"
        if record.phase != "Deleting":
            marked = msgspec.structs.replace(record, phase="Deleting", updated=time.time())
            try:
                item.revision = await records.write(record.name, marked, revision=revision)
            except ConflictError:
                log.info("artifact record %s changed since it was read; deciding next run",
                         record.name)
                await self._unmark(item)
                return None
            item.record = marked
        return item

    async def _mark_artifact(self, name: str) -> str:
        """`marked`, `absent` (no Artifact: a record-only artifact), or `changed` (it is
        referenced again, or another writer won twice)."""
        assert self.artifacts is not None
        for _ in range(2):
            current = await self.artifacts.get(name)
            if current is None:
                return "absent"
            status = current.get("status") or {}
            if int((status.get("references") or {}).get("count") or 0) > 0:
                return "changed"
            version = (current.get("metadata") or {}).get("resourceVersion")
            try:
                await self.artifacts.patch_status(name, {"phase": "Deleting"},
                                                  resource_version=version)
            except ConflictError:
                continue  # changed under us: read it again
            return "marked"
        return "changed"

    async def _unmark(self, item: _Held) -> None:
        records = self._records
        assert records is not None
        restored = msgspec.structs.replace(item.record, phase=item.previous_phase,
                                           unreferenced_since=0.0, updated=time.time())
        # a conflict: the reconciler has taken it over already
        with contextlib.suppress(ConflictError):
            await records.write(item.record.name, restored, revision=item.revision)
        if item.cr_marked and self.artifacts is not None:
            # only while it is still ours: a reconciler that saw the new reference first has
            # already moved it on (Deleting -> Pending), and that must not be overwritten
            current = await self.artifacts.get(item.record.name)
            if current is not None and (current.get("status") or {}).get("phase") == "Deleting":
                version = (current.get("metadata") or {}).get("resourceVersion")
                with contextlib.suppress(ConflictError):
                    await self.artifacts.patch_status(
                        item.record.name, {"phase": item.previous_phase},
                        resource_version=version)

    # -- what to delete in the registry ---------------------------------------------------------

    def _local(self, record: ArtifactRecord) -> tuple[str, str] | None:
        try:
            ref = references.parse(record.local)
        except ValueError:
            log.warning("artifact %s has an unreadable local reference %r", record.name,
                        record.local)
            return None
        return ref.path, ref.version

    async def _tree(self, repository: str, version: str,
                    cache: dict[tuple[str, str], Tree | None]) -> Tree | None:
        key = (repository, version)
        if key in cache:
            return cache[key]
        try:
            media_type, digest, data = await self.registry.get_manifest(repository, version)
        except ManifestUnknownError:
            cache[key] = None
            return None
        digests = [digest]
        if media_type in manifests.INDEX_TYPES:
            parsed = manifests.parse(data, media_type=media_type, digest=digest)
            digests.extend(child.digest for child in parsed.children)
        tree = cache[key] = Tree(repository=repository, digests=tuple(digests))
        return tree

    async def _plan(self, doomed: list[_Held], survivors: Iterable[ArtifactRecord]) -> _Plan:
        cache: dict[tuple[str, str], Tree | None] = {}
        doomed_refs: dict[tuple[str, str], str] = {}
        for item in doomed:
            local = self._local(item.record)
            if local is not None:
                item.repository, item.version = local
                doomed_refs[local] = item.record.name
        trees = await _each(list(doomed_refs), lambda ref: self._tree(*ref, cache))
        garbage = {doomed_refs[ref]: (ref[1], tree)
                   for ref, tree in zip(doomed_refs, trees, strict=True) if tree is not None}
        repositories = sorted({tree.repository for _, tree in garbage.values()})
        tags = await self._released_tags()
        released = {key: (found.revision, found.value)
                    for key, found in (await live_records(tags)).items()
                    if found.value is not None}
        released_digests = {(tag.repository, tag.tag): tag.digest
                            for _, tag in released.values()}
        # everything else in those repositories is live: every other tag (tracked or not,
        # but for the ones GC itself left behind) and every other artifact there (also
        # digest-pinned ones, which have no tag)
        listed: set[tuple[str, str]] = set()
        for repository, names in zip(repositories, await _each(
                repositories, self.registry.list_tags), strict=True):
            listed.update((repository, tag) for tag in names)
        owned = {local for local in map(self._local, survivors)
                 if local is not None and local[0] in repositories}
        refs = sorted((listed | owned) - set(doomed_refs))
        found = await _each(refs, lambda ref: self._tree(*ref, cache))
        live = [tree for ref, tree in zip(refs, found, strict=True) if tree is not None and (
            ref in owned or not selecting.still_released(tree, ref[1], released_digests))]
        deletes = selecting.manifests_to_delete(
            {name: tree for name, (_, tree) in garbage.items()}, live)
        by_ref = dict(zip(refs, found, strict=True))
        stale = [key for key, (_, tag) in released.items()
                 if tag.repository in repositories and (
                     (tag.repository, tag.tag) not in listed
                     or (tag.repository, tag.tag) in owned
                     or not selecting.still_released(by_ref.get((tag.repository, tag.tag)),
                                                     tag.tag, released_digests))]
        return _Plan(
            deletes=deletes,
            deleted={(garbage[name][1].repository, digest)
                     for name, digests in deletes.items() for digest in digests},
            left=selecting.tags_left_behind(garbage, deletes),
            released=released, stale=stale)

    async def _delete(self, run: _Run, item: _Held, digests: list[str]) -> None:
        name = item.record.name
        for digest in digests:
            try:
                await self.registry.delete_manifest(item.repository, digest)
            except ManifestUnknownError:
                continue  # already gone (an earlier, interrupted run)
            run.manifests += 1
            if self.metrics is not None:
                self.metrics.manifests_deleted.inc()
        records = self._records
        assert records is not None
        try:
            await records.delete(name, revision=item.revision)
        except ConflictError:
            log.warning("artifact record %s changed while its manifests were deleted; the "
                        "reconciler will mirror it again", name)
        if self.artifacts is not None:
            current = await self.artifacts.get(name)
            if current is not None:
                # on the Artifact before it goes: `kubectl get events` keeps it for an hour
                self._note(reference_of(current), NORMAL, "Collected",
                           f"run {run.id}: {item.record.source} unreferenced since "
                           f"{_when(item.record.unreferenced_since)}; {len(digests)} manifests "
                           f"deleted from the local registry, up to "
                           f"{_human(item.record.size)} freed by the sweep (blobs another "
                           f"image shares stay)")
                version = (current.get("metadata") or {}).get("resourceVersion")
                try:
                    await self.artifacts.delete(name, resource_version=version)
                except ConflictError:
                    log.info("artifact %s changed while being deleted; left to the "
                             "reconciler", name)
        run.deleted.append(name)
        if self.metrics is not None:
            self.metrics.artifacts_deleted.inc()
        await self._publish(run, "artifact_deleted", artifact=name, source=item.record.source,
                            message=f"{len(digests)} manifests deleted")
