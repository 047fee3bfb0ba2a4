"""`clusterregistry status`, also `kubectl clusterregistry status`: the health in one screen.

An operator on call asks "is it healthy, how full is it, is anything stuck,
when does GC run next" before any dashboard. This command answers from what
already exists and changes nothing: the Kubernetes API (Artifacts by phase,
the workloads' ready replicas, the Services' /metrics through the API
server's proxy), NATS (the durable consumers' lag, the mirror's work queue,
the last GC event), and the processes' probes and metrics (GC's storage
gauges, the front's request counters).

Each source is read concurrently under its own timeout, so an unreachable
one costs at most its timeout: its rows say `unknown` and the status is
degraded with a reason naming it, never a hang. The reading (`read_*`, the
I/O) is kept apart from the deciding: `assemble(readings) -> Status` holds
every healthy/degraded decision and `render(status)` the screen, both pure,
so the decisions are unit-tested without a cluster. Exit code 0 healthy,
1 degraded, 2 bad arguments or settings.

Where things are: a settings file (`--config`, the ConfigMap's content) names
NATS, the namespace, `clusterRegistry.storageSize`, the GC cadence and
threshold; `--kubeconfig` (else $KUBECONFIG, ~/.kube/config, in-cluster) the
API server. Readiness and metrics come through the API server by default
(Deployments and StatefulSets labelled `app.kubernetes.io/name=clusterregistry`;
the `clusterregistry-gc` and `clusterregistry` Services' `metrics` port), or
from URLs (`--probe NAME=URL`, `--gc-metrics`, `--front-metrics`), which is
how `--sandbox DIR` points the command at a sandbox: its `state.json` records
every process's probe port, its settings file and its kubeconfig.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

from clusterregistry import subjects
from clusterregistry.commands import Command
from clusterregistry.errors import ClusterRegistryError, ConfigError

if TYPE_CHECKING:
    from clusterregistry.config import Settings

__all__ = [
    "COMMAND",
    "HELP",
    "SOURCES",
    "ArtifactView",
    "BusReading",
    "ConsumerView",
    "Endpoints",
    "GcRun",
    "Readiness",
    "Readings",
    "Row",
    "Sample",
    "Status",
    "Unreachable",
    "add_arguments",
    "assemble",
    "command",
    "exit_code",
    "parse_timeouts",
    "read_sandbox",
    "render",
    "to_json",
]

HELP = "one screen: storage, artifacts, queues, consumers' lag, GC, front, readiness"

# the sources, each read under its own timeout
KUBERNETES: Final[str] = "kubernetes"
NATS: Final[str] = "nats"
GC_METRICS: Final[str] = "gc-metrics"
FRONT_METRICS: Final[str] = "front-metrics"
READINESS: Final[str] = "readiness"
SOURCES: Final[tuple[str, ...]] = (KUBERNETES, NATS, GC_METRICS, FRONT_METRICS, READINESS)
DEFAULT_TIMEOUT: Final[float] = 3.0

# storage in use above this share of the volume is degraded, whatever the GC threshold
FULL_SHARE: Final[float] = 0.9
# durable consumers each service creates (the reconciler's artifact consumer is one per
# replica: this name with a suffix)
EXPECTED_CONSUMERS: Final[tuple[tuple[str, str], ...]] = (
    (subjects.KUBE_STREAM, subjects.TRACKER_CONSUMER),
    (subjects.KUBE_STREAM, subjects.RECONCILER_ARTIFACTS_CONSUMER),
    (subjects.MIRROR_STREAM, subjects.RECONCILER_RESULTS_CONSUMER),
    (subjects.MIRROR_STREAM, subjects.MIRROR_CONSUMER),
)
GC_RUN_ENDS: Final[tuple[str, ...]] = ("finished", "failed", "skipped")
PHASES: Final[tuple[str, ...]] = ("Available", "Pending", "Mirroring", "Failed", "Deleting")
GC_SERVICE: Final[str] = "clusterregistry-gc:metrics"
FRONT_SERVICE: Final[str] = "clusterregistry:metrics"

T = TypeVar("T")
State = Literal["ok", "degraded", "unknown", "info"]


# -- readings: what the readers found -----------------------------------------------------------


@dataclass(frozen=True)
class Unreachable:
    """A source that did not answer (in time): its rows are unknown, the status degraded."""

    source: str
    where: str
    reason: str


@dataclass(frozen=True)
class ArtifactView:
    name: str
    source: str
    phase: str  # "" when the reconciler has not written a status yet (counted as Pending)
    created: float  # UNIX time
    message: str = ""


@dataclass(frozen=True)
class ConsumerView:
    stream: str
    name: str
    pending: int
    ack_pending: int
    redelivered: int = 0


@dataclass(frozen=True)
class GcRun:
    """The last GC run's end event (`clusterregistry.gc.<finished|failed|skipped>`)."""

    event: str
    time: float
    bytes_freed: int = 0
    deleted: int = 0
    read_only_seconds: float = 0.0
    dry_run: bool = False
    message: str = ""


