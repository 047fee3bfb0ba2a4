"""`clusterregistry trace` without NATS: decoding, filters, the timeline line, --json,
--since, stream planning, the ordered reader's gap check and the command's argument errors."""

from __future__ import annotations

import argparse
import io
import json
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, DeliverPolicy

from clusterregistry import schemas, subjects
from clusterregistry.bus import following
from clusterregistry.bus.connecting import Bus
from clusterregistry.commands import tracing
from clusterregistry.commands.tracing import Filters, Other, Record, Source

WHEN = datetime(2025, 1, 7, 15, 20, 13, 123456, tzinfo=UTC)
TRACE = "3f2a9b8c7d6e5f4031323334"


def container(name: str, image: str, original: str = "", image_id: str = "") -> schemas.Container:
    return schemas.Container(name=name, image=image, original_image=original, image_id=image_id)


def pod_event(**changes: Any) -> schemas.KubeEvent:
    fields: dict[str, Any] = {
        "type": "MODIFIED",
        "kind": "pod",
        "namespace": "nf",
        "name": "upf-7d9c-abcde",
        "uid": "u-1",
        "resource_version": "1234",
        "pod": schemas.PodState(
            containers=[container(
                "upf",
                "edge.local:5000/acr.io/nf/upf:1.2",
                "acr.io/nf/upf:1.2",
                "docker-pullable://edge.local:5000/acr.io/nf/upf@sha256:ab12cd34ef56ab12cd34ef56",
            )],
            phase="Running",
            node_name="node-2",
        ),
    }
    fields.update(changes)
    return schemas.KubeEvent(**fields)


def record(
    payload: schemas.KubeEvent | schemas.RelistMarker | bytes,
    *,
    subject: str | None = None,
    seq: int | None = 42,
    headers: dict[str, str] | None = None,
    when: datetime = WHEN,
) -> Record:
    """A record as the reader builds it: bytes on the wire, decoded by subject."""
    if isinstance(payload, schemas.KubeEvent):
        subject = subject or subjects.kube(payload.kind, payload.namespace, payload.uid)
        data = schemas.encode(payload)
    elif isinstance(payload, schemas.RelistMarker):
        subject = subject or subjects.relist(payload.kind)
        data = schemas.encode(payload)
    else:
        assert subject is not None
        data = payload
    return Record(stream=subjects.KUBE_STREAM, subject=subject, seq=seq, time=when,
                  headers=headers or {}, data=data, payload=tracing.decode(subject, data))


def marker(phase: str = "begin", **changes: Any) -> schemas.RelistMarker:
    fields: dict[str, Any] = {"kind": "pod", "phase": phase, "relist": "r-7",
                              "resource_version": "1300"}
    fields.update(changes)
    return schemas.RelistMarker(**fields)


# -- decode -------------------------------------------------------------------------------------


def test_decode_picks_the_schema_by_subject() -> None:
    assert isinstance(record(pod_event()).payload, schemas.KubeEvent)
    assert record(marker()).payload == marker()


def test_decode_never_raises() -> None:
    bad = record(b'{"type": "NOPE"}', subject="clusterregistry.kube.pod.nf.u-1")
    assert isinstance(bad.payload, Other)
    assert bad.payload.family == "pod"
    assert bad.payload.value == {"type": "NOPE"}
    assert bad.payload.error
    gc = record(b'{"freed": 3}', subject="clusterregistry.gc.done")
    assert gc.payload == Other("gc", {"freed": 3})
    garbage = record(b"\xff not json", subject="clusterregistry.mirror.request")
    assert isinstance(garbage.payload, Other)
    assert garbage.payload.family == "mirror"
    assert garbage.payload.value is None
    assert garbage.payload.error


def test_record_kind() -> None:
    assert tracing.record_kind(record(pod_event(kind="job", pod=None))) == "job"
    assert tracing.record_kind(record(marker(kind="artifact"))) == "artifact"
    assert tracing.record_kind(record(b"{}", subject="clusterregistry.mirror.request")) == "mirror"


# -- filters ------------------------------------------------------------------------------------


def test_no_filters_match_everything() -> None:
    for item in (record(pod_event()), record(marker()),
                 record(b"{}", subject="clusterregistry.gc.started")):
        assert tracing.matches(item, Filters())


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown kind deployment"):
        Filters(kinds=frozenset({"deployment"}))


