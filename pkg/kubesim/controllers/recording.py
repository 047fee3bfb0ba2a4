"""Event recorders for kubesim's controllers, with client-go's semantics.

Real components never write Events one by one: they hand them to client-go,
which correlates, de-duplicates and writes them in the background, and what
users see (`kubectl describe pod`, `kubectl get events`) is shaped by that
machinery: one Event with `count: 7` rather than seven Events, "(combined
from similar events): ..." after ten different messages, silence after 25
events about one object, a `series` on the scheduler's repeated
FailedScheduling. kubesim's controllers get the same two recorders here, so
clients see on kubesim the Events they will see on a real cluster.

Two recorders, as in client-go:

* `Recorder` is tools/record, the legacy core/v1 recorder the kubelet uses.
  Each event gets an EventCorrelator pass (events_cache.go): the spam filter
  (a token bucket per source + involved object: burst 25, one more every 5
  minutes), the aggregator (ten events that differ only in their message
  within 10 minutes become one "(combined from similar events): <msg>"
  Event), and the logger (an identical event PATCHes the existing Event's
  count, lastTimestamp and message instead of creating a new one; a 404 on
  that patch creates it anew). Caches are LRUs of 4096 entries.
* `EventRecorder` is tools/events, the events.k8s.io/v1 recorder
  kube-scheduler uses. An isomorphic event (same type, action, reason,
  reporting controller and instance, regarding and related objects) while
  the first is still cached turns into a `series` {count, lastObservedTime}
  patched onto the first Event: the second occurrence is written at once,
  later ones only count in memory, and a heartbeat writes them: every 30
  minutes for running series, and when a series has been quiet for 6
  minutes (its final count; the entry is then forgotten, as is a singleton
  older than 6 minutes).

Neither blocks its caller: `event()`/`eventf()` put the event on a bounded
queue (1000, as client-go; a full queue drops the event with an error log)
and background tasks write through the in-process ApiServer. A write that
fails with an API status is not retried (client-go abandons events the
server rejected), any other failure is retried up to 12 times, 10 s apart.

How a controller uses them (the kubelet, for instance)::

    recorder = ctx.recorder_for("kubelet", host=node_name)   # or manager.recorder_for(...)
    recorder.event(pod, "Normal", "Pulling", f'Pulling image "{image}"',
                   field_path="spec.containers{web}")
    recorder.event(pod, "Warning", "BackOff", "Back-off restarting failed container web in "
                   "pod web-0_default(<uid>)", field_path="spec.containers{web}")
    recorder.event(node_reference, "Normal", "NodeReady", f"Node {node_name} status is now: "
                   "NodeReady")   # a reference dict is used as is, as client-go does

and the scheduler::

    recorder = ctx.event_recorder_for("default-scheduler")
    recorder.eventf(pod, None, "Normal", "Scheduled", "Binding",
                    f"Successfully assigned {ns}/{name} to {node}")

`event_recorder_for` returns the events.k8s.io recorder when the server
serves events.k8s.io/v1, else (as client-go's NewEventBroadcasterAdapter
does after its discovery check) an adapter that records legacy core/v1
events with source {component: <controller>}.

The argument order of `event` and `eventf` is client-go's, positional; the
rest is keyword-only. Tests inject a `FakeClock` and await `drained()`.
"""

from __future__ import annotations

import abc
import asyncio
import copy
import logging
import random
import re
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeAlias, TypeVar

from kubesim.statuses import ApiError

if TYPE_CHECKING:
    from kubesim.apiserver import ApiServer
    from kubesim.resources import Resource

__all__ = [
    "NORMAL",
    "WARNING",
    "Clock",
    "EventCorrelator",
    "EventRecorder",
    "EventsRecorder",
    "FakeClock",
    "LegacyEventRecorder",
    "RealClock",
    "Recorder",
    "Recorders",
    "generate_event_name",
    "object_reference",
]

log = logging.getLogger(__name__)

Obj = dict[str, Any]
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

NORMAL = "Normal"
WARNING = "Warning"

STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

# tools/record/events_cache.go
MAX_LRU_CACHE_ENTRIES = 4096
AGGREGATE_MAX_EVENTS = 10
AGGREGATE_INTERVAL_SECONDS = 600
SPAM_BURST = 25
SPAM_QPS = 1.0 / 300.0
AGGREGATE_MESSAGE_PREFIX = "(combined from similar events): "

