"""The README's nats CLI page holds: every name it shows is one `subjects.py` spells, every
sample body is a `schemas` message as it is encoded, and what the services publish is what
`nats sub` would print there.

The nats CLI itself cannot be installed on the build machines, so the test reads the
"Tracing events" section as a newcomer would: the subject table (subject, stream, body,
headers, the `nats sub` to watch it), the consumer table, the bucket table and the sample
output. Then, against a real nats-server, each documented kind of message is published
through the service's own code (the relay's translation and pipeline, the reconciler's
request, the mirror's result and progress, the GC's event, the CLI's GC run request) and
received with
a raw nats-py subscription on the documented subject, as `nats sub` subscribes; each body
must decode into the documented schema and carry exactly the documented headers.
"""

from __future__ import annotations

import asyncio
import json
import re
import types
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, get_args

import msgspec
import nats.errors
import pytest
from nats.aio.client import Client
from prometheus_client import CollectorRegistry

from clusterregistry import references, schemas, subjects
from clusterregistry.bus import flights, ledgers, replying
from clusterregistry.bus.connecting import Bus, connect, round_trip
from clusterregistry.bus.fencing import Fence
from clusterregistry.bus.keyvalues import Records
from clusterregistry.bus.publishing import Pipeline
from clusterregistry.bus.streams import ensure_bucket, ensure_stream, publish
from clusterregistry.config import GcSettings, MirrorSettings
from clusterregistry.gc import collecting
from clusterregistry.gc.metrics import GcMetrics
from clusterregistry.mirror import mirroring
from clusterregistry.oci.copying import CopyReport
from clusterregistry.reconciler import reconciling
from clusterregistry.reconciler.metrics import ReconcilerMetrics
from clusterregistry.reconciler.statuses import Plan
from clusterregistry.relay import translating
from clusterregistry_sandbox.natsservers import NatsServer
from clusterregistry_sandbox.supervising import wait_for
from tests.world.nats import interest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

STREAMS = {subjects.KUBE_STREAM, subjects.MIRROR_STREAM, subjects.GC_STREAM}
BUCKETS = {subjects.REFS_BUCKET, subjects.ARTIFACTS_BUCKET, subjects.RELAY_BUCKET,
           subjects.GC_BUCKET, subjects.MIRROR_BLOBS_BUCKET, subjects.FRONT_FLIGHTS_BUCKET,
           subjects.GC_TAGS_BUCKET}
CONSUMERS = {subjects.TRACKER_CONSUMER, subjects.RECONCILER_ARTIFACTS_CONSUMER,
             subjects.RECONCILER_RESULTS_CONSUMER, subjects.MIRROR_CONSUMER}
# `<base>-<placeholder>`: the names a consumer takes per replica or per run
SUFFIXED = {subjects.RECONCILER_ARTIFACTS_CONSUMER + "-", subjects.TRACE_CONSUMER_PREFIX}
# other `clusterregistry-…` names a reader meets: the relay's Lease, the queue groups
OTHER_NAMES = {subjects.RELAY_LEASE, subjects.GC_QUEUE_GROUP, subjects.RECONCILER_PROGRESS_QUEUE}
HEADERS = {subjects.MSG_ID_HEADER, subjects.TRACE_HEADER}
# every subject clusterregistry publishes on falls within one of these
PUBLISHED = (subjects.KUBE_ALL, subjects.MIRROR_REQUEST, subjects.MIRROR_RESULT_ALL,
             subjects.MIRROR_PROGRESS_ALL, subjects.GC_ALL, subjects.GC_RUN_REQUEST)
# published on core NATS, in no stream: request-reply, and news nobody replays
STREAMLESS = {subjects.GC_RUN_REQUEST, f"{subjects.PREFIX}.mirror.progress.<artifact>"}
GC_EVENTS = set(get_args(schemas.GcEventType))

_SUBJECT = re.compile(r"(?<![\w./-])clusterregistry(?:\.(?:<[a-z-]+>|[\w-]+|\*|>))+")
_DASHED = re.compile(r"(?<![\w./-])clusterregistry-[a-z0-9-]*[a-z0-9](?:-<[a-z-]+>)?")
_STREAM = re.compile(r"\bCLUSTERREGISTRY_[A-Z]+\b")
_HEADER = re.compile(r"\b[A-Z][a-z]+(?:-[A-Z][a-z]*)+\b")