def test_kind_filter() -> None:
    pods = Filters(kinds=frozenset({"pod"}))
    assert tracing.matches(record(pod_event()), pods)
    assert not tracing.matches(record(pod_event(kind="job", pod=None)), pods)
    assert not tracing.matches(record(marker(kind="job")), pods)
    assert not tracing.matches(record(b"{}", subject="clusterregistry.gc.started"), pods)
    assert tracing.matches(record(b"{}", subject="clusterregistry.gc.started"),
                           Filters(kinds=frozenset({"gc"})))


def test_namespace_and_name_are_globs_and_all_fields_must_match() -> None:
    event = record(pod_event())
    assert tracing.matches(event, Filters(namespaces=("nf",)))
    assert tracing.matches(event, Filters(namespaces=("kube-system", "n*")))
    assert not tracing.matches(event, Filters(namespaces=("n",)))
    assert tracing.matches(event, Filters(names=("upf-*",)))
    assert not tracing.matches(event, Filters(names=("upf",)))
    assert tracing.matches(event, Filters(namespaces=("nf",), names=("upf-*",)))
    assert not tracing.matches(event, Filters(namespaces=("other",), names=("upf-*",)))


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("nf/upf", True),  # substring of both references
        ("edge.local:5000", True),  # only in the rewritten image
        ("acr.io/nf/upf:1.2", True),
        ("acr.io/nf/upf:1.3", False),
        ("acr.io/*", True),  # glob over the original image
        ("edge.local:5000/*:1.2", True),
        ("nf/*", False),  # a glob matches the whole reference
        ("*upf:1.[0-2]", True),
    ],
)
def test_image_filter_is_substring_or_glob_over_image_and_original(
    pattern: str, expected: bool
) -> None:
    assert tracing.matches(record(pod_event()), Filters(images=(pattern,))) is expected


def test_image_filter_sees_init_ephemeral_and_template_containers() -> None:
    init = pod_event(pod=schemas.PodState(init_containers=[container("i", "r/init:1")]))
    debug = pod_event(pod=schemas.PodState(ephemeral_containers=[container("d", "r/busybox")]))
    template = pod_event(kind="replicaset", pod=None, template=schemas.TemplateState(
        containers=[container("a", "r/app:2")],
        init_containers=[container("m", "local/r/migrate:1", "r/migrate:1")],
    ))
    assert tracing.matches(record(init), Filters(images=("init",)))
    assert tracing.matches(record(debug), Filters(images=("busybox",)))
    assert tracing.matches(record(template), Filters(images=("r/app:2",)))
    assert tracing.matches(record(template), Filters(images=("r/migrate:*",)))
    assert not tracing.matches(record(template), Filters(images=("busybox",)))
    assert not tracing.matches(record(pod_event(pod=None)), Filters(images=("upf",)))


def test_image_filter_on_artifacts_and_other_messages_reads_their_strings() -> None:
    artifact = pod_event(kind="artifact", namespace="", pod=None, artifact=schemas.ArtifactState(
        spec={"source": "acr.io/nf/upf:1.2", "platforms": ["linux/amd64"]}))
    assert tracing.matches(record(artifact, subject="clusterregistry.kube.artifact._.u-1"),
                           Filters(images=("acr.io/nf/upf",)))
    request = record(b'{"artifact": "a1", "source": {"ref": "acr.io/nf/upf:1.2"}}',
                     subject=subjects.MIRROR_REQUEST)
    assert tracing.matches(request, Filters(images=("nf/upf",)))
    assert not tracing.matches(request, Filters(images=("nf/smf",)))


def test_relist_markers_only_obey_the_kind_filter() -> None:
    narrow = Filters(namespaces=("nowhere",), names=("nothing",), images=("none",))
    assert tracing.matches(record(marker()), narrow)
    assert not tracing.matches(record(marker()), Filters(kinds=frozenset({"job"})))


def test_namespace_or_name_filters_hide_mirror_and_gc_messages() -> None:
    request = record(b'{"namespace": "nf"}', subject=subjects.MIRROR_REQUEST)
    assert not tracing.matches(request, Filters(namespaces=("nf",)))
    assert not tracing.matches(request, Filters(names=("*",)))


# -- the timeline line --------------------------------------------------------------------------


def test_render_a_pod_event() -> None:
    line = tracing.render(record(pod_event(), headers={subjects.TRACE_HEADER: TRACE}), tz=UTC)
    assert line == (
        "15:20:13.123  #42  pod  MODIFIED  nf/upf-7d9c-abcde  rv=1234  node-2 Running  "
        "upf=edge.local:5000/acr.io/nf/upf:1.2 (from acr.io/nf/upf:1.2) sha256:ab12cd34ef56…"
        "  trace=3f2a9b8c…"
    )