# tools/record/event.go and tools/events/event_broadcaster.go
MAX_QUEUED_EVENTS = 1000
MAX_TRIES_PER_EVENT = 12
DEFAULT_SLEEP_DURATION = 10.0
SERIES_FINISH_TIME = 6 * 60.0
SERIES_REFRESH_TIME = 30 * 60.0
RECORD_WORKERS = 8

# events.k8s.io validation: the note's limit (kube-scheduler truncates to it)
NOTE_LENGTH_LIMIT = 1024

_NANOS = 1_000_000_000
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


# --- time -------------------------------------------------------------------------------------


class Clock(Protocol):
    """What the recorders read the time from (k8s.io/utils/clock.PassiveClock)."""

    def time_ns(self) -> int: ...


class RealClock:
    def time_ns(self) -> int:
        return time.time_ns()


class FakeClock:
    """A clock that moves only when told to, for tests."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        whole = int(start)
        self._ns = whole * _NANOS + round((start - whole) * _NANOS)

    def time_ns(self) -> int:
        return self._ns

    def advance(self, seconds: float) -> None:
        self._ns += round(seconds * _NANOS)


def format_time(ns: int) -> str:
    """metav1.Time as JSON: RFC 3339 in UTC, whole seconds (the fraction is dropped)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns // _NANOS))


def format_micro_time(ns: int) -> str:
    """metav1.MicroTime as JSON: RFC 3339 in UTC with exactly six fractional digits."""
    seconds, rest = divmod(ns, _NANOS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1000:06d}Z"


# --- names and references ---------------------------------------------------------------------


def generate_event_name(ref_name: str, unix_nanos: int) -> str:
    """util.GenerateEventName: '<name>.<nanoseconds in hex>', or a random UUID when that is
    not a valid DNS subdomain (an involved object with an uppercase name, a very long one)."""
    name = f"{ref_name}.{unix_nanos:x}"
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        return str(uuid.uuid4())
    return name


def object_reference(obj: Mapping[str, Any], *, field_path: str = "") -> Obj:
    """reference.GetPartialReference: a core/v1 ObjectReference to the object.

    An ObjectReference itself (a mapping with `kind` and no `metadata`) is used as is, as
    client-go refuses to make a reference to a reference; the kubelet refers to its Node
    that way ({kind: Node, name: <node>, uid: <node>}). Empty fields are left out, as
    their `omitempty` JSON tags leave them out. Raises ValueError without a kind.
    """
    if "metadata" not in obj and obj.get("kind"):
        ref = {key: value for key, value in obj.items() if value}
    else:
        meta = obj.get("metadata") or {}
        ref = {
            key: value
            for key, value in (
                ("kind", obj.get("kind")),
                ("namespace", meta.get("namespace")),
                ("name", meta.get("name")),
                ("uid", meta.get("uid")),
                ("apiVersion", obj.get("apiVersion")),
                ("resourceVersion", meta.get("resourceVersion")),
            )
            if value
        }
    if not ref.get("kind"):
        raise ValueError("object has no kind: cannot build a reference to it")
    if field_path:
        ref["fieldPath"] = field_path
    return ref