# -- reading the README ------------------------------------------------------------------------


def tracing_section(text: str) -> str:
    start = text.index("\n## Tracing events\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def table(section: str, first_column: str) -> list[list[str]]:
    """The rows of the Markdown table whose header starts with `| first_column |`."""
    lines = section.splitlines()
    for index, line in enumerate(lines):
        if line.startswith(f"| {first_column} |"):
            rows = []
            for row in lines[index + 2:]:
                if not row.startswith("|"):
                    break
                rows.append([cell.strip() for cell in row.strip().strip("|").split("|")])
            return rows
    raise AssertionError(f"no table whose first column is {first_column!r}")


def ticked(cell: str) -> list[str]:
    """The `code` spans of a table cell."""
    return re.findall(r"`([^`]+)`", cell)


def nats_sub_subject(cell: str) -> str:
    """The subject of the `nats sub` (or `nats request`) a table cell shows."""
    (command,) = ticked(cell)
    words = command.split()
    assert words[0] == "nats" and words[1] in ("sub", "request"), command
    return words[2].strip("'")


def code_lines(section: str) -> list[str]:
    return [line[4:] for line in section.splitlines() if line.startswith("    ")]


# -- what subjects.py allows ---------------------------------------------------------------------


def _within(subject: list[str], pattern: list[str]) -> bool:
    """Whether every subject `subject` (wildcards allowed) matches `pattern`."""
    for index, token in enumerate(pattern):
        if token == ">":
            return len(subject) > index
        if index >= len(subject):
            return False
        if token != "*" and token != subject[index]:
            return False
        if token == "*" and subject[index] == ">":
            return False
    return len(subject) == len(pattern)


def _overlap(left: list[str], right: list[str]) -> bool:
    """Whether some subject matches both patterns."""
    for index, (one, other) in enumerate(zip(left, right, strict=False)):
        if ">" in (one, other):
            return len(left) > index and len(right) > index
        if "*" not in (one, other) and one != other:
            return False
    return len(left) == len(right)


def subject_problem(documented: str) -> str | None:
    """Why `documented` (placeholders `<x>` allowed) is not a subject clusterregistry uses."""
    tokens = subject_tokens(documented)
    # a placeholder stands for one token of a published subject; a wildcard a `nats sub`
    # gives may span several (`clusterregistry.mirror.>`), but must catch one at least
    wildcard = "*" in documented.split(".") or documented.endswith(".>")
    fits = _overlap if wildcard else _within
    if not any(fits(tokens, pattern.split(".")) for pattern in PUBLISHED):
        return f"{documented}: within none of {', '.join(PUBLISHED)}"
    wild = {"*", ">"}
    if tokens[:2] == [subjects.PREFIX, "kube"] and len(tokens) > 2:
        if tokens[2] not in (*subjects.KINDS, *wild):
            return f"{documented}: {tokens[2]!r} is not a kind ({', '.join(subjects.KINDS)})"
        if len(tokens) > 5 or (len(tokens) == 4 and tokens[3] not in ("_relist", *wild)):
            return f"{documented}: neither an object's subject nor a relist marker's"
    if tokens[:2] == [subjects.PREFIX, "gc"] and tokens[2] not in (*GC_EVENTS, *wild):
        return f"{documented}: {tokens[2]!r} is not a GC event ({', '.join(sorted(GC_EVENTS))})"
    return None


def dashed_problem(name: str) -> str | None:
    if name in BUCKETS | CONSUMERS | OTHER_NAMES:
        return None
    if "-<" in name and name[:name.index("<")] in SUFFIXED:
        return None
    return f"{name}: neither a bucket, a durable consumer nor another name in subjects.py"


def schema(name: str) -> type[msgspec.Struct]:
    found = getattr(schemas, name, None)
    assert isinstance(found, type) and issubclass(found, msgspec.Struct), (
        f"{name} is not a message of clusterregistry.schemas")
    return found


def documented_schemas(section: str) -> set[type[msgspec.Struct]]:
    return ({schema(ticked(row[2])[0]) for row in table(section, "subject")}
            | {schema(ticked(row[2])[0]) for row in table(section, "bucket")})


def name_problems(section: str) -> list[str]:
    """Every name the section shows that subjects.py does not have, and every stream, bucket
    and durable consumer it has that the section does not show."""
    problems = [problem for subject in _SUBJECT.findall(section)
                if (problem := subject_problem(subject))]
    dashed = set(_DASHED.findall(section))
    problems += [problem for name in sorted(dashed) if (problem := dashed_problem(name))]
    streams = set(_STREAM.findall(section))
    problems += [f"{name}: not a stream in subjects.py" for name in sorted(streams - STREAMS)]
    problems += [f"{name}: a stream the section does not show"
                 for name in sorted(STREAMS - streams)]
    problems += [f"{name}: not shown" for name in sorted(BUCKETS | CONSUMERS)
                 if name not in dashed
                 and not any(shown.startswith(name + "-<") for shown in dashed)]
    problems += [f"{name}: not a header clusterregistry sets"
                 for name in sorted(set(_HEADER.findall(section)) - HEADERS)]
    tables = {row[0] for row in table(section, "bucket")}
    problems += [f"{name}: not in the bucket table" for name in sorted(BUCKETS - {
        ticked(cell)[0] for cell in tables})]
    tables = {ticked(row[0])[0] for row in table(section, "consumer")}
    problems += [f"{name}: not in the consumer table" for name in sorted(CONSUMERS) if not any(
        shown == name or shown.startswith(name + "-<") for shown in tables)]
    return problems


# -- the names -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def section() -> str:
    return tracing_section(README.read_text())


def test_every_documented_name_is_one_subjects_py_spells(section: str) -> None:
    assert name_problems(section) == []


def test_a_misspelled_name_is_caught(section: str) -> None:
    """The check would notice: each kind of name, misspelled once."""
    for right, wrong in [("`clusterregistry.mirror.request`", "`clusterregistry.mirror.requests`"),
                         ("'clusterregistry.kube.pod.nf.>'", "'clusterregistry.kube.pods.nf.>'"),
                         ("`CLUSTERREGISTRY_GC`", "`CLUSTERREGISTRY_GCS`"),
                         ("`clusterregistry-refs`", "`clusterregistry-ref`"),
                         ("`clusterregistry-mirror` |", "`clusterregistry-mirrors` |"),
                         ("Clusterregistry-Trace-Id:", "Clusterregistry-Trace-ID:")]:
        assert right in section, right
        assert name_problems(section.replace(right, wrong, 1)), f"{wrong} went unnoticed"


def test_the_tables_agree_with_subjects_py(section: str) -> None:
    kinds = {stream: [pattern for pattern in PUBLISHED if stream_of(pattern) == stream]
             for stream in STREAMS}
    for row in table(section, "subject"):
        (subject,) = ticked(row[0])
        streams = [name for name in ticked(row[1]) if name in STREAMS]
        if streams:  # the subject lies within its stream's subjects
            (stream,) = streams
            assert any(_within(subject_tokens(subject), p.split(".")) for p in kinds[stream]), row
        else:
            assert subject in STREAMLESS, row
        assert _overlap(subject_tokens(nats_sub_subject(row[4])), subject_tokens(subject)), row
        assert set(ticked(row[3])) <= HEADERS, row
    for row in table(section, "consumer"):
        _, stream, filter_subject = (ticked(cell)[0] for cell in row[:3])
        assert any(_within(subject_tokens(filter_subject), p.split(".")) for p in kinds[stream])


def test_every_sample_body_is_a_documented_message_as_encoded(section: str) -> None:
    """A sample JSON body is one of the documented schemas, every field spelled as msgspec
    encodes it (decoding ignores unknown fields, so the round trip is what catches a typo)."""
    types_ = documented_schemas(section)
    bodies = [line[line.index("{"):] for line in code_lines(section)
              if "{" in line and line.rstrip().endswith("}")]
    assert len(bodies) >= 8
    for body in bodies:
        raw = json.loads(body)
        fits = [kind.__name__ for kind in types_ if _round_trips(kind, body, raw)]
        assert fits, f"no documented message encodes as {body}"


def _round_trips(kind: type[msgspec.Struct], body: str, raw: Any) -> bool:
    try:
        decoded = msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError:
        return False
    return bool(json.loads(schemas.encode(decoded)) == raw)


def subject_tokens(subject: str) -> list[str]:
    return ["*" if token.startswith("<") else token for token in subject.split(".")]


def stream_of(pattern: str) -> str | None:
    if pattern == subjects.KUBE_ALL:
        return subjects.KUBE_STREAM
    if pattern in subjects.MIRROR_STREAM_SUBJECTS:
        return subjects.MIRROR_STREAM
    if pattern == subjects.GC_ALL:
        return subjects.GC_STREAM
    return None


# -- the wire --------------------------------------------------------------------------------

SOURCE = "acr.io/nf/upf:1.2"
ARTIFACT = references.artifact_name(references.parse(SOURCE))
POD = schemas.KubeEvent(
    type="MODIFIED", kind="pod", namespace="nf", name="upf-7d9c-abcde",
    uid="6f1c2a9e-4b7d-4e21-9c3a-0d5e8f7a1b2c", resource_version="1234",
    owner=schemas.OwnerRef(kind="ReplicaSet", name="upf-7d9c", uid="0a1b2c3d",
                           api_version="apps/v1"),
    pod=schemas.PodState(containers=[schemas.Container(
        name="upf", image="edge.local:5000/acr.io/nf/upf:1.2", original_image=SOURCE)],
        phase="Running", node_name="node-2"))
MARKER = schemas.RelistMarker(kind="pod", phase="end", relist="5e0c9a7b",
                              resource_version="1300", count=42)
REQUEST = schemas.MirrorRequest(artifact=ARTIFACT, generation=1, source=SOURCE,
                                destination="edge.local:5000/acr.io/nf/upf:1.2")


async def _relay(bus: Bus) -> None:
    """The relay's path: `translating` makes subject, payload and headers, `Pipeline` sends."""
    pipeline: Pipeline[int] = Pipeline(bus)
    try:
        await pipeline.send_many([
            (translating.message(POD, max_payload=bus.max_payload).outgoing, 1),
            (translating.marker(MARKER), 2)])
        acked = []
        while len(acked) < 2:
            acked += await pipeline.acked()
    finally:
        await pipeline.close()


async def _reconciler_request(bus: Bus) -> None:
    """The reconciler's `_publish` (its only state it reads: the bus and its metrics)."""
    reconciler = types.SimpleNamespace(bus=bus, metrics=ReconcilerMetrics(CollectorRegistry()))
    await reconciling.Reconciler._publish(  # type: ignore[arg-type]
        reconciler, Plan(request=REQUEST, reason="first"))


async def _mirror_result(bus: Bus) -> None:
    """The worker's report: `result_for`, then the publish its `_handle` makes."""
    result = mirroring.result_for(
        REQUEST, report=CopyReport(digest="sha256:" + "ab" * 32, size=987030,
                                   platforms=["linux/amd64"], bytes_copied=987030,
                                   blobs_copied=3),
        error=None, settlement=mirroring.Settlement(action="ack", report=True),
        worker="mirror-0", duration=1.842)
    await publish(
        bus, subjects.mirror_result(REQUEST.artifact), schemas.encode(result),
        headers={subjects.TRACE_HEADER: REQUEST.trace_id} if REQUEST.trace_id else None)


async def _mirror_progress(bus: Bus) -> None:
    """The worker's progress loop (`_report_progress`) over one running copy, until it has
    published once (its only state: the bus, its settings, the copies, its id)."""
    running = mirroring.Running(REQUEST)
    running.progress.planned(4, 268435456)
    running.progress.advanced(125829120)
    worker = types.SimpleNamespace(bus=bus, worker_id="mirror-0", copies=[running],
                                   settings=MirrorSettings(progress_interval_seconds=0.05))

    async def _sent() -> bool:
        return running.sent is not None

    stop = asyncio.Event()
    loop = asyncio.create_task(mirroring.Worker._report_progress(  # type: ignore[arg-type]
        worker, stop))
    try:
        await wait_for(_sent, timeout=10.0, interval=0.01, description="progress sent")
    finally:
        stop.set()
        await loop


async def _gc_event(bus: Bus) -> None:
    collector = collecting.Collector(
        bus=bus, fence=Fence(bus, ttl_seconds=30.0, holder="gc-0"), registry=None,  # type: ignore[arg-type]
        settings=GcSettings(), schedule=None, storage_bytes=0, sweeper=None,  # type: ignore[arg-type]
        metrics=GcMetrics(CollectorRegistry()), holder="gc-0")
    await collector._publish(collecting._Run(id="9c1e5b7a3d2f", dry_run=False, started=0.0),
                             "finished", deleted=2, bytes_freed=1974060)


async def _gc_run_request(bus: Bus) -> None:
    """`clusterregistry gc run-once`'s request (gc.serving.request_run); the raw subscriber
    answers it, as a GC replica would."""
    request = schemas.GcRunRequest(dry_run=True, requested_by="cli@test")
    reply = await replying.request(bus, subjects.GC_RUN_REQUEST, schemas.encode(request),
                                   timeout=10.0)
    assert schemas.gc_event_decoder.decode(reply).event == "skipped"


# the documented subject -> how a service publishes one message on it
PUBLISHERS: dict[str, Callable[[Bus], Any]] = {
    "clusterregistry.kube.<kind>.<namespace>.<uid>": _relay,
    "clusterregistry.kube.<kind>._relist": _relay,
    "clusterregistry.mirror.request": _reconciler_request,
    "clusterregistry.mirror.result.<artifact>": _mirror_result,
    "clusterregistry.mirror.progress.<artifact>": _mirror_progress,
    "clusterregistry.gc.<event>": _gc_event,
    "clusterregistry.control.gc.run": _gc_run_request,
}


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    """A connection, and the streams and buckets as the services create them."""
    connection = await connect([nats_server.url], name="test-nats-cli-docs")
    try:
        await ensure_stream(connection, name=subjects.KUBE_STREAM, subjects=[subjects.KUBE_ALL])
        await mirroring.ensure_queue(connection)
        await collecting.Collector(
            bus=connection, fence=Fence(connection, ttl_seconds=30.0, holder="gc-0"),
            registry=None, settings=GcSettings(), schedule=None,  # type: ignore[arg-type]
            storage_bytes=0, sweeper=None, metrics=GcMetrics(CollectorRegistry()),
        ).ensure()
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def raw(nats_client: Client) -> Client:
    """An outside client, as the nats CLI is one."""
    return nats_client


@pytest.mark.integration
async def test_each_documented_message_is_json_with_its_headers_on_its_subject(
    section: str, bus: Bus, raw: Client, nats_server: NatsServer
) -> None:
    rows = table(section, "subject")
    assert {ticked(row[0])[0] for row in rows} == set(PUBLISHERS)
    for row in rows:
        (subject,) = ticked(row[0])
        kind = schema(ticked(row[2])[0])
        headers = set(ticked(row[3]))
        watched = nats_sub_subject(row[4])  # `nats sub` subscribes to it as it is
        sub = await raw.subscribe(watched)
        # nats-py's own flush would not prove the server has the SUB (bus.connecting)
        await round_trip(raw)
        publishing = asyncio.create_task(PUBLISHERS[subject](bus))
        try:
            try:
                msg = await sub.next_msg(timeout=10.0)
            except nats.errors.TimeoutError as exc:
                published = (("raised " + repr(publishing.exception())) if publishing.done()
                             and not publishing.cancelled() and publishing.exception()
                             else "done" if publishing.done() else "still running")
                raise AssertionError(
                    f"nothing on {watched} within 10 s for {subject} (its publisher: "
                    f"{published}); the server: {await interest(nats_server, watched)}"
                ) from exc
            # the GC run request: answer it as a GC replica would (never a JetStream
            # publish's reply inbox: an answer there races the stream's own ack)
            if msg.reply and subject == subjects.GC_RUN_REQUEST:
                await raw.publish(msg.reply, schemas.encode(schemas.GcEvent(
                    run="r", event="skipped", dry_run=True)))
            await asyncio.wait_for(publishing, timeout=15.0)
        finally:
            publishing.cancel()
            await sub.unsubscribe()
        assert _within(msg.subject.split("."), subject_tokens(subject)), msg.subject
        text = msg.data.decode()
        assert isinstance(json.loads(text), dict), text
        msgspec.json.decode(msg.data, type=kind)
        assert set(msg.headers or {}) == headers, (subject, msg.headers)
        if subjects.MSG_ID_HEADER in headers:
            assert msg.headers and msg.headers[subjects.MSG_ID_HEADER]
        if subjects.TRACE_HEADER in headers:
            assert msg.headers and msg.headers[subjects.TRACE_HEADER]


# -- the buckets -----------------------------------------------------------------------------


async def _records(bus: Bus, bucket: str, key: str, record: msgspec.Struct) -> None:
    """The services' KV adapter: `Records.put` on the bucket as its owner creates it."""
    if bucket == subjects.MIRROR_BLOBS_BUCKET:
        await (await ledgers.ensure_bucket(bus, ttl_seconds=60.0)).put(key, record)
        return
    if bucket == subjects.FRONT_FLIGHTS_BUCKET:
        await (await flights.ensure(bus, ttl_seconds=60.0)).put(key, record)
        return
    records = Records(await ensure_bucket(bus, name=bucket), lambda raw: raw)
    await records.put(key, record)


# the documented bucket -> a key and a value as its service writes them
ENTRIES: dict[str, tuple[str, msgspec.Struct]] = {
    subjects.REFS_BUCKET: ("0a1b2c3d", schemas.OwnerRecord(
        uid="0a1b2c3d", kind="ReplicaSet", namespace="nf", name="upf-7d9c", images=[SOURCE])),
    subjects.ARTIFACTS_BUCKET: (ARTIFACT, schemas.ArtifactRecord(
        name=ARTIFACT, source=SOURCE, local="edge.local:5000/acr.io/nf/upf:1.2",
        phase="Available")),
    subjects.RELAY_BUCKET: ("pod", schemas.Checkpoint(kind="pod", resource_version="1300")),
    subjects.MIRROR_BLOBS_BUCKET: ("sha256." + "ab" * 32, schemas.BlobLocation(
        state="stored", repository="acr.io/nf/upf")),
    subjects.GC_TAGS_BUCKET: (subjects.released_tag_key("acr.io/nf/upf", "1.1"),
                              schemas.ReleasedTag(repository="acr.io/nf/upf", tag="1.1",
                                                  digest="sha256:" + "cd" * 32,
                                                  artifact="acr-io-nf-upf-1-1-0f1e2d3c4b5a")),
    subjects.FRONT_FLIGHTS_BUCKET: (subjects.flight_key("blob", "sha256:" + "ab" * 32),
                                    schemas.FlightClaim(state="fetching", holder="front-0",
                                                        peer="http://10.244.1.7:5000")),
}


@pytest.mark.integration
async def test_each_documented_bucket_holds_json_of_its_schema(
    section: str, bus: Bus, raw: Client
) -> None:
    """What `nats kv get` prints is the value as stored: read with nats-py's KV, as the CLI
    reads it, each decodes into the documented schema."""
    rows = table(section, "bucket")
    assert {ticked(row[0])[0] for row in rows} == set(ENTRIES) | {subjects.GC_BUCKET}
    js = raw.jetstream()
    fence = Fence(bus, ttl_seconds=30.0, holder="gc-0")
    for row in rows:
        bucket = ticked(row[0])[0]
        kind = schema(ticked(row[2])[0])
        if bucket == subjects.GC_BUCKET:  # the GC's lock, while it holds it
            async with fence.exclusive(purpose="gc 9c1e5b7a3d2f", wait_timeout=5.0):
                assert subjects.FENCE_LOCK in ticked(row[1])
                entry = await (await js.key_value(bucket)).get(subjects.FENCE_LOCK)
        else:
            key, record = ENTRIES[bucket]
            await _records(bus, bucket, key, record)
            entry = await (await js.key_value(bucket)).get(key)
            assert msgspec.json.decode(entry.value or b"", type=kind) == record
        assert entry.value is not None
        assert isinstance(json.loads(entry.value), dict)
        msgspec.json.decode(entry.value, type=kind)