def test_render_owner_deletion_init_and_ephemeral_containers() -> None:
    event = pod_event(
        type="DELETED",
        owner=schemas.OwnerRef(kind="ReplicaSet", name="upf-7d9c", uid="o-1"),
        pod=schemas.PodState(
            containers=[container("upf", "r/upf:1", "r/upf:1", "sha256:" + "0" * 64)],
            init_containers=[container("setup", "local/r/setup:1", "r/setup:1")],
            ephemeral_containers=[container("dbg", "r/busybox", image_id="imageid-xyz")],
            phase="Running",
            deletion_timestamp="2025-01-07T15:20:13Z",
        ),
    )
    assert tracing.render(record(event), tz=UTC) == (
        "15:20:13.123  #42  pod  DELETED  nf/upf-7d9c-abcde  rv=1234  owner=ReplicaSet/upf-7d9c"
        "  Running deleting  upf=r/upf:1 sha256:000000000000…"
        "  init:setup=local/r/setup:1 (from r/setup:1)  eph:dbg=r/busybox imageid-xyz"
    )


def test_render_a_template_sync_event_and_oversized() -> None:
    event = pod_event(type="SYNC", kind="statefulset", pod=None, relist="r-7", oversized=True,
                      template=schemas.TemplateState(containers=[container("db", "r/db:9")],
                                                     replicas=3))
    assert tracing.render(record(event), tz=UTC) == (
        "15:20:13.123  #42  statefulset  SYNC  nf/upf-7d9c-abcde  rv=1234  replicas=3"
        "  db=r/db:9  relist=r-7  OVERSIZED"
    )


def test_render_cluster_scoped_artifact() -> None:
    event = pod_event(kind="artifact", namespace="", name="acr.io-nf-upf-1.2", pod=None,
                      artifact=schemas.ArtifactState(spec={"source": "acr.io/nf/upf:1.2"},
                                                     status={"phase": "Mirrored"}))
    line = tracing.render(record(event, subject="clusterregistry.kube.artifact._.u-1"), tz=UTC)
    assert line == (
        '15:20:13.123  #42  artifact  MODIFIED  acr.io-nf-upf-1.2  rv=1234'
        '  spec={"source":"acr.io/nf/upf:1.2"}  status={"phase":"Mirrored"}'
    )


def test_render_relist_markers() -> None:
    begin = record(marker(), headers={subjects.TRACE_HEADER: "abc"})
    end = record(marker("end", count=17), seq=50)
    assert tracing.render(begin, tz=UTC) == (
        "15:20:13.123  #42  pod  RELIST begin  id=r-7  rv=1300  trace=abc"
    )
    assert tracing.render(end, tz=UTC) == (
        "15:20:13.123  #50  pod  RELIST end  id=r-7  rv=1300  count=17"
    )


def test_render_other_and_undecodable_messages() -> None:
    request = record(b'{"artifact":"a1"}', subject=subjects.MIRROR_REQUEST, seq=None)
    assert tracing.render(request, tz=UTC) == (
        '15:20:13.123  #-  mirror  request  {"artifact":"a1"}'
    )
    broken = record(b"{}", subject="clusterregistry.kube.job.nf.u-9", seq=7)
    line = tracing.render(broken, tz=UTC)
    assert line.startswith("15:20:13.123  #7  job  UNDECODABLE  clusterregistry.kube.job.nf.u-9  ")
    long = record(b'"' + b"x" * 500 + b'"', subject="clusterregistry.gc.report")
    assert len(tracing.render(long, tz=UTC)) < 220


def test_render_uses_the_given_zone_local_by_default() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert tracing.render(record(marker()), tz=plus_two).startswith("17:20:13.123  ")
    local = WHEN.astimezone().strftime("%H:%M:%S")
    assert tracing.render(record(marker())).startswith(local + ".123")


def test_day_line_when_the_day_changes_in_the_zone_shown() -> None:
    assert tracing.day_line(None, WHEN, tz=UTC) == "--- 2025-01-07 UTC ---"
    assert tracing.day_line(WHEN, WHEN + timedelta(hours=1), tz=UTC) is None
    # 22:20 UTC is still the 7th in UTC, but 00:20 on the 8th at UTC+2
    later = WHEN + timedelta(hours=7)
    assert tracing.day_line(WHEN, later, tz=UTC) is None
    plus_two = timezone(timedelta(hours=2), "UTC+02")
    assert tracing.day_line(WHEN, later, tz=plus_two) == "--- 2025-01-08 UTC+02 ---"