@dataclass(frozen=True)
class BusReading:
    streams: Mapping[str, bool]  # stream name -> exists
    consumers: Sequence[ConsumerView]
    last_gc: GcRun | None


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Readiness:
    name: str
    ready: int
    wanted: int
    detail: str = ""


@dataclass(frozen=True)
class Readings:
    """Everything the readers found, and the settings the decisions use."""

    now: float
    storage_size: str  # clusterRegistry.storageSize
    threshold: float  # clusterRegistryGCThreshold (percent; 0: every run collects)
    cadence: str  # clusterRegistryGCCadence (empty: scheduled GC off)
    artifacts: Sequence[ArtifactView] | Unreachable
    bus: BusReading | Unreachable
    gc_metrics: Sequence[Sample] | Unreachable
    front_metrics: Sequence[Sample] | Unreachable
    readiness: Sequence[Readiness] | Unreachable
    # a Pending or Mirroring Artifact older than this is stuck
    stuck_after: float = 600.0


# -- status: what it means ----------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    section: str
    item: str
    text: str
    state: State = "info"
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Status:
    healthy: bool
    reasons: Sequence[str]
    rows: Sequence[Row]
    time: float


def _quantity_bytes(text: str) -> int | None:
    from clusterregistry.config import parse_quantity  # noqa: PLC0415

    try:
        return parse_quantity(text)
    except ValueError:
        return None


def human_bytes(value: float) -> str:
    """`942Ki`, `1.2Gi`: binary suffixes, at most one decimal, as `kubectl get artifacts`."""
    units = ("", "Ki", "Mi", "Gi", "Ti", "Pi")
    number = float(value)
    for unit in units:
        if abs(number) < 1024 or unit == units[-1]:
            if unit == "":
                return f"{int(number)}B"
            return f"{number:.1f}".rstrip("0").rstrip(".") + unit
        number /= 1024
    return f"{value}B"  # pragma: no cover


def human_duration(seconds: float) -> str:
    """`45s`, `3m12s`, `2h05m`, `3d4h`."""
    whole = int(max(seconds, 0))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600}h"


def _short(text: str, width: int = 100) -> str:
    """A message cut for the screen (`-o json` keeps it whole)."""
    return text if len(text) <= width else text[:width - 1] + "…"