def _event_metadata(ref: Mapping[str, Any], unix_nanos: int,
                    annotations: Mapping[str, str] | None) -> Obj:
    """Both recorders' Event metadata: a generated name, the object's namespace (events of
    cluster-scoped objects, Nodes, go to the default namespace), annotations if any."""
    meta: Obj = {
        "name": generate_event_name(str(ref.get("name") or ""), unix_nanos),
        "namespace": ref.get("namespace") or "default",
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def _valid_type(event_type: str) -> bool:
    # util.ValidateEventType: anything else is logged and never sent
    return event_type in (NORMAL, WARNING)


# --- the correlator (tools/record/events_cache.go) -------------------------------------------


class Lru(Generic[K, V]):
    """k8s.io/utils/lru: a get or an add makes the key the newest; an add beyond the
    capacity evicts the oldest."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def add(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)


class TokenBucket:
    """flowcontrol's passive token bucket (golang.org/x/time/rate): starts full, refills at
    `qps` up to `burst`; a refused take leaves the bucket as it was."""

    def __init__(self, *, qps: float, burst: int, now_ns: int) -> None:
        self.qps = qps
        self.burst = burst
        self.tokens = float(burst)
        self.last_ns = now_ns

    def try_accept(self, now_ns: int) -> bool:
        last = min(self.last_ns, now_ns)
        tokens = min(float(self.burst), self.tokens + (now_ns - last) / _NANOS * self.qps)
        if tokens < 1.0:
            return False
        self.tokens = tokens - 1.0
        self.last_ns = now_ns
        return True


def _ref(event: Mapping[str, Any], name: str) -> str:
    return str((event.get("involvedObject") or {}).get(name) or "")


def _source(event: Mapping[str, Any], name: str) -> str:
    return str((event.get("source") or {}).get(name) or "")


def event_key(event: Mapping[str, Any]) -> str:
    """getEventKey: what makes two events identical (everything but the resourceVersion of
    the involved object and the timestamps). Joined without a separator, as client-go does."""
    return "".join((
        _source(event, "component"), _source(event, "host"),
        _ref(event, "kind"), _ref(event, "namespace"), _ref(event, "name"),
        _ref(event, "fieldPath"), _ref(event, "uid"), _ref(event, "apiVersion"),
        str(event.get("type") or ""), str(event.get("reason") or ""),
        str(event.get("message") or ""),
    ))


def spam_key(event: Mapping[str, Any]) -> str:
    """getSpamKey: the token bucket is per source, involved object (not its field path) and
    type; the reason does not matter."""
    return "".join((
        _source(event, "component"), _source(event, "host"),
        _ref(event, "kind"), _ref(event, "namespace"), _ref(event, "name"),
        _ref(event, "uid"), _ref(event, "apiVersion"), str(event.get("type") or ""),
    ))


def aggregate_key(event: Mapping[str, Any]) -> tuple[str, str]:
    """EventAggregatorByReasonFunc: (the group of similar events, the event within it).
    Similar = same source, involved object (field path aside), type, reason and reporter."""
    return "".join((
        _source(event, "component"), _source(event, "host"),
        _ref(event, "kind"), _ref(event, "namespace"), _ref(event, "name"),
        _ref(event, "uid"), _ref(event, "apiVersion"),
        str(event.get("type") or ""), str(event.get("reason") or ""),
        str(event.get("reportingComponent") or ""), str(event.get("reportingInstance") or ""),
    )), str(event.get("message") or "")


@dataclass
class _Aggregate:
    local_keys: dict[str, None]  # an insertion-ordered set of the messages seen
    last_ns: int


@dataclass(frozen=True)
class _Observation:
    count: int
    first_timestamp: Any
    name: str
    resource_version: str


@dataclass(frozen=True)
class Correlation:
    """EventCorrelateResult: the event to write, the patch for an existing one, or skip."""

    event: Obj | None
    patch: Obj | None
    skip: bool


class EventCorrelator:
    """client-go's EventCorrelator: aggregate, then count, then filter spam."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        lru_size: int = MAX_LRU_CACHE_ENTRIES,
        burst: int = SPAM_BURST,
        qps: float = SPAM_QPS,
        max_events: int = AGGREGATE_MAX_EVENTS,
        max_interval: float = AGGREGATE_INTERVAL_SECONDS,
    ) -> None:
        self.clock: Clock = clock or RealClock()
        self.burst = burst
        self.qps = qps
        self.max_events = max_events
        self.max_interval_ns = round(max_interval * _NANOS)
        self.spam: Lru[str, TokenBucket] = Lru(lru_size)
        self.aggregates: Lru[str, _Aggregate] = Lru(lru_size)
        self.observations: Lru[str, _Observation] = Lru(lru_size)

    def correlate(self, event: Obj) -> Correlation:
        aggregated, key = self._aggregate(event)
        observed, patch = self._observe(aggregated, key)
        # The spam filter runs last, on what would be written: the logger has counted the
        # event already, so the next Event that gets through carries the full count.
        if self._filtered(observed):
            return Correlation(event=None, patch=None, skip=True)
        return Correlation(event=observed, patch=patch, skip=False)

    def update_state(self, event: Obj) -> None:
        """Remember what the server returned (name, resourceVersion, count) under the
        returned event's own key."""
        meta = event.get("metadata") or {}
        self.observations.add(event_key(event), _Observation(
            count=int(event.get("count") or 0),
            first_timestamp=event.get("firstTimestamp"),
            name=str(meta.get("name") or ""),
            resource_version=str(meta.get("resourceVersion") or ""),
        ))

    def _aggregate(self, event: Obj) -> tuple[Obj, str]:
        """EventAggregate: the event itself and its full key, or, once `max_events` different
        messages were seen within the interval, a new combined event keyed by its group."""
        now = self.clock.time_ns()
        group, local = aggregate_key(event)
        record = self.aggregates.get(group)
        # No record, or a stale one (the interval slides with every similar event): start over.
        if record is None or now - record.last_ns > self.max_interval_ns:
            record = _Aggregate(local_keys={}, last_ns=now)
        record.local_keys[local] = None
        record.last_ns = now
        self.aggregates.add(group, record)
        if len(record.local_keys) < self.max_events:
            return event, event_key(event)
        # Keep the set below the threshold, so that every further new message combines too
        # (client-go pops an arbitrary member; the oldest is as good as any).
        del record.local_keys[next(iter(record.local_keys))]
        # The combined event carries neither the reporting fields nor the annotations.
        timestamp = format_time(now)
        involved = copy.deepcopy(event.get("involvedObject") or {})
        combined: Obj = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": generate_event_name(str(involved.get("name") or ""), now),
                "namespace": (event.get("metadata") or {}).get("namespace"),
            },
            "involvedObject": involved,
            "reason": event.get("reason"),
            "message": AGGREGATE_MESSAGE_PREFIX + str(event.get("message") or ""),
            "source": copy.deepcopy(event.get("source") or {}),
            "firstTimestamp": timestamp,
            "lastTimestamp": timestamp,
            "count": 1,
            "type": event.get("type"),
            "eventTime": None,
            "reportingComponent": "",
            "reportingInstance": "",
        }
        return combined, group

    def _observe(self, event: Obj, key: str) -> tuple[Obj, Obj | None]:
        """eventObserve: an event seen before becomes the next occurrence of the first one
        (its name, first timestamp and count + 1) and a patch for it."""
        event = copy.deepcopy(event)
        meta = event.setdefault("metadata", {})
        patch: Obj | None = None
        last = self.observations.get(key)
        if last is not None and last.count > 0:
            meta["name"] = last.name
            if last.resource_version:
                meta["resourceVersion"] = last.resource_version
            else:
                meta.pop("resourceVersion", None)
            event["firstTimestamp"] = last.first_timestamp
            event["count"] = last.count + 1
            # client-go diffs the event against a copy with count 0, lastTimestamp at the Unix
            # epoch and no message (CreateTwoWayMergePatch): the patch is exactly these three.
            patch = {"count": event["count"], "lastTimestamp": event.get("lastTimestamp")}
            if event.get("message"):
                patch["message"] = event["message"]
        self.observations.add(key, _Observation(
            count=int(event.get("count") or 0),
            first_timestamp=event.get("firstTimestamp"),
            name=str(meta.get("name") or ""),
            resource_version=str(meta.get("resourceVersion") or ""),
        ))
        return event, patch

    def _filtered(self, event: Obj) -> bool:
        now = self.clock.time_ns()
        key = spam_key(event)
        bucket = self.spam.get(key)
        if bucket is None:
            bucket = TokenBucket(qps=self.qps, burst=self.burst, now_ns=now)
        accepted = bucket.try_accept(now)
        self.spam.add(key, bucket)
        return not accepted