# -- --json -------------------------------------------------------------------------------------


def test_to_json_keeps_the_wire_payload_and_headers() -> None:
    wire = json.loads(schemas.encode(pod_event()))
    wire["addedByANewerRelay"] = True  # unknown fields survive
    headers = {subjects.MSG_ID_HEADER: "u-1:1234:MODIFIED", subjects.TRACE_HEADER: TRACE}
    item = record(json.dumps(wire).encode(), subject="clusterregistry.kube.pod.nf.u-1",
                  headers=headers)
    document = json.loads(tracing.to_json(item))
    assert document == {
        "time": "2025-01-07T15:20:13.123456Z",
        "stream": subjects.KUBE_STREAM,
        "seq": 42,
        "subject": "clusterregistry.kube.pod.nf.u-1",
        "headers": headers,
        "payload": wire,
    }
    assert "\n" not in tracing.to_json(item)


def test_to_json_of_a_message_that_is_not_json() -> None:
    item = record(b"\xffhello", subject=subjects.MIRROR_REQUEST, seq=None)
    document = json.loads(tracing.to_json(item))
    assert document["payload"] is None
    assert document["seq"] is None
    assert document["data"] == "\ufffdhello"


# -- --since ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600), ("2h", 7200), ("1h30m", 5400), ("45s", 45), ("1.5d", 129600),
     ("500ms", 0.5), (" 3m ", 180), ("0s", 0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert tracing.parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "10", "m", "10x", "-5m", "1h 30m", "h1", "10m5"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        tracing.parse_duration(text)


def test_parse_since_duration_counts_back_from_now() -> None:
    assert tracing.parse_since("10m", now=WHEN) == WHEN - timedelta(minutes=10)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-07T15:20:13Z", datetime(2025, 1, 7, 15, 20, 13, tzinfo=UTC)),
        ("2025-01-07T17:20:13+02:00", datetime(2025, 1, 7, 15, 20, 13, tzinfo=UTC)),
        ("2025-01-07T15:20:13.123456789Z", datetime(2025, 1, 7, 15, 20, 13, 123456, tzinfo=UTC)),
    ],
)
def test_parse_since_rfc3339(text: str, expected: datetime) -> None:
    result = tracing.parse_since(text)
    assert result == expected
    assert result.tzinfo == UTC


def test_parse_since_without_offset_is_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        assert tracing.parse_since("2025-01-07T20:50:13") == datetime(
            2025, 1, 7, 15, 20, 13, tzinfo=UTC)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_parse_since_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        tracing.parse_since("yesterday")


# -- which streams ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("a.b.c", "a.b.c", True),
        ("a.b.c", "a.b.d", False),
        ("a.>", "a.b.c", True),
        ("a.*", "a.b.c", False),
        ("a.*.c", "a.b.*", True),
        ("a.b", "a.b.c", False),
        ("clusterregistry.kube.pod.>", "clusterregistry.kube.>", True),
        ("clusterregistry.mirror.result.*", "clusterregistry.mirror.request", False),
        ("clusterregistry.gc.>", "clusterregistry.gc.done", True),
        (">", "x", True),
    ],
)
def test_subjects_collide(first: str, second: str, expected: bool) -> None:
    assert tracing.subjects_collide(first, second) is expected
    assert tracing.subjects_collide(second, first) is expected


def test_interest_narrows_by_kind() -> None:
    assert tracing.interest(Filters()) == (
        subjects.KUBE_ALL, subjects.MIRROR_REQUEST, subjects.MIRROR_RESULT_ALL, subjects.GC_ALL)
    assert tracing.interest(Filters(kinds=frozenset({"job", "pod"}))) == (
        "clusterregistry.kube.pod.>", "clusterregistry.kube.job.>")
    assert tracing.interest(Filters(kinds=frozenset({"gc"}))) == (subjects.GC_ALL,)


def test_plan_sources() -> None:
    streams = [
        ("OTHER", ["orders.>"], False),
        ("BACKUP", [], False),  # sources CLUSTERREGISTRY_KUBE: would show everything twice
        ("GC_EVENTS", ["clusterregistry.gc.done", "clusterregistry.gc.started"], False),
        (subjects.MIRROR_STREAM, [subjects.MIRROR_REQUEST], True),
        (subjects.KUBE_STREAM, [subjects.KUBE_ALL], False),
    ]
    assert tracing.plan_sources(streams, tracing.interest(Filters())) == [
        Source(subjects.KUBE_STREAM, (subjects.KUBE_ALL,)),  # first, then by name
        Source(subjects.MIRROR_STREAM, (subjects.MIRROR_REQUEST,), work_queue=True),
        Source("GC_EVENTS", (subjects.GC_ALL,)),
    ]
    pods = tracing.interest(Filters(kinds=frozenset({"pod"})))
    assert tracing.plan_sources(streams, pods) == [
        Source(subjects.KUBE_STREAM, ("clusterregistry.kube.pod.>",))]
    assert tracing.plan_sources(streams[:2], pods) == []


