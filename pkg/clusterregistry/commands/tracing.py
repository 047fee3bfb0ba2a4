"""`clusterregistry trace`: the event streams as a readable timeline.

Everything clusterregistry does is driven by messages on JetStream, so when a
pod's image was not rewritten, or an image was mirrored twice, the question
is always "what did the bus carry, and in which order?". `nats sub` and
`nats stream view` answer it one raw JSON document at a time and can filter by
subject only, which names a uid, never an object's name or image. This
command follows the streams live, from a time or from the start, in stream
order, filters by kind, namespace, name and image, and prints one line per
message (or, with `--json`, the message itself).

The pure parts (decoding, filtering, rendering, parsing `--since`, planning
which streams to read) are kept apart from the NATS I/O, which is one
`follow()` coroutine over the `bus.following` adapter. Each stream is read by
an ordered, ephemeral consumer that is recreated after a gap or a server
restart from the next stream sequence, so nothing is lost or shown twice. A
work-queue stream (`CLUSTERREGISTRY_MIRROR`) must not get a second consumer
(it would take work away from the mirror), so its subjects are followed with
a plain subscription: live only, no sequences. How, and why, is told in
`bus/following.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, TextIO

import msgspec

from clusterregistry import schemas, subjects
from clusterregistry.commands import Command
from clusterregistry.errors import ClusterRegistryError, ConfigError, RetryableError

if TYPE_CHECKING:
    from clusterregistry.bus.connecting import Bus
    from clusterregistry.bus.following import Delivered, OrderedReader, Start

__all__ = [
    "COMMAND",
    "HELP",
    "Filters",
    "Other",
    "Record",
    "Source",
    "add_arguments",
    "command",
    "day_line",
    "decode",
    "follow",
    "interest",
    "matches",
    "parse_duration",
    "parse_since",
    "plan_sources",
    "record_kind",
    "render",
    "run",
    "subjects_collide",
    "to_json",
]

HELP = "follow the event streams as a readable timeline"

# the families a record can belong to besides the Kubernetes kinds
MIRROR: str = "mirror"
GC: str = "gc"
ALL_KINDS: tuple[str, ...] = (*subjects.KINDS, MIRROR, GC)

# records between the readers and the printer: enough to batch, small enough to push back
_QUEUE_SIZE = 1024
# how long the command waits for a first connection to NATS
_CONNECT_DEADLINE = 10.0

_SHORT_DIGEST = 12
_SHORT_TRACE = 8
_OTHER_WIDTH = 160


# -- records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Other:
    """A payload that is not a KubeEvent or RelistMarker: mirror and gc messages (whose
    schemas belong to their services), or a kube message that did not decode."""

    family: str
    value: Any = None
    error: str = ""


Payload = schemas.KubeEvent | schemas.RelistMarker | Other


@dataclass(frozen=True, kw_only=True)
class Record:
    """One message as the trace saw it.

    `seq` is the stream sequence; None for a message seen on a plain subscription
    (work-queue streams), whose `time` is then when it arrived here.
    """

    stream: str
    subject: str
    seq: int | None
    time: datetime
    headers: Mapping[str, str]
    data: bytes
    payload: Payload


def _family(subject: str) -> str:
    """`kube`, `mirror`, `gc` ...: the token after the prefix."""
    tokens = subject.split(".")
    return tokens[1] if len(tokens) > 1 and tokens[0] == subjects.PREFIX else ""


def decode(subject: str, data: bytes) -> Payload:
    """The typed payload of a message, chosen by its subject; never raises."""
    tokens = subject.split(".")
    family = _family(subject)
    if family == "kube" and len(tokens) >= 3:
        kind = tokens[2]
        try:
            if len(tokens) == 4 and tokens[3] == "_relist":
                return schemas.relist_marker_decoder.decode(data)
            return schemas.kube_event_decoder.decode(data)
        except msgspec.DecodeError as exc:
            return Other(kind, _loose_json(data), str(exc))
    try:
        return Other(family or subject, msgspec.json.decode(data))
    except msgspec.DecodeError as exc:
        return Other(family or subject, None, str(exc))


def _loose_json(data: bytes) -> Any:
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None


def record_kind(record: Record) -> str:
    """The kind a record is filtered by: its Kubernetes kind, or `mirror` / `gc`."""
    payload = record.payload
    if isinstance(payload, schemas.KubeEvent | schemas.RelistMarker):
        return payload.kind
    return payload.family


# -- filters ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Filters:
    """What to show. Within one field any value may match; all fields must match.

    `kinds` are exact (`pod`, ..., `mirror`, `gc`); `namespaces` and `names` are globs;
    an `images` entry with a glob character (`*?[`) is a glob over the whole reference,
    otherwise a substring. Empty means no restriction.
    """

    kinds: frozenset[str] = frozenset()
    namespaces: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    images: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kinds) - set(ALL_KINDS))
        if unknown:
            raise ValueError(
                f"unknown kind {', '.join(unknown)}; expected one of {', '.join(ALL_KINDS)}"
            )

    def wants(self, kind: str) -> bool:
        return not self.kinds or kind in self.kinds


def _containers(payload: Payload) -> Iterator[tuple[str, schemas.Container]]:
    """Every container of an object with the role it plays: ``, `init`, `eph`."""
    if isinstance(payload, schemas.KubeEvent):
        if payload.pod is not None:
            yield from (("", c) for c in payload.pod.containers)
            yield from (("init", c) for c in payload.pod.init_containers)
            yield from (("eph", c) for c in payload.pod.ephemeral_containers)
        if payload.template is not None:
            yield from (("", c) for c in payload.template.containers)
            yield from (("init", c) for c in payload.template.init_containers)


def _strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON value (mirror/gc payloads, Artifact specs)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _images(payload: Payload) -> Iterator[str]:
    for _, container in _containers(payload):
        yield container.image
        if container.original_image:
            yield container.original_image
    if isinstance(payload, schemas.KubeEvent) and payload.artifact is not None:
        # the Artifact schema belongs to the reconciler: any string of its spec may be a ref
        yield from _strings(payload.artifact.spec)
    if isinstance(payload, Other):
        yield from _strings(payload.value)


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _image_matches(pattern: str, image: str) -> bool:
    return fnmatch.fnmatchcase(image, pattern) if _is_glob(pattern) else pattern in image


def matches(record: Record, filters: Filters) -> bool:
    """Whether `record` passes `filters`.

    Relist markers belong to a kind, not to an object: only the kind filter applies
    to them, so SYNC events are always shown with the relist that brackets them.
    mirror and gc messages have no namespace or name: a namespace or name filter
    hides them; an image filter looks at every string they carry.
    """
    payload = record.payload
    if not filters.wants(record_kind(record)):
        return False
    if isinstance(payload, schemas.RelistMarker):
        return True
    if isinstance(payload, schemas.KubeEvent):
        namespace, name = payload.namespace, payload.name
    else:
        namespace, name = "", ""
        if filters.namespaces or filters.names:
            return False
    if filters.namespaces and not any(
        fnmatch.fnmatchcase(namespace, p) for p in filters.namespaces
    ):
        return False
    if filters.names and not any(fnmatch.fnmatchcase(name, p) for p in filters.names):
        return False
    if filters.images:
        images = list(_images(payload))
        return any(_image_matches(p, i) for p in filters.images for i in images)
    return True


# -- rendering ----------------------------------------------------------------------------------


def _clock(moment: datetime, tz: tzinfo | None) -> str:
    local = moment.astimezone(tz)
    return local.strftime("%H:%M:%S.") + f"{local.microsecond // 1000:03d}"


def _short(value: str, width: int) -> str:
    return value if len(value) <= width else value[:width] + "…"


def _digest(image_id: str) -> str:
    """`sha256:0123456789ab…` out of an imageID (`docker-pullable://x@sha256:…` too)."""
    at = image_id.find("sha256:")
    if at < 0:
        return image_id
    return _short(image_id[at:], len("sha256:") + _SHORT_DIGEST)


def _container(role: str, container: schemas.Container) -> str:
    text = f"{role + ':' if role else ''}{container.name}={container.image}"
    if container.original_image and container.original_image != container.image:
        text += f" (from {container.original_image})"
    if container.image_id:
        text += f" {_digest(container.image_id)}"
    return text


def _compact(value: Any, width: int) -> str:
    return _short(msgspec.json.encode(value).decode(), width)


def _object_name(namespace: str, name: str) -> str:
    if namespace and namespace != subjects.CLUSTER_SCOPED:
        return f"{namespace}/{name}"
    return name


def _event_fields(event: schemas.KubeEvent) -> list[str]:
    parts = [event.kind, event.type, _object_name(event.namespace, event.name),
             f"rv={event.resource_version}"]
    if event.owner is not None:
        parts.append(f"owner={event.owner.kind}/{event.owner.name}")
    if event.pod is not None:
        state = " ".join(
            p for p in (event.pod.node_name, event.pod.phase,
                        "deleting" if event.pod.deletion_timestamp else "") if p
        )
        if state:
            parts.append(state)
    if event.template is not None and event.template.replicas is not None:
        parts.append(f"replicas={event.template.replicas}")
    parts.extend(_container(role, c) for role, c in _containers(event))
    if event.artifact is not None:
        if event.artifact.spec:
            parts.append(f"spec={_compact(event.artifact.spec, _OTHER_WIDTH)}")
        if event.artifact.status:
            parts.append(f"status={_compact(event.artifact.status, _OTHER_WIDTH)}")
    if event.relist:
        parts.append(f"relist={event.relist}")
    if event.oversized:
        parts.append("OVERSIZED")
    return parts


def _marker_fields(marker: schemas.RelistMarker) -> list[str]:
    parts = [marker.kind, f"RELIST {marker.phase}", f"id={marker.relist}",
             f"rv={marker.resource_version}"]
    if marker.phase == "end":
        parts.append(f"count={marker.count}")
    return parts


def _other_fields(record: Record, other: Other) -> list[str]:
    rest = record.subject.split(".", 2)[2] if record.subject.count(".") >= 2 else record.subject
    parts = [other.family]
    if other.error:
        parts += ["UNDECODABLE", record.subject, _short(other.error, _OTHER_WIDTH)]
    else:
        parts += [rest, _compact(other.value, _OTHER_WIDTH)]
    return parts


def render(record: Record, *, tz: tzinfo | None = None) -> str:
    """One timeline line: time (in `tz`, local when None), `#sequence`, what happened.

    `15:20:13.123  #42  pod  MODIFIED  nf/upf-7d9c-abcde  rv=1234  node-2 Running
    upf=edge.local:5000/acr.io/nf/upf:1.2 (from acr.io/nf/upf:1.2) sha256:ab12…  trace=3f2a…`
    """
    payload = record.payload
    if isinstance(payload, schemas.KubeEvent):
        parts = _event_fields(payload)
    elif isinstance(payload, schemas.RelistMarker):
        parts = _marker_fields(payload)
    else:
        parts = _other_fields(record, payload)
    trace = record.headers.get(subjects.TRACE_HEADER)
    if trace:
        parts.append(f"trace={_short(trace, _SHORT_TRACE)}")
    seq = f"#{record.seq}" if record.seq is not None else "#-"
    return "  ".join([_clock(record.time, tz), seq, *parts])


def day_line(
    previous: datetime | None, current: datetime, *, tz: tzinfo | None = None
) -> str | None:
    """A `--- 2025-01-07 UTC+01:00 ---` line when `current` starts a new day (in `tz`).

    Timeline lines carry only the time of day; this says which day they are on.
    """
    day: date = current.astimezone(tz).date()
    if previous is not None and previous.astimezone(tz).date() == day:
        return None
    zone = current.astimezone(tz).strftime("%Z") or "local"
    return f"--- {day.isoformat()} {zone} ---"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def to_json(record: Record) -> str:
    """The message itself as one JSON line: time, stream, seq, subject, headers, payload.

    `payload` is the JSON as it was on the wire (unknown fields kept); a message that
    is not JSON has `payload: null` and its bytes as text in `data`.
    """
    document: dict[str, Any] = {
        "time": _iso(record.time),
        "stream": record.stream,
        "seq": record.seq,
        "subject": record.subject,
        "headers": dict(record.headers),
    }
    try:
        document["payload"] = msgspec.json.decode(record.data)
    except msgspec.DecodeError:
        document["payload"] = None
        document["data"] = record.data.decode(errors="replace")
    return msgspec.json.encode(document).decode()


# -- --since ------------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> timedelta:
    """`10m`, `2h`, `1h30m`, `45s`, `1.5d`, `500ms` as a timedelta."""
    value = text.strip()
    position, seconds = 0, 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if not value or position != len(value):
        raise ValueError(f"{text!r} is not a duration like 10m, 2h or 1h30m")
    return timedelta(seconds=seconds)


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """The start of `--since`: a duration back from `now`, or an RFC 3339 time.

    A time without an offset is taken as local time. The result is aware, in UTC.
    """
    try:
        delta = parse_duration(text)
    except ValueError:
        pass
    else:
        return (now or datetime.now(UTC)).astimezone(UTC) - delta
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: expected a duration (10m, 2h) or an RFC 3339 time "
            "(2025-01-07T15:20:00Z)"
        ) from None
    return moment.astimezone(UTC)  # naive: astimezone assumes local time


# -- which streams ------------------------------------------------------------------------------


def subjects_collide(first: str, second: str) -> bool:
    """Whether two NATS subjects (wildcards allowed) can match one same subject."""
    a, b = first.split("."), second.split(".")
    for x, y in zip(a, b, strict=False):
        if ">" in (x, y):
            return True
        if x != y and "*" not in (x, y):
            return False
    return len(a) == len(b)


def interest(filters: Filters) -> tuple[str, ...]:
    """The subjects to follow: narrowed by kind on the server, so a `--kind pod` trace
    of a busy stream does not ship every other kind to the client."""
    wanted: list[str] = []
    kube_kinds = [k for k in subjects.KINDS if k in filters.kinds]
    if not filters.kinds:
        wanted.append(subjects.KUBE_ALL)
    else:
        wanted.extend(subjects.kube_kind(k) for k in kube_kinds)
    if filters.wants(MIRROR):
        wanted += [subjects.MIRROR_REQUEST, subjects.MIRROR_RESULT_ALL]
    if filters.wants(GC):
        wanted.append(subjects.GC_ALL)
    return tuple(wanted)


@dataclass(frozen=True)
class Source:
    """One stream to read, with the filter subjects of its consumer."""

    stream: str
    subjects: tuple[str, ...]
    work_queue: bool = False


def plan_sources(
    streams: Iterable[tuple[str, Sequence[str], bool]], wanted: Sequence[str]
) -> list[Source]:
    """Sources for the `(name, subjects, is_work_queue)` streams that hold wanted subjects.

    Streams without subjects of their own (mirrors, sourcing streams) are skipped: they
    copy what another stream holds, and the trace would show it twice.
    """
    sources = []
    for name, stream_subjects, work_queue in streams:
        mine = tuple(
            w for w in wanted if any(subjects_collide(w, s) for s in stream_subjects)
        )
        if mine:
            sources.append(Source(name, mine, work_queue))
    return sorted(sources, key=lambda s: (s.stream != subjects.KUBE_STREAM, s.stream))


# -- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Failed:
    error: BaseException


Sink = Callable[[Record | _Failed], Awaitable[None]]


def _record(message: Delivered) -> Record:
    return Record(
        stream=message.stream,
        subject=message.subject,
        seq=message.seq,
        time=message.time,
        headers=message.headers,
        data=message.data,
        payload=decode(message.subject, message.data),
    )


async def _read(reader: OrderedReader, sink: Sink) -> None:
    """Run `reader` into `sink`; a failure goes to the sink too, so the printer raises it."""

    async def deliver(message: Delivered) -> None:
        await sink(_record(message))

    try:
        await reader.run(deliver)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        await sink(_Failed(exc))
        raise


def _describe(start: Start) -> str:
    if start.from_start:
        return "from the start"
    if start.since is not None:
        return f"since {_iso(start.since)}"
    return "new messages only"


async def follow(
    bus: Bus,
    *,
    filters: Filters,
    since: datetime | None = None,
    from_start: bool = False,
    limit: int | None = None,
    idle_timeout: float | None = None,
    as_json: bool = False,
    out: TextIO,
    err: TextIO | None = None,
    tz: tzinfo | None = None,
) -> int:
    """Print the records that pass `filters` to `out` until `limit` records are printed
    or nothing arrived for `idle_timeout` seconds (forever when both are None).

    Notes (which streams, what cannot be followed) go to `err`. Returns how many records
    were printed. Raises NoStreamError when no stream holds a wanted subject (or the
    streams cannot be listed), RetryableError when the connection is closed for good.
    """
    # NATS only when a trace runs: the pure parts above are what the rest of the CLI loads
    from clusterregistry.bus.following import (  # noqa: PLC0415
        FETCH_WINDOW,
        ConsumerRefusedError,
        LiveTap,
        NoStreamError,
        OrderedReader,
        Start,
        list_streams,
    )
    from clusterregistry.runtime.lifecycle import cancel_and_wait  # noqa: PLC0415

    if from_start and since is not None:
        raise ValueError("from_start and since exclude each other")
    start = Start(from_start=from_start, since=since)
    notes = err if err is not None else sys.stderr
    wanted = interest(filters)
    streams = await list_streams(bus)
    sources = plan_sources(streams, wanted)
    kube_wanted = [w for w in wanted if w.startswith(f"{subjects.PREFIX}.kube.")]
    if kube_wanted and not any(w in s.subjects for s in sources for w in kube_wanted):
        print(f"note: no stream holds {subjects.KUBE_ALL} yet (the relay creates "
              f"{subjects.KUBE_STREAM})", file=notes)
    if not sources:
        raise NoStreamError(
            f"no JetStream stream holds {', '.join(wanted)}: nothing to trace "
            f"(is the relay running? it creates {subjects.KUBE_STREAM})"
        )

    queue: asyncio.Queue[Record | _Failed] = asyncio.Queue(maxsize=_QUEUE_SIZE)
    readers: list[OrderedReader] = []
    taps: list[LiveTap] = []
    tasks: list[asyncio.Task[None]] = []
    printed = 0

    async def tapped(message: Delivered) -> None:
        await queue.put(_record(message))

    try:
        for source in sources:
            what = f"{source.stream} [{', '.join(source.subjects)}]"
            if source.work_queue:
                tap = LiveTap(bus, source.stream, source.subjects)
                await tap.start(tapped)
                taps.append(tap)
                print(f"note: {what} is a work queue: following its live publishes only, "
                      "without stream sequences", file=notes)
                continue
            reader = OrderedReader(bus, source.stream, source.subjects, start=start)
            try:
                await reader.create()
            except ConsumerRefusedError as exc:
                print(f"note: cannot follow {what}: {exc}", file=notes)
                continue
            readers.append(reader)
            tasks.append(asyncio.create_task(_read(reader, queue.put)))
            print(f"tracing {what}, {_describe(start)}", file=notes)
        notes.flush()
        if not readers and not taps:
            raise NoStreamError("none of the streams could be followed: " + ", ".join(
                s.stream for s in sources))

        previous: datetime | None = None
        while limit is None or printed < limit:
            try:
                async with asyncio.timeout(idle_timeout):
                    item = await queue.get()
            except TimeoutError:
                break
            if isinstance(item, _Failed):
                raise item.error
            if not matches(item, filters):
                continue
            if as_json:
                out.write(to_json(item) + "\n")
            else:
                header = day_line(previous, item.time, tz=tz)
                if header:
                    out.write(header + "\n")
                out.write(render(item, tz=tz) + "\n")
                previous = item.time
            out.flush()
            printed += 1
    finally:
        for reader in readers:
            reader.stopping = True
        # their failures were already raised through the queue
        await cancel_and_wait(*tasks, nudge=FETCH_WINDOW)
        for tap in taps:
            await tap.stop()
        for reader in readers:
            await reader.discard()
    return printed


# -- command line -------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `clusterregistry trace`."""
    parser.description = (
        "Follow the clusterregistry streams (clusterregistry.kube.>, and the mirror and gc "
        "subjects when their streams exist) and print one line per message, in stream order."
    )
    parser.add_argument("--server", action="append", default=None, metavar="URL",
                        help="NATS server URL (repeatable; default: settings nats.servers)")
    parser.add_argument("--file", default=None, metavar="PATH",
                        help="settings YAML (the ConfigMap) to read nats.servers from")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--since", default=None, metavar="WHEN",
                       help="start at a time: a duration back (10m, 2h, 1h30m) or RFC 3339 "
                            "(2025-01-07T15:20:00Z; no offset means local time)")
    start.add_argument("--from-start", action="store_true",
                       help="start at the first message the streams hold")
    parser.add_argument("--kind", action="append", default=[], choices=ALL_KINDS,
                        help="only this kind (repeatable)")
    parser.add_argument("--namespace", "-n", action="append", default=[], metavar="GLOB",
                        help="only objects in this namespace (glob, repeatable)")
    parser.add_argument("--name", action="append", default=[], metavar="GLOB",
                        help="only objects with this name (glob, repeatable)")
    parser.add_argument("--image", action="append", default=[], metavar="PATTERN",
                        help="only objects with a container image or original image "
                             "containing PATTERN (a glob when it has *?[; repeatable)")
    parser.add_argument("--json", action="store_true",
                        help="print each message as one JSON object per line")
    parser.add_argument("--utc", action="store_true", help="times in UTC, not local time")
    parser.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                        help="stop after N printed records")
    parser.add_argument("--timeout", type=_positive_float, default=None, metavar="SECONDS",
                        help="stop after SECONDS without a message")