# --- the background writer both recorders share ----------------------------------------------


class _Writer(abc.ABC):
    """A bounded queue, worker tasks that drain it, and the start/stop/drain lifecycle."""

    kind = "event"

    def __init__(self, *, queue_size: int, workers: int) -> None:
        self._queue: asyncio.Queue[Obj] = asyncio.Queue(maxsize=queue_size)
        self._workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        self._shutdown = asyncio.Event()
        self._started = False
        self._closed = False
        self.dropped = 0

    @property
    def running(self) -> bool:
        return self._started and not self._closed

    def _enqueue(self, event: Obj) -> None:
        if self._closed:
            log.error("Unable to record %s (will not retry!): the broadcaster is shut down: %s",
                      self.kind, _describe(event))
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("Unable to record %s: too many queued events, dropped event %s",
                      self.kind, _describe(event))

    def start(self) -> None:
        """Start the writers (from a running event loop); events queued before are written."""
        if self._started:
            return
        self._started = True
        for index in range(self._workers):
            self._tasks.append(asyncio.create_task(
                self._work(), name=f"kubesim-{self.kind}-writer-{index}"))
        self._tasks.extend(self._extra_tasks())

    def _extra_tasks(self) -> list[asyncio.Task[None]]:
        return []

    async def stop(self, *, timeout: float = 5.0) -> None:
        """Accept no more events, give what is queued `timeout` seconds to be written, then
        stop the writers (what is still queued is dropped, as client-go's Shutdown drops it)."""
        if self._closed:
            return
        self._closed = True
        if self._tasks:
            try:
                await asyncio.wait_for(self._queue.join(), timeout)
            except TimeoutError:
                log.warning("%s recorder stopped with %d events unwritten", self.kind,
                            self._queue.qsize())
        self._shutdown.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def drained(self, *, timeout: float | None = None) -> None:
        """Wait until every queued event has been written (or given up on)."""
        await asyncio.wait_for(self._queue.join(), timeout)

    async def _work(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._write(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("writing %s failed: %s", self.kind, _describe(event))
            finally:
                self._queue.task_done()

    @abc.abstractmethod
    async def _write(self, event: Obj) -> None:
        """Send one event to the API server (each recorder its own way)."""

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, unless the recorder shuts down first (then False)."""
        try:
            await asyncio.wait_for(self._shutdown.wait(), seconds)
        except TimeoutError:
            return True
        return False


def _describe(event: Mapping[str, Any]) -> str:
    ref = event.get("involvedObject") or event.get("regarding") or {}
    return (f"{ref.get('kind')} {ref.get('namespace') or ''}/{ref.get('name')}: "
            f"{event.get('type')} {event.get('reason')} "
            f"{event.get('message') or event.get('note') or ''!r}")


def _namespace_terminating(err: ApiError) -> bool:
    return err.code == 403 and "is being terminated" in err.message


# --- the legacy recorder (tools/record) -------------------------------------------------------


class Recorder(_Writer):
    """tools/record's broadcaster and recorder for one source (the kubelet of one node):
    core/v1 Events through an EventCorrelator, written by one background task in order."""

    kind = "event"

    def __init__(
        self,
        api: ApiServer,
        *,
        component: str,
        host: str = "",
        clock: Clock | None = None,
        correlator: EventCorrelator | None = None,
        queue_size: int = MAX_QUEUED_EVENTS,
        max_tries: int = MAX_TRIES_PER_EVENT,
        sleep_duration: float = DEFAULT_SLEEP_DURATION,
    ) -> None:
        # client-go's watcher goroutine handles one event at a time, retries included.
        super().__init__(queue_size=queue_size, workers=1)
        self.api = api
        self.component = component
        self.host = host
        self.clock: Clock = clock or RealClock()
        self.correlator = correlator or EventCorrelator(clock=self.clock)
        self.max_tries = max_tries
        self.sleep_duration = sleep_duration

    @property
    def source(self) -> Obj:
        source = {"component": self.component}
        if self.host:
            source["host"] = self.host
        return source

    def event(
        self,
        obj: Mapping[str, Any],
        event_type: str,
        reason: str,
        message: str,
        *,
        field_path: str = "",
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        """Record an event about `obj` (an object or an ObjectReference); never blocks."""
        try:
            ref = object_reference(obj, field_path=field_path)
        except ValueError as err:
            log.error("Could not construct reference, will not report event: %s (%s %s %r)",
                      err, event_type, reason, message)
            return
        if not _valid_type(event_type):
            log.error("Unsupported event type: %r", event_type)
            return
        self._enqueue(self.make_event(
            ref, event_type=event_type, reason=reason, message=message, annotations=annotations
        ))

    def make_event(
        self,
        ref: Obj,
        *,
        event_type: str,
        reason: str,
        message: str,
        annotations: Mapping[str, str] | None = None,
    ) -> Obj:
        """recorderImpl.makeEvent + generateEvent: a legacy event has no eventTime (null on
        the wire), and reports its source as reportingComponent/reportingInstance too."""
        now = self.clock.time_ns()
        timestamp = format_time(now)
        meta = _event_metadata(ref, now, annotations)
        event: Obj = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": meta,
            "involvedObject": ref,
            "reason": reason,
            "message": message,
            "source": self.source,
            "firstTimestamp": timestamp,
            "lastTimestamp": timestamp,
            "count": 1,
            "type": event_type,
            "eventTime": None,
            # not omitempty in core/v1: always sent, "" when the source has no host
            "reportingComponent": self.component,
            "reportingInstance": self.host,
        }
        for optional in ("reason", "message"):
            if not event[optional]:
                del event[optional]
        return event

    async def _write(self, event: Obj) -> None:
        """recordToSink: correlate, then write with up to max_tries attempts."""
        result = self.correlator.correlate(event)
        if result.skip or result.event is None:
            return
        tries = 0
        while not await self._record(result.event, result.patch):
            tries += 1
            if tries >= self.max_tries:
                log.error("Unable to write event (retry limit exceeded!): %s", _describe(event))
                return
            # the first sleep is randomised so that clients do not retry in lockstep
            delay = self.sleep_duration * (random.random() if tries == 1 else 1.0)
            if not await self._sleep(delay):
                log.error("Unable to write event (broadcaster is shut down): %s",
                          _describe(event))
                return

    async def _record(self, event: Obj, patch: Obj | None) -> bool:
        """recordEvent: patch an existing Event (count > 1), or create one, also when the
        patched Event is gone (404). True when done with the event, False to retry."""
        update = int(event.get("count") or 0) > 1
        written, error = await _patch_or_create(
            self.api, self.api.resource("v1", "Event"), event,
            patch=(patch or {}) if update else None)
        if error is None and written is not None:
            self.correlator.update_state(written)
            return True
        if isinstance(error, ApiError):
            # The server rejected it: sending the same event again would not help.
            if error.reason == "AlreadyExists" or _namespace_terminating(error):
                log.debug("Server rejected event (will not retry!): %s: %s",
                          _describe(event), error.message)
            else:
                log.error("Server rejected event (will not retry!): %s: %s %s",
                          _describe(event), error.code, error.message)
            return True
        log.error("Unable to write event (may retry after sleeping): %s: %r",
                  _describe(event), error)
        return False


async def _patch_or_create(
    api: ApiServer, resource: Resource, event: Obj, *, patch: Obj | None
) -> tuple[Obj | None, Exception | None]:
    """Both recorders' write: strategic-merge `patch` onto the existing Event, or create
    `event` when there is no patch or the patched Event is gone (404). Returns what was
    written, or the error (any: the caller decides between dropping and retrying)."""
    meta = event["metadata"]
    if patch is not None:
        try:
            written = await api.patch(resource, namespace=meta["namespace"], name=meta["name"],
                                      patch=patch, patch_type=STRATEGIC_MERGE_PATCH)
            return written, None
        except Exception as err:
            if not (isinstance(err, ApiError) and err.code == 404):
                return None, err
    created = copy.deepcopy(event)
    created["metadata"].pop("resourceVersion", None)
    try:
        return await api.create(resource, created, namespace=meta["namespace"]), None
    except Exception as err:
        return None, err


# --- the events.k8s.io/v1 recorder (tools/events) ---------------------------------------------


@dataclass
class _Cached:
    """An event of the series cache, with the time its series (or it alone) was last seen."""

    event: Obj
    last_ns: int


def _frozen(value: Any) -> Hashable:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value if isinstance(value, Hashable) else repr(value)


def series_key(event: Mapping[str, Any]) -> Hashable:
    """getKey: isomorphic events share type, action, reason, reporting controller and
    instance, and the whole regarding and related references (resourceVersion and field
    path included); the note does not count."""
    return (
        event.get("type") or "", event.get("action") or "", event.get("reason") or "",
        event.get("reportingController") or "", event.get("reportingInstance") or "",
        _frozen(event.get("regarding") or {}), _frozen(event.get("related") or {}),
    )


class EventRecorder(_Writer):
    """tools/events' broadcaster and recorder for one reporting controller: events.k8s.io/v1
    Events, isomorphic ones merged into a series, written by 8 background tasks."""

    kind = "events.k8s.io event"

    def __init__(
        self,
        api: ApiServer,
        *,
        reporting_controller: str,
        reporting_instance: str | None = None,
        clock: Clock | None = None,
        queue_size: int = MAX_QUEUED_EVENTS,
        workers: int = RECORD_WORKERS,
        max_tries: int = MAX_TRIES_PER_EVENT,
        sleep_duration: float = DEFAULT_SLEEP_DURATION,
        finish_time: float = SERIES_FINISH_TIME,
        refresh_time: float = SERIES_REFRESH_TIME,
    ) -> None:
        super().__init__(queue_size=queue_size, workers=workers)
        self.api = api
        self.reporting_controller = reporting_controller
        # NewRecorder: "<controller>-<os.Hostname()>"
        self.reporting_instance = (
            reporting_instance
            if reporting_instance is not None
            else f"{reporting_controller}-{socket.gethostname()}"
        )
        self.clock: Clock = clock or RealClock()
        self.max_tries = max_tries
        self.sleep_duration = sleep_duration
        self.finish_ns = round(finish_time * _NANOS)
        self.finish_time = finish_time
        self.refresh_time = refresh_time
        self.cache: dict[Hashable, _Cached] = {}

    def eventf(  # noqa: PLR0917 - client-go's Eventf(regarding, related, type, reason, action, note)
        self,
        regarding: Mapping[str, Any],
        related: Mapping[str, Any] | None,
        event_type: str,
        reason: str,
        action: str,
        note: str,
        *,
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        """Record an event about `regarding` (and `related`, if any); never blocks."""
        try:
            regarding_ref = object_reference(regarding)
        except ValueError as err:
            log.error("Could not construct reference, will not report event: %s (%s %s %r)",
                      err, event_type, reason, note)
            return
        related_ref: Obj | None = None
        if related is not None:
            try:
                related_ref = object_reference(related)
            except ValueError:
                log.debug("Could not construct reference to the related object")
        if not _valid_type(event_type):
            log.error("Unsupported event type: %r", event_type)
            return
        if self._closed:
            log.error("Unable to record event (will not retry!): the broadcaster is shut down")
            return
        event = self.make_event(
            regarding_ref, related=related_ref, event_type=event_type, reason=reason,
            action=action, note=note, annotations=annotations,
        )
        self._observe(event)

    def make_event(
        self,
        regarding: Obj,
        *,
        related: Obj | None,
        event_type: str,
        reason: str,
        action: str,
        note: str,
        annotations: Mapping[str, str] | None = None,
    ) -> Obj:
        now = self.clock.time_ns()
        meta = _event_metadata(regarding, now, annotations)
        event: Obj = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": meta,
            "eventTime": format_micro_time(now),
            "reportingController": self.reporting_controller,
            "reportingInstance": self.reporting_instance,
            "action": action,
            "reason": reason,
            "regarding": regarding,
            "note": note,
            "type": event_type,
        }
        if related is not None:
            event["related"] = related
        for optional in ("reportingController", "reportingInstance", "action", "reason", "note"):
            if not event[optional]:
                del event[optional]
        return event

    def _observe(self, event: Obj) -> None:
        """recordToSink: the first of its kind is cached and created; the second turns the
        cached one into a series (count 2) and patches it; later ones only count."""
        key = series_key(event)
        cached = self.cache.get(key)
        now = self.clock.time_ns()
        if cached is None:
            self.cache[key] = _Cached(event=event, last_ns=now)
            self._enqueue(copy.deepcopy(event))
            return
        cached.last_ns = now
        series = cached.event.get("series")
        if series is not None:
            series["count"] = int(series.get("count") or 0) + 1
            series["lastObservedTime"] = format_micro_time(now)
            return
        cached.event["series"] = {"count": 2, "lastObservedTime": format_micro_time(now)}
        self._enqueue(copy.deepcopy(cached.event))

    async def _write(self, event: Obj) -> None:
        """attemptRecording: up to max_tries attempts, with a jittered sleep between."""
        tries = 0
        while True:
            _, retry = await self._record(event)
            if not retry:
                return
            tries += 1
            if tries >= self.max_tries:
                log.error("Unable to write event (retry limit exceeded!): %s", _describe(event))
                return
            jitter = 1.0 + 0.25 * random.random()
            if not await self._sleep(self.sleep_duration * jitter):
                return

    async def _record(self, event: Obj) -> tuple[Obj | None, bool]:
        """recordEvent: a series is a patch of the first Event's series (created in full when
        that Event is gone); anything else a create. Returns (written, retry)."""
        is_series = event.get("series") is not None
        # CreateTwoWayMergePatch of the event without and with its series
        written, error = await _patch_or_create(
            self.api, self.api.resource("events.k8s.io/v1", "Event"), event,
            patch={"series": copy.deepcopy(event["series"])} if is_series else None)
        if error is None:
            return written, False
        if isinstance(error, ApiError):
            if error.reason == "AlreadyExists":
                # A series whose first Event was not there to patch, and is now: the create
                # raced the first one's; patching again will work.
                if is_series:
                    return None, True
                log.debug("Server rejected event (will not retry!): %s", _describe(event))
            else:
                log.error("Server rejected event (will not retry!): %s: %s %s",
                          _describe(event), error.code, error.message)
            return None, False
        log.error("Unable to write event (may retry after sleeping): %s: %r",
                  _describe(event), error)
        return None, True

    # -- the series heartbeat --------------------------------------------------------------

    def _extra_tasks(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self._every(self.refresh_time, self.refresh_series),
                                name="kubesim-events-refresh"),
            asyncio.create_task(self._every(self.finish_time, self.finish_series),
                                name="kubesim-events-finish"),
        ]

    async def _every(self, period: float, job: Callable[[], Awaitable[None]]) -> None:
        # wait.UntilWithContext: at once, then every period after the previous run ended
        while True:
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("events.k8s.io series heartbeat failed")
            if not await self._sleep(period):
                return

    async def refresh_series(self) -> None:
        """refreshExistingEventSeries: write every running series' current count again."""
        snapshots = [
            (key, copy.deepcopy(cached.event), cached.last_ns)
            for key, cached in self.cache.items()
            if cached.event.get("series") is not None
        ]
        for key, event, last_ns in snapshots:
            written, retry = await self._record(copy.deepcopy(event))
            if retry or written is None:
                continue
            cached = self.cache.get(key)
            # Not if it was counted while the write was in flight: that count must not be lost.
            if cached is not None and cached.last_ns == last_ns and cached.event == event:
                cached.event = written

    async def finish_series(self) -> None:
        """finishSeries: a series quiet for finish_time gets its final count written and is
        forgotten; so is a singleton that old (its next occurrence starts anew)."""
        now = self.clock.time_ns()
        snapshots = [
            (key, copy.deepcopy(cached.event), cached.last_ns)
            for key, cached in self.cache.items()
            if cached.last_ns < now - self.finish_ns
        ]
        for key, event, last_ns in snapshots:
            if event.get("series") is not None:
                _, retry = await self._record(copy.deepcopy(event))
                if retry:
                    continue
            cached = self.cache.get(key)
            if cached is not None and cached.last_ns == last_ns and cached.event == event:
                del self.cache[key]


class LegacyEventRecorder:
    """EventRecorderAdapter: the events.k8s.io interface over a legacy recorder, for servers
    without events.k8s.io/v1 (the action and the related object are dropped)."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def eventf(  # noqa: PLR0917 - client-go's Eventf(regarding, related, type, reason, action, note)
        self,
        regarding: Mapping[str, Any],
        related: Mapping[str, Any] | None,
        event_type: str,
        reason: str,
        action: str,
        note: str,
        *,
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        del related, action
        self.recorder.event(regarding, event_type, reason, note, annotations=annotations)


EventsRecorder: TypeAlias = EventRecorder | LegacyEventRecorder


# --- the factory the controller manager owns --------------------------------------------------


class Recorders:
    """Every recorder of one controller manager: created on demand, started and stopped
    together. One legacy recorder per (component, host), as each kubelet has its own
    broadcaster, and one events.k8s.io recorder per reporting controller."""

    def __init__(
        self,
        api: ApiServer,
        *,
        clock: Clock | None = None,
        hostname: str | None = None,
        sleep_duration: float = DEFAULT_SLEEP_DURATION,
        stop_timeout: float = 5.0,
    ) -> None:
        self.api = api
        self.clock: Clock = clock or RealClock()
        self.hostname = hostname if hostname is not None else socket.gethostname()
        self.sleep_duration = sleep_duration
        self.stop_timeout = stop_timeout
        self.legacy: dict[tuple[str, str], Recorder] = {}
        self.events: dict[str, EventsRecorder] = {}
        self._running = False

    def recorder_for(self, component: str, *, host: str = "") -> Recorder:
        """The core/v1 recorder of `component` on `host` (the kubelet: "kubelet", node name)."""
        recorder = self.legacy.get((component, host))
        if recorder is None:
            recorder = Recorder(self.api, component=component, host=host, clock=self.clock,
                                sleep_duration=self.sleep_duration)
            self.legacy[component, host] = recorder
            if self._running:
                recorder.start()
        return recorder

    def event_recorder_for(self, controller: str) -> EventsRecorder:
        """The events.k8s.io recorder of `controller` ("default-scheduler"), or the legacy
        adapter when the server does not serve events.k8s.io/v1 (decided once, as
        kube-scheduler decides at start-up)."""
        recorder = self.events.get(controller)
        if recorder is not None:
            return recorder
        try:
            self.api.resource("events.k8s.io/v1", "Event")
        except ApiError as err:
            if err.code != 404:
                raise
            recorder = LegacyEventRecorder(self.recorder_for(controller))
        else:
            events = EventRecorder(
                self.api, reporting_controller=controller,
                reporting_instance=f"{controller}-{self.hostname}", clock=self.clock,
                sleep_duration=self.sleep_duration,
            )
            if self._running:
                events.start()
            recorder = events
        self.events[controller] = recorder
        return recorder

    def _writers(self) -> list[_Writer]:
        writers: list[_Writer] = list(self.legacy.values())
        writers.extend(r for r in self.events.values() if isinstance(r, EventRecorder))
        return writers

    def start(self) -> None:
        self._running = True
        for writer in self._writers():
            writer.start()

    async def stop(self, *, timeout: float | None = None) -> None:
        """Flush and stop every recorder, and forget them (a restart makes new ones)."""
        self._running = False
        writers = self._writers()
        self.legacy.clear()
        self.events.clear()
        limit = self.stop_timeout if timeout is None else timeout
        await asyncio.gather(*(w.stop(timeout=limit) for w in writers))

    async def drained(self, *, timeout: float | None = None) -> None:
        """Wait until every recorder has written what it has queued."""
        await asyncio.wait_for(
            asyncio.gather(*(w.drained() for w in self._writers())), timeout
        )