# -- the ordered reader's gap check ------------------------------------------------------------


def _delivered(stream_seq: int, consumer_seq: int) -> Msg:
    subject = subjects.kube("pod", "nf", f"u{stream_seq}")
    reply = f"$JS.ACK.{subjects.KUBE_STREAM}.trace.1.{stream_seq}.{consumer_seq}.{10**18}.0"
    data = schemas.encode(pod_event(uid=f"u{stream_seq}"))
    return Msg(_client=cast(Any, None), subject=subject, reply=reply, data=data, headers=None)


def test_reader_stops_a_batch_at_a_consumer_sequence_gap() -> None:
    bus = cast(Bus, SimpleNamespace(js=None))
    reader = following.OrderedReader(bus, subjects.KUBE_STREAM, (subjects.KUBE_ALL,),
                                     start=following.Start())
    delivered, gap = reader._in_order([_delivered(3, 1), _delivered(5, 2), _delivered(9, 4)])
    assert gap
    assert [d.seq for d in delivered] == [3, 5]  # stream sequences may skip, consumer ones not
    assert delivered[0].time == datetime.fromtimestamp(10**9, UTC)
    assert delivered[0].stream == subjects.KUBE_STREAM
    # the next consumer starts right after the last stream sequence shown
    assert reader._config("next").opt_start_seq == 6


def test_reader_config_for_each_start() -> None:
    source = Source(subjects.KUBE_STREAM,
                    (subjects.kube_kind("pod"), subjects.kube_kind("job")))
    bus = cast(Bus, SimpleNamespace(js=None))
    new = following.OrderedReader(bus, source.stream, source.subjects,
                                  start=following.Start())._config("c")
    assert new.deliver_policy == DeliverPolicy.NEW
    assert new.ack_policy == AckPolicy.NONE
    assert new.mem_storage and new.inactive_threshold
    assert new.filter_subjects == list(source.subjects)
    assert new.filter_subject is None
    everything = following.OrderedReader(bus, source.stream, source.subjects,
                                         start=following.Start(from_start=True))
    assert everything._config("c").deliver_policy == DeliverPolicy.ALL
    timed = following.OrderedReader(bus, source.stream, source.subjects,
                                    start=following.Start(since=WHEN))._config("c")
    assert timed.deliver_policy == DeliverPolicy.BY_START_TIME
    assert timed.opt_start_time == WHEN


# -- the command line ---------------------------------------------------------------------------


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    tracing.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_arguments() -> None:
    args = _parse("--server", "nats://a:4222", "--server", "nats://b:4222", "--kind", "pod",
                  "--kind", "mirror", "-n", "nf", "--name", "upf-*", "--image", "upf",
                  "--since", "10m", "--json", "--limit", "5", "--timeout", "2.5")
    assert args.server == ["nats://a:4222", "nats://b:4222"]
    assert args.kind == ["pod", "mirror"]
    assert (args.namespace, args.name, args.image) == (["nf"], ["upf-*"], ["upf"])
    assert (args.since, args.from_start, args.json, args.limit, args.timeout) == (
        "10m", False, True, 5, 2.5)
    defaults = _parse()
    assert (defaults.server, defaults.kind, defaults.limit, defaults.timeout) == (
        None, [], None, None)


@pytest.mark.parametrize(
    "argv",
    [["--since", "1m", "--from-start"], ["--kind", "deployment"], ["--limit", "0"],
     ["--timeout", "-1"], ["--limit", "x"]],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parse(*argv)
    assert exit_info.value.code == 2
    capsys.readouterr()


async def test_run_refuses_a_bad_since_before_connecting() -> None:
    err = io.StringIO()
    assert await tracing.run(_parse("--since", "soon"), out=io.StringIO(), err=err) == 2
    assert "--since 'soon'" in err.getvalue()


async def test_run_refuses_bad_settings_before_connecting(tmp_path: Path) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text("nats:\n  servers: []\n")
    err = io.StringIO()
    assert await tracing.run(_parse("--file", str(settings)), out=io.StringIO(), err=err) == 2
    assert "nats.servers" in err.getvalue()
