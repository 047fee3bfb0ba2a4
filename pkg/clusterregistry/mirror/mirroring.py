"""The mirror worker: takes copy requests from the work queue, copies, reports, acks.

Several workers pull from one durable consumer on the work-queue stream
`CLUSTERREGISTRY_MIRROR`, so each request goes to one worker at a time. A
request is acked only after its copy is verified (every blob's sha256, the
manifests pushed byte for byte) and its result is stored in JetStream, so a
worker dying at any point means redelivery, never a lost copy. A copy that
runs long keeps its message with `in_progress()` every ackWait/3.

What happens to a message is decided by `settle` from the outcome alone:
a PermanentError (digest mismatch, refused credentials, unknown manifest,
schema 1) is terminated and reported as failed for good; a RetryableError is
nak'ed with a growing delay and reported only when its deliveries run out;
the GC fence being held is nak'ed without counting as a failure.

Every registry write happens inside `Fence.writing`, so GC's sweep never runs
while a blob is uploaded and its manifest not pushed yet (see bus/fencing.py).

While copies run, one loop publishes each one's bytes done / total every
`progressIntervalSeconds` (`MirrorProgress`, core NATS: see `_report_progress`)
for the Artifact's status, and the in-flight bytes gauge reads the same
counters; the copier only counts (`CopyProgress`), it never publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import msgspec

from clusterregistry import errors, references, schemas, subjects
from clusterregistry.bus.announcing import announce
from clusterregistry.bus.connecting import Bus
from clusterregistry.bus.pulling import ConsumerSpec, Pulled, Puller
from clusterregistry.bus.streams import ensure_stream, publish
from clusterregistry.config import MirrorSettings
from clusterregistry.errors import (
    AuthenticationError,
    DigestMismatchError,
    FenceHeldError,
    ManifestUnknownError,
    PermanentError,
    RegistryRejectedError,
    RetryableError,
    UnsupportedManifestError,
)
from clusterregistry.kube.artifacts import reference
from clusterregistry.kube.events import NORMAL, EventRecorder
from clusterregistry.mirror.metrics import MirrorMetrics
from clusterregistry.oci.authenticating import Credentials, parse_docker_config
from clusterregistry.oci.clients import RegistryClients, copy_options, pacer
from clusterregistry.oci.copying import BlobLedger, Copier, CopyProgress, CopyReport, Progress
from clusterregistry.runtime import logs
from clusterregistry.runtime.lifecycle import cancel_and_wait, sleep_unless_stopped
from clusterregistry.schemas import MirrorProgress, MirrorRequest, MirrorResult, SecretRef

log = logging.getLogger(__name__)

# a pull secret as its docker config bytes (kube/secrets.docker_config, bound to an ApiClient)
SecretReader = Callable[[SecretRef], Awaitable[bytes]]
_MAX_NAK_DELAY = 300.0


class WriteFence(Protocol):
    """What the worker needs of `bus.fencing.Fence` (NoFence when GC is not deployed)."""

    def writing(self, purpose: str) -> contextlib.AbstractAsyncContextManager[Any]: ...


class NoFence:
    """No GC in this deployment: writes need no fence."""

    @contextlib.asynccontextmanager
    async def writing(self, purpose: str) -> AsyncIterator[Any]:
        yield None


# -- pure decisions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Settlement:
    """What to do with a message after an attempt, and whether to report the outcome."""

    action: Literal["ack", "nak", "term"]
    delay: float = 0.0
    report: bool = False
    reason: str = ""
    retryable: bool = True


_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (DigestMismatchError, "digest_mismatch"),
    (AuthenticationError, "authentication"),
    (ManifestUnknownError, "manifest_unknown"),
    (UnsupportedManifestError, "unsupported_manifest"),
    (errors.NotFoundError, "secret"),
    (RegistryRejectedError, "rejected"),
    (FenceHeldError, "fence_held"),
    (PermanentError, "rejected"),
    (RetryableError, "unavailable"),
)


def reason_of(error: BaseException) -> str:
    """A short, bounded reason for metrics and results."""
    for kind, reason in _REASONS:
        if isinstance(error, kind):
            return reason
    return "internal"


def settle(error: BaseException | None, *, delivered: int, settings: MirrorSettings
           ) -> Settlement:
    """The fate of a message from the outcome of its `delivered`-th delivery (1-based)."""
    if error is None:
        return Settlement("ack", report=True)
    reason = reason_of(error)
    if isinstance(error, FenceHeldError):
        # GC holds the registry: not the request's fault, and never final
        return Settlement("nak", delay=error.delay or settings.retry_delay_seconds,
                          reason=reason)
    if isinstance(error, PermanentError):
        return Settlement("term", report=True, reason=reason, retryable=False)
    if delivered >= settings.max_deliveries:
        # out of deliveries: report it, the reconciler decides whether to ask again later
        return Settlement("term", report=True, reason=reason, retryable=True)
    delay = settings.retry_delay_seconds * (2 ** max(0, delivered - 1))
    hinted = error.delay if isinstance(error, RetryableError) and error.delay else 0.0
    return Settlement("nak", delay=min(max(delay, hinted), _MAX_NAK_DELAY), reason=reason)


def result_for(request: MirrorRequest, *, report: CopyReport | None,
               error: BaseException | None, settlement: Settlement, worker: str,
               duration: float) -> MirrorResult:
    if report is not None and error is None:
        return MirrorResult(
            artifact=request.artifact, generation=request.generation, source=request.source,
            destination=request.destination, attempt=request.attempt, worker=worker,
            trace_id=request.trace_id, duration_seconds=round(duration, 3), ok=True,
            digest=report.digest, size=report.size, platforms=report.platforms,
            bytes_copied=report.bytes_copied, blobs_copied=report.blobs_copied,
            blobs_skipped=report.blobs_skipped, blobs_mounted=report.blobs_mounted)
    return MirrorResult(
        artifact=request.artifact, generation=request.generation, source=request.source,
        destination=request.destination, attempt=request.attempt, worker=worker,
        trace_id=request.trace_id, duration_seconds=round(duration, 3), ok=False,
        error=str(error)[:1000], reason=settlement.reason, retryable=settlement.retryable)


@dataclass(eq=False)
class Running:
    """One copy in flight, as the progress loop and the in-flight gauge read it."""

    request: MirrorRequest
    progress: CopyProgress = field(default_factory=CopyProgress)
    # (bytes done, bytes total) of the last progress published
    sent: tuple[int, int] | None = None


def progress_message(running: Running, *, worker: str, now: float) -> MirrorProgress | None:
    """What to publish for one running copy now: None until its manifests are read (no
    total yet, or an image already complete, which is never planned), and when nothing
    moved since the last one (a stalled or throttled copy says nothing new)."""
    progress = running.progress
    if not progress.known or running.sent == (progress.bytes_done, progress.bytes_total):
        return None
    request = running.request
    return MirrorProgress(
        artifact=request.artifact, generation=request.generation,
        bytes_done=min(progress.bytes_done, progress.bytes_total),
        bytes_total=progress.bytes_total, blobs_done=progress.blobs_done,
        blobs_total=progress.blobs_total, attempt=request.attempt, worker=worker,
        time=round(now, 3))


def in_flight_bytes(copies: Sequence[Running]) -> tuple[int, int]:
    """(done, remaining) blob bytes over the copies whose totals are known."""
    known = [running.progress for running in copies if running.progress.known]
    return (sum(min(p.bytes_done, p.bytes_total) for p in known),
            sum(p.bytes_remaining for p in known))


# -- the worker --------------------------------------------------------------------------------


async def ensure_queue(bus: Bus, *, replicas: int = 1) -> None:
    """Create `CLUSTERREGISTRY_MIRROR` when missing, as the reconciler does; never update it.

    The reconciler owns its settings (its duplicate window follows its mirror timeout),
    so a worker only creates the stream when it starts first, and with the same subjects
    and retention: a work queue of requests and results, one consumer on each.
    """
    await ensure_stream(bus, name=subjects.MIRROR_STREAM,
                        subjects=list(subjects.MIRROR_STREAM_SUBJECTS), replicas=replicas,
                        work_queue=True, update=False)


class Worker:
    """One mirror process: `prepare()` then `run(stop)`."""

    def __init__(
        self,
        *,
        bus: Bus,
        settings: MirrorSettings,
        clients: RegistryClients,
        worker_id: str,
        ledger: BlobLedger | None = None,
        fence: WriteFence | None = None,
        secrets: SecretReader | None = None,
        metrics: MirrorMetrics | None = None,
        stream_replicas: int = 1,
        recorder: EventRecorder | None = None,
    ) -> None:
        self.bus = bus
        self.settings = settings
        # MirrorStarted on the Artifact; the reconciler records how the copy ended
        self.recorder = recorder
        self.clients = clients
        self.worker_id = worker_id
        self.fence: WriteFence = fence or NoFence()
        self.secrets = secrets
        self.metrics = metrics or MirrorMetrics()
        # one pacer for all copies of this worker: the limit is the worker's share of the link
        self.pacer = pacer(settings, on_wait=self.metrics.throttled_seconds.inc)
        self.metrics.max_bytes_per_second.set(self.pacer.rate)
        self.copier = Copier(copy_options(settings), ledger=ledger, pacer=self.pacer,
                             on_resume=self._resumed)
        self.stream_replicas = stream_replicas
        self.ready = False
        self.handled = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.copies: list[Running] = []
        self.metrics.in_flight_bytes.labels("done").set_function(
            lambda: in_flight_bytes(self.copies)[0])
        self.metrics.in_flight_bytes.labels("remaining").set_function(
            lambda: in_flight_bytes(self.copies)[1])
        # every worker pulls from one durable: each request goes to one of them at a time
        self.requests = Puller(bus, ConsumerSpec(
            stream=subjects.MIRROR_STREAM, durable=subjects.MIRROR_CONSUMER,
            filter_subject=subjects.MIRROR_REQUEST, ack_wait=settings.ack_wait_seconds,
            max_ack_pending=max(64, settings.concurrency * 16)))

    def _resumed(self, what: str) -> None:
        self.metrics.resumed.labels(what).inc()

    async def prepare(self) -> None:
        """The work-queue stream (the reconciler ensures the same) and the durable consumer."""
        await ensure_queue(self.bus, replicas=self.stream_replicas)
        await self.requests.start()
        self.ready = True

    async def run(self, stop: asyncio.Event) -> None:
        while not self.ready:
            try:
                await self.prepare()
            except RetryableError as exc:
                log.warning("mirror cannot start consuming yet: %s", exc)
                if await sleep_unless_stopped(stop, 2.0):
                    return
        slots = asyncio.Semaphore(self.settings.concurrency)
        if self.recorder is not None:
            self.recorder.start()
        reporting = asyncio.create_task(self._report_progress(stop))
        try:
            while not stop.is_set():
                await slots.acquire()
                if stop.is_set():
                    slots.release()
                    break
                try:
                    messages = await self.requests.fetch(1, timeout=1.0)
                except RetryableError as exc:  # NATS away: nats-py reconnects, we wait
                    slots.release()
                    log.warning("mirror fetch failed: %s", exc)
                    await sleep_unless_stopped(stop, 1.0)
                    continue
                if not messages:
                    slots.release()
                    continue
                for msg in messages:
                    task = asyncio.create_task(self.process(msg))
                    self._tasks.add(task)

                    def done(finished: asyncio.Task[None]) -> None:
                        self._tasks.discard(finished)
                        slots.release()

                    task.add_done_callback(done)
        finally:
            # copies in flight are abandoned and nak'ed: another worker starts them afresh
            await cancel_and_wait(*self._tasks, reporting)
            await self.requests.stop()
            if self.recorder is not None:
                await self.recorder.stop()

    # -- one message ---------------------------------------------------------------------------

    async def process(self, msg: Pulled) -> None:
        """Copy what one message asks, report, and settle the message."""
        try:
            request = schemas.mirror_request_decoder.decode(msg.data)
        except msgspec.DecodeError as exc:
            log.error("mirror: undecodable request on %s (%s); terminated", msg.subject, exc)
            self.metrics.requests.labels("invalid").inc()
            self.metrics.failures.labels("invalid_request").inc()
            await msg.term()
            return
        delivered = msg.delivered
        started = time.perf_counter()
        report: CopyReport | None = None
        error: BaseException | None = None
        keepalive = asyncio.create_task(self._keep_alive(msg))
        self.metrics.in_flight.inc()
        running = Running(request)
        self.copies.append(running)
        try:
            report = await self.mirror(request, progress=running.progress)
        except asyncio.CancelledError:
            await asyncio.shield(msg.nak())
            raise
        except Exception as exc:  # every failure is settled below; none may kill the worker
            error = exc
        finally:
            keepalive.cancel()
            self.copies.remove(running)
            self.metrics.in_flight.dec()
        duration = time.perf_counter() - started
        settlement = settle(error, delivered=delivered, settings=self.settings)
        fields = logs.fields(artifact=request.artifact, source=request.source,
                             delivered=delivered, action=settlement.action,
                             reason=settlement.reason, seconds=round(duration, 3))
        if error is None:
            assert report is not None
            self.metrics.bytes_copied.inc(report.bytes_copied)
            self.metrics.blobs.labels("copied").inc(report.blobs_copied)
            self.metrics.blobs.labels("mounted").inc(report.blobs_mounted)
            self.metrics.blobs.labels("skipped").inc(report.blobs_skipped)
            log.info("mirrored %s -> %s (%s)", request.source, request.destination,
                     report.digest, extra=fields)
        else:
            self.metrics.failures.labels(settlement.reason).inc()
            level = logging.INFO if settlement.action == "nak" else logging.WARNING
            log.log(level, "mirror %s failed: %s", request.source, error, extra=fields)
        outcome = {"ack": "ok", "term": "failed"}.get(settlement.action, "retry")
        if settlement.reason == "fence_held":
            outcome = "fenced"
        self.metrics.requests.labels(outcome).inc()
        self.metrics.copy_seconds.labels(outcome).observe(duration)
        try:
            if settlement.report:
                result = result_for(request, report=report, error=error, settlement=settlement,
                                    worker=self.worker_id, duration=duration)
                await publish(
                    self.bus, subjects.mirror_result(request.artifact),
                    schemas.encode(result),
                    headers={subjects.TRACE_HEADER: request.trace_id} if request.trace_id
                    else None)
        except RetryableError as exc:
            # the result did not make it: unsettled, the message comes back after ackWait,
            # and the copy then finds the image complete and only reports again
            log.warning("mirror: cannot report %s: %s", request.artifact, exc, extra=fields)
        else:
            # a settlement lost on the way ends the same way (Pulled logs it)
            if settlement.action == "ack":
                await msg.ack(confirmed=True)
            elif settlement.action == "term":
                await msg.term()
            else:
                await msg.nak(delay=settlement.delay)
        self.handled += 1

    async def _report_progress(self, stop: asyncio.Event) -> None:
        """Every `progressIntervalSeconds`, each running copy's progress, if it moved.

        Core NATS, not the work-queue stream: progress is ephemeral. A message lost (no
        reconciler listening, NATS reconnecting) is harmless, the next replaces it, and
        the durable outcome is the MirrorResult; stored, they would pile up in the work
        queue unacked. One loop for the worker, one message per copy per tick: the rate
        is bounded by the interval, however fast the bytes move.
        """
        interval = self.settings.progress_interval_seconds
        if interval <= 0:
            return
        while not await sleep_unless_stopped(stop, interval):
            now = time.time()
            for running in list(self.copies):
                message = progress_message(running, worker=self.worker_id, now=now)
                if message is None:
                    continue
                running.sent = (message.bytes_done, message.bytes_total)
                await announce(self.bus, subjects.mirror_progress(message.artifact),
                               schemas.encode(message))

    async def _keep_alive(self, msg: Pulled) -> None:
        """Tell JetStream the copy is still running, so it is not redelivered meanwhile."""
        interval = self.settings.ack_wait_seconds / 3
        while True:
            # at once too: the ack timer started when the server sent the message
            await msg.in_progress()
            await asyncio.sleep(interval)

    async def _credentials(self, refs: Sequence[SecretRef]) -> dict[str, Credentials]:
        found: dict[str, Credentials] = {}
        if not refs:
            return found
        if self.secrets is None:
            raise PermanentError("the request names pull secrets but this mirror has no "
                                 "Kubernetes access to read them")
        for ref in refs:
            data = await self.secrets(ref)
            try:
                found.update(parse_docker_config(data))
            except ValueError as exc:
                raise PermanentError(f"secret {ref.namespace}/{ref.name}: {exc}") from None
        return found

    async def mirror(self, request: MirrorRequest, *,
                     progress: Progress | None = None) -> CopyReport:
        """One copy, inside the GC fence; `progress` is told of its bytes as they move."""
        try:
            source = references.parse(request.source).with_default_tag()
            destination = references.parse(request.destination).with_default_tag()
        except references.InvalidReferenceError as exc:
            raise PermanentError(f"invalid reference in request: {exc}") from None
        pull_secrets = await self._credentials(request.pull_secrets)
        src, src_path = self.clients.source(source.domain, pull_secrets), source.path
        if self.settings.source_through_front and self.clients.front_can_read(
            source.domain, pull_secrets
        ):
            # through the registry front, which fetches each blob from the source once for
            # the mirror and every kubelet pulling it now
            src = self.clients.through_front({subjects.FRONT_SOURCE_VIEW_HEADER: "1"})
            src_path = destination.path
        dst = self.clients.destination(destination.domain)
        platforms = request.platforms or self.settings.platforms
        async with self.fence.writing(f"mirror {request.artifact}"):
            if self.recorder is not None:  # the copy starts now: GC's fence let it in
                self.recorder.record(
                    reference(request.artifact, request.artifact_uid), NORMAL, "MirrorStarted",
                    f"copying {request.source} to {request.destination} (attempt "
                    f"{request.attempt + 1}{', ' + ','.join(platforms) if platforms else ''})"
                    f" on {self.worker_id}")
            return await self.copier.copy(
                src, src_path, source.version, dst, destination.path,
                tag=destination.tag or None, platforms=platforms, progress=progress)