def _clock(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _value(samples: Sequence[Sample], name: str, **labels: str) -> float | None:
    """The sum of `name`'s samples whose labels include `labels`; None when there is none."""
    found = [s.value for s in samples
             if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(found) if found else None


def _unknown_rows(section: str, items: Sequence[str]) -> list[Row]:
    return [Row(section, item, "unknown", "unknown") for item in items]


def _unreachable_reason(what: Unreachable) -> str:
    title = _SOURCE_TITLES.get(what.source, what.source)
    return f"{title} unreachable ({what.where}): {what.reason}"


_SOURCE_TITLES: Final[Mapping[str, str]] = {
    KUBERNETES: "Kubernetes API", NATS: "NATS", GC_METRICS: "GC metrics",
    FRONT_METRICS: "front metrics", READINESS: "readiness probes",
}


def _storage(readings: Readings, reasons: list[str]) -> list[Row]:
    metrics = readings.gc_metrics
    size = _quantity_bytes(readings.storage_size)
    threshold = readings.threshold
    threshold_text = (f"GC threshold {threshold:g}%" if threshold > 0
                      else "GC threshold 0% (every run collects)")
    if isinstance(metrics, Unreachable):
        return [Row("storage", "used", f"unknown of {readings.storage_size}; {threshold_text}",
                    "unknown", {"sizeBytes": size, "thresholdPercent": threshold})]
    used = _value(metrics, "clusterregistry_gc_storage_used_bytes")
    capacity = _value(metrics, "clusterregistry_gc_storage_capacity_bytes") or size
    if used is None or not capacity:
        return [Row("storage", "used",
                    f"not measured yet (GC measures at its first run) of "
                    f"{readings.storage_size}; {threshold_text}", "info",
                    {"sizeBytes": size, "thresholdPercent": threshold})]
    percent = 100.0 * used / capacity
    data = {"usedBytes": int(used), "capacityBytes": int(capacity), "sizeBytes": size,
            "usedPercent": round(percent, 1), "thresholdPercent": threshold}
    text = (f"{human_bytes(used)} of {human_bytes(capacity)} ({percent:.1f}%); "
            f"storageSize {readings.storage_size}; {threshold_text}")
    state: State = "ok"
    if threshold > 0 and percent >= threshold:
        text += ", above it: the next run collects"
    if used >= FULL_SHARE * capacity:
        state = "degraded"
        reasons.append(f"registry storage {percent:.0f}% full "
                       f"({human_bytes(used)} of {human_bytes(capacity)})")
    return [Row("storage", "used", text, state, data)]


def _artifacts(readings: Readings, reasons: list[str]) -> list[Row]:
    artifacts = readings.artifacts
    if isinstance(artifacts, Unreachable):
        return _unknown_rows("artifacts", ["by phase"])
    counts = dict.fromkeys(PHASES, 0)
    for artifact in artifacts:
        phase = artifact.phase or "Pending"
        counts[phase] = counts.get(phase, 0) + 1
    text = ", ".join(f"{n} {phase}" for phase, n in counts.items() if n or phase in (
        "Available", "Pending", "Failed")) + f" ({len(artifacts)} in all)"
    rows = [Row("artifacts", "by phase", text, "ok", {"phases": counts, "total": len(artifacts)})]
    for phases, label in ((("Pending", "Mirroring", ""), "oldest pending"),
                          (("Failed",), "oldest failed")):
        waiting = sorted((a for a in artifacts if a.phase in phases), key=lambda a: a.created)
        if not waiting:
            continue
        oldest = waiting[0]
        age = readings.now - oldest.created
        state: State = "ok"
        if "Failed" in phases:
            state = "degraded"
            reasons.append(f"{len(waiting)} Artifact(s) Failed, oldest {oldest.name} "
                           f"({oldest.source})"
                           f"{': ' + _short(oldest.message) if oldest.message else ''}")
        elif age > readings.stuck_after:
            state = "degraded"
            reasons.append(f"Artifact {oldest.name} ({oldest.source}) "
                           f"{oldest.phase or 'Pending'} for {human_duration(age)}")
        text = (f"{oldest.name} {oldest.source} {oldest.phase or 'Pending'}, "
                f"created {human_duration(age)} ago")
        if oldest.message:
            text += f": {_short(oldest.message)}"
        rows.append(Row("artifacts", label, text, state,
                        {"name": oldest.name, "source": oldest.source,
                         "phase": oldest.phase or "Pending", "ageSeconds": round(age, 1),
                         "message": oldest.message}))
    return rows


def _queue_and_consumers(readings: Readings, reasons: list[str]) -> list[Row]:
    bus = readings.bus
    if isinstance(bus, Unreachable):
        return (_unknown_rows("mirror", ["queue"])
                + _unknown_rows("consumers", [name for _, name in EXPECTED_CONSUMERS]))
    rows: list[Row] = []
    missing_streams = [name for name, exists in bus.streams.items() if not exists]
    for stream in missing_streams:
        reasons.append(f"stream {stream} missing (its services have not started)")
    mirror = next((c for c in bus.consumers if c.name == subjects.MIRROR_CONSUMER), None)
    if mirror is None:
        rows.append(Row("mirror", "queue", "unknown: no mirror consumer", "unknown"))
    else:
        rows.append(Row("mirror", "queue",
                        f"{mirror.pending} waiting, {mirror.ack_pending} copies in flight",
                        "ok", {"waiting": mirror.pending, "inFlight": mirror.ack_pending}))
    for stream, name in EXPECTED_CONSUMERS:
        matching = [c for c in bus.consumers
                    if c.stream == stream and (c.name == name or c.name.startswith(name + "-"))]
        if not matching:
            reasons.append(f"consumer {name} missing on {stream} (its service has not started)")
            rows.append(Row("consumers", name, f"missing on {stream}", "degraded",
                            {"stream": stream}))
    shown = [c for c in bus.consumers if not c.name.startswith(subjects.TRACE_CONSUMER_PREFIX)
             and c.name.startswith(subjects.PREFIX)]
    for consumer in shown:
        rows.append(Row("consumers", consumer.name,
                        f"{consumer.stream}: {consumer.pending} pending, "
                        f"{consumer.ack_pending} ack pending"
                        + (f", {consumer.redelivered} redelivered" if consumer.redelivered
                           else ""),
                        "ok", {"stream": consumer.stream, "pending": consumer.pending,
                               "ackPending": consumer.ack_pending,
                               "redelivered": consumer.redelivered}))
    return rows


def _gc(readings: Readings, reasons: list[str]) -> list[Row]:
    from clusterregistry.gc.scheduling import Schedule  # noqa: PLC0415

    rows: list[Row] = []
    bus = readings.bus
    if isinstance(bus, Unreachable):
        rows += _unknown_rows("gc", ["last run"])
    elif bus.last_gc is None:
        rows.append(Row("gc", "last run", "none recorded", "info"))
    else:
        run = bus.last_gc
        ago = human_duration(readings.now - run.time)
        text = f"{_clock(run.time)} ({ago} ago): {run.event}"
        if run.dry_run:
            text += " (dry run)"
        if run.event == "finished":
            text += (f", freed {human_bytes(run.bytes_freed)} ({run.deleted} Artifact(s)), "
                     f"read-only {run.read_only_seconds:.1f}s")
        elif run.message:
            text += f": {run.message}"
        state: State = "ok"
        if run.event == "failed":
            state = "degraded"
            reasons.append(f"the last GC run failed ({ago} ago): {run.message}")
        rows.append(Row("gc", "last run", text, state, asdict(run)))
    try:
        schedule = Schedule(readings.cadence, max(0.0, min(readings.threshold, 100.0)))
        following = schedule.next_run(readings.now)
    except ClusterRegistryError as exc:
        rows.append(Row("gc", "next run", str(exc), "degraded"))
        reasons.append(str(exc))
        return rows
    if following is None:
        rows.append(Row("gc", "next run", "scheduled GC off (clusterRegistryGCCadence empty)",
                        "info", {"cadence": ""}))
    else:
        rows.append(Row("gc", "next run",
                        f"{_clock(following)} (in {human_duration(following - readings.now)}; "
                        f"cadence {readings.cadence!r})", "ok",
                        {"time": following, "cadence": readings.cadence}))
    return rows


def _front(readings: Readings) -> list[Row]:
    metrics = readings.front_metrics
    if isinstance(metrics, Unreachable):
        return _unknown_rows("front", ["hit ratio"])
    name = "clusterregistry_front_requests_total"
    counted = {result: sum(_value(metrics, name, kind=kind, result=result) or 0.0
                           for kind in ("manifest", "blob"))
               for result in ("hit", "miss_streamed", "miss_failed", "joined")}
    if _value(metrics, name) is None:
        return [Row("front", "hit ratio", "no front metrics (no front deployed?)", "info")]
    hits = counted["hit"]
    answered = sum(counted.values())
    if answered == 0:
        return [Row("front", "hit ratio", "no manifest or blob requests yet", "ok",
                    {"requests": 0, **counted})]
    ratio = hits / answered
    return [Row("front", "hit ratio",
                f"{100 * ratio:.1f}% ({int(hits)} hits of {int(answered)} manifest and blob "
                f"requests; {int(counted['miss_streamed'])} fetched from sources, "
                f"{int(counted['joined'])} joined a fetch, {int(counted['miss_failed'])} failed)",
                "ok", {"ratio": round(ratio, 4), "requests": int(answered),
                       **{k: int(v) for k, v in counted.items()}})]


def _readiness(readings: Readings, reasons: list[str]) -> list[Row]:
    found = readings.readiness
    if isinstance(found, Unreachable):
        return _unknown_rows("components", ["readiness"])
    if not found:
        reasons.append("no clusterregistry component found")
        return [Row("components", "readiness", "no component found", "degraded")]
    rows = []
    for component in found:
        ok = component.wanted > 0 and component.ready >= component.wanted
        text = f"{component.ready}/{component.wanted} ready"
        if component.detail:
            text += f" ({component.detail})"
        if not ok:
            reasons.append(f"{component.name} not ready ({component.ready}/{component.wanted}"
                           + (f", {component.detail}" if component.detail else "") + ")")
        rows.append(Row("components", component.name, text, "ok" if ok else "degraded",
                        {"ready": component.ready, "wanted": component.wanted}))
    return rows


def assemble(readings: Readings) -> Status:
    """The status: every row, and healthy only with every source read and nothing wrong.

    Degraded by: an unreachable source; storage at 90% of the volume or more; a Failed
    Artifact; a Pending or Mirroring one older than `stuck_after`; a missing stream or
    durable consumer; a last GC run that failed; a component not ready. A consumer's lag,
    the hit ratio and usage above the GC threshold are shown, not judged: they are normal
    under load and GC's own business.
    """
    reasons: list[str] = []
    for source in (readings.artifacts, readings.bus, readings.gc_metrics,
                   readings.front_metrics, readings.readiness):
        if isinstance(source, Unreachable):
            reasons.append(_unreachable_reason(source))
    rows = [
        *_storage(readings, reasons),
        *_artifacts(readings, reasons),
        *_queue_and_consumers(readings, reasons),
        *_gc(readings, reasons),
        *_front(readings),
        *_readiness(readings, reasons),
    ]
    return Status(healthy=not reasons, reasons=reasons, rows=rows, time=readings.now)


def exit_code(status: Status) -> int:
    return 0 if status.healthy else 1


_MARKS: Final[Mapping[str, str]] = {"degraded": "!", "unknown": "?", "ok": " ", "info": " "}


def render(status: Status) -> str:
    """The screen: the verdict and its reasons, then one aligned line per row
    (`!` marks a degraded row, `?` an unknown one)."""
    lines = [f"clusterregistry: {'healthy' if status.healthy else 'DEGRADED'}"
             f"  ({_clock(status.time)})"]
    lines += [f"  - {reason}" for reason in status.reasons]
    lines.append("")
    section_width = max((len(r.section) for r in status.rows), default=0)
    item_width = max((len(r.item) for r in status.rows), default=0)
    previous = ""
    for row in status.rows:
        section = row.section.upper() if row.section != previous else ""
        previous = row.section
        lines.append(f"{_MARKS[row.state]} {section:<{section_width}}  {row.item:<{item_width}}"
                     f"  {row.text}".rstrip())
    return "\n".join(lines) + "\n"


def to_json(status: Status) -> str:
    """`-o json`: the verdict, the reasons, and every row with its values, by section."""
    sections: dict[str, list[dict[str, Any]]] = {}
    for row in status.rows:
        sections.setdefault(row.section, []).append(
            {"item": row.item, "state": row.state, "text": row.text, **dict(row.data)})
    document = {
        "status": "healthy" if status.healthy else "degraded",
        "healthy": status.healthy,
        "reasons": list(status.reasons),
        "time": _clock(status.time),
        "sections": sections,
    }
    return json.dumps(document, indent=2, default=str) + "\n"


# -- where to read: flags, settings, a sandbox's state file -------------------------------------


@dataclass
class Endpoints:
    """Where each source is; None: the default (through the Kubernetes API)."""

    config: str | None = None
    kubeconfig: str | None = None
    servers: list[str] | None = None
    probes: dict[str, str] = field(default_factory=dict)
    gc_metrics: list[str] | None = None
    front_metrics: list[str] | None = None


def read_sandbox(document: Mapping[str, Any]) -> Endpoints:
    """Where a sandbox's parts are, from its `state.json` (`clusterregistry sandbox up`
    writes it): the settings file, the kubeconfig, and each service's probe port, whose
    /readyz is its readiness and /metrics its metrics."""
    probes: dict[str, str] = {}
    gc: list[str] = []
    fronts: list[str] = []
    for component in document.get("components") or []:
        url = str(component.get("health_url") or "")
        if component.get("role") != "service" or not url:
            continue
        name = str(component.get("name"))
        probes[name] = url
        metrics = url.rsplit("/", 1)[0] + "/metrics"
        if name == "gc":
            gc.append(metrics)
        elif name.startswith("front"):
            fronts.append(metrics)
    return Endpoints(config=document.get("settings") or None,
                     kubeconfig=document.get("kubeconfig") or None,
                     servers=list(document.get("nats_servers") or []) or None,
                     probes=probes, gc_metrics=gc, front_metrics=fronts)


def parse_timeouts(values: Sequence[str]) -> dict[str, float]:
    """`--timeout 3` (every source) and `--timeout nats=5` (one), later ones winning."""
    timeouts = dict.fromkeys(SOURCES, DEFAULT_TIMEOUT)
    for value in values:
        source, _, seconds = value.rpartition("=")
        try:
            number = float(seconds)
        except ValueError:
            raise ConfigError(f"--timeout {value!r}: not SECONDS or SOURCE=SECONDS") from None
        if number <= 0:
            raise ConfigError(f"--timeout {value!r}: must be more than 0 seconds")
        if not source:
            timeouts = dict.fromkeys(SOURCES, number)
        elif source in timeouts:
            timeouts[source] = number
        else:
            raise ConfigError(f"--timeout {value!r}: unknown source {source!r}; "
                              f"expected one of {', '.join(SOURCES)}")
    return timeouts


def _parse_probes(values: Sequence[str]) -> dict[str, str]:
    probes = {}
    for value in values:
        name, sep, url = value.partition("=")
        if not sep or not name or not url:
            raise ConfigError(f"--probe {value!r}: expected NAME=URL")
        probes[name] = url
    return probes


def _endpoints(args: argparse.Namespace) -> Endpoints:
    found = Endpoints()
    if args.sandbox:
        path = Path(args.sandbox) / "state.json"
        try:
            found = read_sandbox(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--sandbox {args.sandbox}: no readable state.json: {exc}") from None
    if args.config:
        found.config = args.config
    if args.kubeconfig:
        found.kubeconfig = args.kubeconfig
    if args.server:
        found.servers = list(args.server)
    if args.probe:
        found.probes = _parse_probes(args.probe)
    if args.gc_metrics:
        found.gc_metrics = list(args.gc_metrics)
    if args.front_metrics:
        found.front_metrics = list(args.front_metrics)
    if found.kubeconfig is None and not os.environ.get("KUBECONFIG"):
        default = Path.home() / ".kube" / "config"
        if default.is_file():  # where kubectl looks too
            found.kubeconfig = str(default)
    return found


# -- readers: the I/O ---------------------------------------------------------------------------


async def _bounded(source: str, where: str, timeout: float,
                   read: Callable[[], Awaitable[T]]) -> T | Unreachable:
    """`read()` within `timeout`, or what kept it from answering."""
    try:
        return await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        return Unreachable(source, where, f"no answer within {timeout:g}s")
    except (ClusterRegistryError, OSError) as exc:
        return Unreachable(source, where, _why(exc))
    except Exception as exc:  # a library's own error class: still this source's failure
        from aiohttp import ClientError  # noqa: PLC0415

        if isinstance(exc, ClientError | ValueError):
            return Unreachable(source, where, _why(exc))
        raise


def _why(exc: BaseException) -> str:
    """A short reason: aiohttp's connection errors name the host and the OS error twice."""
    from aiohttp import ClientConnectorError  # noqa: PLC0415

    if isinstance(exc, ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    return (str(exc) or type(exc).__name__)[:200]


def _timestamp(text: str) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _artifact_view(item: Mapping[str, Any]) -> ArtifactView:
    metadata = item.get("metadata") or {}
    status = item.get("status") or {}
    return ArtifactView(name=str(metadata.get("name", "")),
                        source=str((item.get("spec") or {}).get("sourceArtifact", "")),
                        phase=str(status.get("phase") or ""),
                        created=_timestamp(str(metadata.get("creationTimestamp") or "")),
                        message=str(status.get("message") or ""))


async def _with_api(kubeconfig: str | None, use: Callable[[Any], Awaitable[T]]) -> T:
    from clusterregistry.kube.clients import api_client  # noqa: PLC0415

    api = await api_client(kubeconfig)
    try:
        return await use(api)
    finally:
        await api.close()


async def read_artifacts(kubeconfig: str | None) -> list[ArtifactView]:
    from clusterregistry.kube.artifacts import Artifacts  # noqa: PLC0415

    async def listing(api: Any) -> list[ArtifactView]:
        return [_artifact_view(item) for item in await Artifacts(api).list()]

    return await _with_api(kubeconfig, listing)


async def read_workloads(kubeconfig: str | None, namespace: str) -> list[Readiness]:
    from clusterregistry.kube.inspecting import workloads  # noqa: PLC0415

    async def listing(api: Any) -> list[Readiness]:
        return [Readiness(w.name, w.ready, w.replicas, w.kind)
                for w in await workloads(api, namespace)]

    return await _with_api(kubeconfig, listing)


async def read_probes(probes: Mapping[str, str]) -> list[Readiness]:
    """Each probe's /readyz: ready when it answers 200 (a refused connection: not ready)."""
    import aiohttp  # noqa: PLC0415

    async def one(session: aiohttp.ClientSession, name: str, url: str) -> Readiness:
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return Readiness(name, 1, 1)
                body = (await response.text())[:120].strip()
                return Readiness(name, 0, 1, f"{response.status} {body}".strip())
        except (aiohttp.ClientError, OSError) as exc:
            return Readiness(name, 0, 1, _why(exc))

    async with aiohttp.ClientSession() as session:
        return list(await asyncio.gather(*(one(session, n, u) for n, u in probes.items())))


def parse_metrics(text: str) -> list[Sample]:
    """Prometheus text exposition as samples (the parser prometheus_client ships)."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    return [Sample(s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(text) for s in family.samples]


async def read_metric_urls(urls: Sequence[str]) -> list[Sample]:
    """Every URL's /metrics, samples concatenated (several fronts: their counts add up)."""
    import aiohttp  # noqa: PLC0415

    samples: list[Sample] = []
    async with aiohttp.ClientSession(raise_for_status=True) as session:
        for url in urls:
            async with session.get(url) as response:
                samples += parse_metrics(await response.text())
    return samples


async def read_metric_service(kubeconfig: str | None, namespace: str,
                              service: str) -> list[Sample]:
    from clusterregistry.kube.inspecting import service_get  # noqa: PLC0415

    async def scrape(api: Any) -> list[Sample]:
        return parse_metrics(await service_get(api, namespace, service, "metrics"))

    return await _with_api(kubeconfig, scrape)


def _gc_run(data: bytes) -> GcRun | None:
    import msgspec  # noqa: PLC0415

    from clusterregistry import schemas  # noqa: PLC0415

    try:
        event = msgspec.json.decode(data, type=schemas.GcEvent)
    except msgspec.DecodeError:
        return None
    return GcRun(event=event.event, time=event.time, bytes_freed=event.bytes_freed,
                 deleted=event.deleted, read_only_seconds=event.read_only_seconds,
                 dry_run=event.dry_run, message=event.message)


async def read_bus(servers: Sequence[str], timeout: float) -> BusReading:
    """The streams' consumers and the last GC run's end, as `nats consumer info` shows them."""
    from clusterregistry.bus import inspecting  # noqa: PLC0415
    from clusterregistry.bus.connecting import connect  # noqa: PLC0415

    bus = await connect(servers, name="clusterregistry-status", connect_timeout=timeout,
                        first_connect_timeout=timeout)
    try:
        streams: dict[str, bool] = {}
        consumers: list[ConsumerView] = []
        for stream in (subjects.KUBE_STREAM, subjects.MIRROR_STREAM):
            streams[stream] = await inspecting.stream_size(bus, stream) is not None
            consumers += [ConsumerView(c.stream, c.name, c.num_pending, c.num_ack_pending,
                                       c.num_redelivered)
                          for c in await inspecting.consumers(bus, stream)]
        runs = []
        if await inspecting.stream_size(bus, subjects.GC_STREAM) is not None:
            for end in GC_RUN_ENDS:
                last = await inspecting.last_message(bus, subjects.GC_STREAM, subjects.gc(end))
                run = _gc_run(last.data) if last is not None else None
                if run is not None:
                    runs.append(run)
        last_gc = max(runs, key=lambda r: r.time) if runs else None
        return BusReading(streams, consumers, last_gc)
    finally:
        await bus.close(drain_timeout=0)


async def survey(settings: Settings, endpoints: Endpoints, timeouts: Mapping[str, float],
                 *, stuck_after: float) -> Readings:
    """Every source at once, each under its own timeout."""
    # the clients first: an import blocks the loop, and would eat the others' timeouts
    import aiohttp  # noqa: F401, PLC0415
    import prometheus_client.parser  # noqa: F401, PLC0415

    import clusterregistry.bus.connecting  # noqa: PLC0415
    import clusterregistry.kube.artifacts  # noqa: PLC0415
    import clusterregistry.kube.inspecting  # noqa: PLC0415
    import clusterregistry.schemas  # noqa: F401, PLC0415

    namespace = settings.namespace
    kubeconfig = endpoints.kubeconfig
    kube_where = kubeconfig or os.environ.get("KUBECONFIG") or "in-cluster"
    servers = endpoints.servers or settings.nats.servers

    def metrics(source: str, urls: list[str] | None, service: str
                ) -> Awaitable[Sequence[Sample] | Unreachable]:
        if urls is not None:
            return _bounded(source, ", ".join(urls) or "none", timeouts[source],
                            lambda: read_metric_urls(urls))
        return _bounded(source, f"service {namespace}/{service} via {kube_where}",
                        timeouts[source],
                        lambda: read_metric_service(kubeconfig, namespace, service))

    if endpoints.probes:
        probes = endpoints.probes
        readiness = _bounded(READINESS, f"{len(probes)} probes", timeouts[READINESS],
                             lambda: read_probes(probes))
    else:
        readiness = _bounded(READINESS, f"workloads in {namespace} via {kube_where}",
                             timeouts[READINESS], lambda: read_workloads(kubeconfig, namespace))
    artifacts, bus, gc_metrics, front_metrics, ready = await asyncio.gather(
        _bounded(KUBERNETES, kube_where, timeouts[KUBERNETES],
                 lambda: read_artifacts(kubeconfig)),
        _bounded(NATS, ", ".join(servers), timeouts[NATS],
                 lambda: read_bus(servers, timeouts[NATS])),
        metrics(GC_METRICS, endpoints.gc_metrics, GC_SERVICE),
        metrics(FRONT_METRICS, endpoints.front_metrics, FRONT_SERVICE),
        readiness,
    )
    cluster = settings.cluster_registry
    return Readings(
        now=time.time(), storage_size=cluster.storage_size,
        threshold=cluster.cluster_registry_gc_threshold,
        cadence=cluster.cluster_registry_gc_cadence,
        artifacts=artifacts, bus=bus, gc_metrics=gc_metrics, front_metrics=front_metrics,
        readiness=ready, stuck_after=stuck_after)


# -- the command --------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text",
                        help="json: the same status for scripts")
    parser.add_argument("--config", default=None, metavar="PATH",
                        help="settings YAML (the ConfigMap): NATS, namespace, storageSize, GC")
    parser.add_argument("--kubeconfig", default=None, metavar="PATH",
                        help="the API server (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
    parser.add_argument("--server", action="append", default=None, metavar="URL",
                        help="NATS server (repeatable; default: nats.servers of the settings)")
    parser.add_argument("--sandbox", default=None, metavar="DIR",
                        help="a sandbox's directory: its settings, kubeconfig and probe ports")
    parser.add_argument("--probe", action="append", default=[], metavar="NAME=URL",
                        help="a component's /readyz (repeatable; default: the workloads' "
                        "ready replicas from the API server)")
    parser.add_argument("--gc-metrics", action="append", default=None, metavar="URL",
                        help=f"GC's /metrics (default: service {GC_SERVICE} via the API server)")
    parser.add_argument("--front-metrics", action="append", default=None, metavar="URL",
                        help="a front's /metrics (repeatable, summed; default: service "
                        f"{FRONT_SERVICE} via the API server)")
    parser.add_argument("--timeout", action="append", default=[],
                        metavar="[SOURCE=]SECONDS",
                        help=f"per source, default {DEFAULT_TIMEOUT:g}s; sources: "
                        f"{', '.join(SOURCES)}")
    parser.add_argument("--stuck-after", type=float, default=600.0, metavar="SECONDS",
                        help="a Pending or Mirroring Artifact older than this is degraded")


def command(args: argparse.Namespace) -> int:
    """0 healthy, 1 degraded (the reasons printed), 2 bad arguments or settings."""
    import logging  # noqa: PLC0415

    from clusterregistry import config  # noqa: PLC0415

    # nats-py's reconnect warnings and the like are noise on a status screen
    logging.basicConfig(level=logging.CRITICAL)
    try:
        timeouts = parse_timeouts(args.timeout)
        endpoints = _endpoints(args)
        settings = config.load(endpoints.config)
    except ConfigError as exc:
        print(f"clusterregistry status: {exc}", file=sys.stderr)
        return 2
    readings = asyncio.run(survey(settings, endpoints, timeouts, stuck_after=args.stuck_after))
    status = assemble(readings)
    sys.stdout.write(to_json(status) if args.output == "json" else render(status))
    sys.stdout.flush()
    return exit_code(status)


COMMAND = Command(HELP, add_arguments, command)