async def run(args: argparse.Namespace, *, out: TextIO | None = None,
              err: TextIO | None = None) -> int:
    """`clusterregistry trace`: 0 when done, 1 when NATS or the streams are missing,
    2 for bad arguments or settings."""
    from clusterregistry import config  # noqa: PLC0415
    from clusterregistry.bus.connecting import connect  # noqa: PLC0415

    stdout = out if out is not None else sys.stdout
    stderr = err if err is not None else sys.stderr
    try:
        filters = Filters(kinds=frozenset(args.kind), namespaces=tuple(args.namespace),
                          names=tuple(args.name), images=tuple(args.image))
        since = parse_since(args.since) if args.since else None
        servers: list[str] = args.server or config.load(args.file).nats.servers
    except (ValueError, ConfigError) as exc:
        print(f"clusterregistry trace: {exc}", file=stderr)
        return 2
    try:
        # bus.connect retries the first connection for ever (max_reconnect_attempts=-1);
        # a command must give up and say so
        async with asyncio.timeout(_CONNECT_DEADLINE):
            bus = await connect(servers, name="clusterregistry-trace")
    except RetryableError as exc:
        print(f"clusterregistry trace: {exc}", file=stderr)
        return 1
    except TimeoutError:
        print(f"clusterregistry trace: cannot connect to NATS at {', '.join(servers)} "
              f"within {_CONNECT_DEADLINE:g}s", file=stderr)
        return 1
    try:
        await follow(bus, filters=filters, since=since, from_start=args.from_start,
                     limit=args.limit, idle_timeout=args.timeout, as_json=args.json,
                     out=stdout, err=stderr, tz=UTC if args.utc else None)
    except ClusterRegistryError as exc:  # NoStreamError, or NATS lost for good
        print(f"clusterregistry trace: {exc}", file=stderr)
        return 1
    except BrokenPipeError:
        return 0  # `trace | head`: the reader has seen enough
    finally:
        await bus.close()
    return 0


def command(args: argparse.Namespace) -> int:
    """Run the trace to its end; Ctrl-C ends a live trace quietly (exit 130)."""
    try:
        code = asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130
    if code == 0:
        # stdout may be a closed pipe: keep the interpreter's final flush from complaining
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return code


COMMAND = Command(HELP, add_arguments, command)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clusterregistry trace", description=HELP)
    add_arguments(parser)
    return command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(_main())
