"""`clusterregistry status`: every healthy/degraded decision, the screen, `-o json`, the
flags, and that loading the command imports no client."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from clusterregistry import subjects
from clusterregistry.commands.surveying import (
    ArtifactView,
    BusReading,
    ConsumerView,
    GcRun,
    Readiness,
    Readings,
    Sample,
    Unreachable,
    assemble,
    exit_code,
    human_bytes,
    parse_timeouts,
    read_sandbox,
    render,
    to_json,
)
from clusterregistry.errors import ConfigError

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC).timestamp()
GiB = 1 << 30


def _consumers(**lag: tuple[int, int]) -> list[ConsumerView]:
    names = [
        (subjects.KUBE_STREAM, subjects.TRACKER_CONSUMER),
        (subjects.KUBE_STREAM, subjects.RECONCILER_ARTIFACTS_CONSUMER + "-reconciler-0"),
        (subjects.MIRROR_STREAM, subjects.RECONCILER_RESULTS_CONSUMER),
        (subjects.MIRROR_STREAM, subjects.MIRROR_CONSUMER),
    ]
    return [ConsumerView(stream, name, *lag.get(name.replace("-", "_"), (0, 0)))
            for stream, name in names]


def healthy(**changes: Any) -> Readings:
    readings = Readings(
        now=NOW, storage_size="1Gi", threshold=80, cadence="0 0 * * *",
        artifacts=[ArtifactView("nginx-0123", "docker.io/library/nginx:1.25", "Available",
                                NOW - 3600),
                   ArtifactView("upf-4567", "acr.io/nf/upf:1.2", "Pending", NOW - 30)],
        bus=BusReading(
            {subjects.KUBE_STREAM: True, subjects.MIRROR_STREAM: True},
            _consumers(clusterregistry_mirror=(3, 2)),
            GcRun("finished", NOW - 7200, bytes_freed=5 << 20, deleted=2,
                  read_only_seconds=0.8)),
        gc_metrics=[Sample("clusterregistry_gc_storage_used_bytes", {}, 0.25 * GiB),
                    Sample("clusterregistry_gc_storage_capacity_bytes", {}, GiB)],
        front_metrics=[
            Sample("clusterregistry_front_requests_total", {"kind": "blob", "result": "hit"}, 90),
            Sample("clusterregistry_front_requests_total",
                   {"kind": "manifest", "result": "miss_streamed"}, 10),
            Sample("clusterregistry_front_requests_total",
                   {"kind": "other", "result": "passed"}, 500)],
        readiness=[Readiness("gc", 1, 1), Readiness("mirror", 2, 2)],
    )
    return replace(readings, **changes)


def _row(status: Any, section: str, item: str) -> Any:
    return next(r for r in status.rows if r.section == section and r.item == item)


def test_everything_read_and_nothing_wrong_is_healthy() -> None:
    status = assemble(healthy())
    assert status.healthy and status.reasons == [] and exit_code(status) == 0
    assert "256Mi of 1Gi (25.0%)" in _row(status, "storage", "used").text
    assert "GC threshold 80%" in _row(status, "storage", "used").text
    assert _row(status, "mirror", "queue").data == {"waiting": 3, "inFlight": 2}
    assert _row(status, "front", "hit ratio").data["ratio"] == 0.9  # 'other' is not counted
    last = _row(status, "gc", "last run")
    assert "freed 5Mi (2 Artifact(s)), read-only 0.8s" in last.text and "2h00m ago" in last.text
    assert _row(status, "gc", "next run").text.startswith("2026-12-06 00:00:00 UTC (in 12h00m")
    phases = _row(status, "artifacts", "by phase").data["phases"]
    assert phases["Available"] == 1 and phases["Pending"] == 1
    assert "upf-4567" in _row(status, "artifacts", "oldest pending").text


@pytest.mark.parametrize("source", ["artifacts", "bus", "gc_metrics", "front_metrics",
                                    "readiness"])
def test_an_unreachable_source_marks_its_rows_unknown_and_degrades(source: str) -> None:
    where = {"bus": "nats"}.get(source, source)
    status = assemble(healthy(**{source: Unreachable(where, "somewhere:1", "no answer in 3s")}))
    assert not status.healthy and exit_code(status) == 1
    assert len(status.reasons) == 1 and "unreachable (somewhere:1): no answer in 3s" in (
        status.reasons[0])
    assert any(r.state == "unknown" for r in status.rows)
    assert all(r.state != "degraded" for r in status.rows)


def test_nats_unreachable_names_nats_and_blanks_queues_consumers_and_gc() -> None:
    status = assemble(healthy(bus=Unreachable("nats", "nats://10.0.0.1:4222", "no answer")))
    assert status.reasons == ["NATS unreachable (nats://10.0.0.1:4222): no answer"]
    unknown = {(r.section, r.item) for r in status.rows if r.state == "unknown"}
    assert ("mirror", "queue") in unknown and ("gc", "last run") in unknown
    assert ("consumers", subjects.TRACKER_CONSUMER) in unknown
    # the schedule is the settings' own: still known
    assert _row(status, "gc", "next run").state == "ok"


def test_failed_artifacts_degrade_and_the_oldest_is_named() -> None:
    artifacts = [ArtifactView("a-new", "x.io/a:1", "Failed", NOW - 60, "401 Unauthorized"),
                 ArtifactView("b-old", "x.io/b:1", "Failed", NOW - 600, "manifest unknown")]
    status = assemble(healthy(artifacts=artifacts))
    assert status.reasons == [
        "2 Artifact(s) Failed, oldest b-old (x.io/b:1): manifest unknown"]
    assert _row(status, "artifacts", "oldest failed").data["name"] == "b-old"


def test_pending_is_fine_until_it_is_stuck() -> None:
    young = [ArtifactView("p", "x.io/p:1", "Mirroring", NOW - 599)]
    assert assemble(healthy(artifacts=young)).healthy
    old = [ArtifactView("p", "x.io/p:1", "", NOW - 601)]  # no status yet: Pending
    status = assemble(healthy(artifacts=old))
    assert status.reasons == ["Artifact p (x.io/p:1) Pending for 10m01s"]


def test_storage_nearly_full_degrades_above_the_threshold_only_informs() -> None:
    above = [Sample("clusterregistry_gc_storage_used_bytes", {}, 0.85 * GiB),
             Sample("clusterregistry_gc_storage_capacity_bytes", {}, GiB)]
    status = assemble(healthy(gc_metrics=above))
    assert status.healthy
    assert "above it: the next run collects" in _row(status, "storage", "used").text
    full = [Sample("clusterregistry_gc_storage_used_bytes", {}, 0.95 * GiB)]  # capacity: 1Gi
    status = assemble(healthy(gc_metrics=full))
    assert status.reasons == ["registry storage 95% full (972.8Mi of 1Gi)"]


def test_storage_not_measured_yet_is_not_degraded() -> None:
    status = assemble(healthy(gc_metrics=[]))
    assert status.healthy and "not measured yet" in _row(status, "storage", "used").text


def test_a_missing_consumer_or_stream_degrades_lag_alone_does_not() -> None:
    lagging = healthy(bus=BusReading({subjects.KUBE_STREAM: True, subjects.MIRROR_STREAM: True},
                                     _consumers(clusterregistry_tracker=(50_000, 1024)), None))
    status = assemble(lagging)
    assert status.healthy
    assert "50000 pending, 1024 ack pending" in _row(
        status, "consumers", subjects.TRACKER_CONSUMER).text
    assert _row(status, "gc", "last run").text == "none recorded"
    without = [c for c in _consumers() if c.name != subjects.MIRROR_CONSUMER]
    status = assemble(healthy(bus=BusReading(
        {subjects.KUBE_STREAM: True, subjects.MIRROR_STREAM: False}, without, None)))
    assert status.reasons == [
        f"stream {subjects.MIRROR_STREAM} missing (its services have not started)",
        f"consumer {subjects.MIRROR_CONSUMER} missing on {subjects.MIRROR_STREAM} "
        "(its service has not started)"]
    assert _row(status, "mirror", "queue").state == "unknown"


def test_trace_consumers_are_not_shown() -> None:
    consumers = [*_consumers(), ConsumerView(subjects.KUBE_STREAM,
                                             subjects.TRACE_CONSUMER_PREFIX + "ab12", 5, 0)]
    status = assemble(healthy(bus=BusReading({}, consumers, None)))
    assert not [r for r in status.rows if r.item.startswith(subjects.TRACE_CONSUMER_PREFIX)]


def test_a_failed_gc_run_degrades() -> None:
    run = GcRun("failed", NOW - 60, message="sweep timed out")
    status = assemble(healthy(bus=BusReading({}, _consumers(), run)))
    assert status.reasons == ["the last GC run failed (1m00s ago): sweep timed out"]


def test_gc_off_and_a_bad_cadence() -> None:
    assert "scheduled GC off" in _row(assemble(healthy(cadence="")), "gc", "next run").text
    status = assemble(healthy(cadence="every day"))
    assert not status.healthy and "is not a cron expression" in status.reasons[0]


def test_components_not_ready_are_named() -> None:
    status = assemble(healthy(readiness=[Readiness("gc", 1, 1),
                                         Readiness("clusterregistry-mirror", 1, 2, "Deployment"),
                                         Readiness("front-1", 0, 1, "cannot connect")]))
    assert status.reasons == ["clusterregistry-mirror not ready (1/2, Deployment)",
                              "front-1 not ready (0/1, cannot connect)"]
    assert not assemble(healthy(readiness=[])).healthy


def test_front_without_requests_or_without_metrics() -> None:
    assert "no manifest or blob requests" in _row(
        assemble(healthy(front_metrics=[Sample("clusterregistry_front_requests_total",
                                               {"kind": "blob", "result": "hit"}, 0)])),
        "front", "hit ratio").text
    assert "no front metrics" in _row(assemble(healthy(front_metrics=[])), "front",
                                      "hit ratio").text


def test_render_healthy_and_degraded() -> None:
    text = render(assemble(healthy()))
    lines = text.splitlines()
    assert lines[0] == "clusterregistry: healthy  (2026-12-05 12:00:00 UTC)"
    assert any(line.startswith("  STORAGE") and "256Mi of 1Gi" in line for line in lines)
    degraded = render(assemble(healthy(bus=Unreachable("nats", "nats://n:4222", "no answer"))))
    lines = degraded.splitlines()
    assert lines[0].startswith("clusterregistry: DEGRADED")
    assert lines[1] == "  - NATS unreachable (nats://n:4222): no answer"
    assert any(line.startswith("? MIRROR") and line.endswith("unknown") for line in lines)


def test_json_for_scripts() -> None:
    document = json.loads(to_json(assemble(healthy(artifacts=[
        ArtifactView("f", "x.io/f:1", "Failed", NOW - 5, "gone")]))))
    assert document["status"] == "degraded" and document["healthy"] is False
    assert document["reasons"] == ["1 Artifact(s) Failed, oldest f (x.io/f:1): gone"]
    storage = document["sections"]["storage"][0]
    assert storage["usedBytes"] == GiB // 4 and storage["state"] == "ok"
    failed = next(r for r in document["sections"]["artifacts"] if r["item"] == "oldest failed")
    assert failed["state"] == "degraded" and failed["phase"] == "Failed"
    assert document["sections"]["gc"][0]["event"] == "finished"


def test_human_bytes() -> None:
    assert [human_bytes(v) for v in (512, 987030, 1 << 30, 1.25 * (1 << 30))] == [
        "512B", "963.9Ki", "1Gi", "1.2Gi"]


def test_timeouts() -> None:
    assert parse_timeouts([])["nats"] == 3.0
    timeouts = parse_timeouts(["5", "nats=1.5"])
    assert timeouts["nats"] == 1.5 and timeouts["kubernetes"] == 5.0
    for bad in ("x", "nats=0", "disk=3"):
        with pytest.raises(ConfigError):
            parse_timeouts([bad])


def test_a_sandbox_state_file_points_at_every_probe() -> None:
    state = {
        "settings": "/s/settings.yaml", "kubeconfig": "/s/kubeconfig",
        "nats_servers": ["nats://127.0.0.1:4222"],
        "components": [
            {"name": "nats", "role": "nats", "health_url": "http://127.0.0.1:8222/healthz"},
            {"name": "front-1", "role": "service", "health_url": "http://127.0.0.1:9001/readyz"},
            {"name": "front-2", "role": "service", "health_url": ""},  # not started
            {"name": "gc", "role": "service", "health_url": "http://127.0.0.1:9002/readyz"},
        ],
    }
    found = read_sandbox(state)
    assert found.config == "/s/settings.yaml" and found.kubeconfig == "/s/kubeconfig"
    assert found.servers == ["nats://127.0.0.1:4222"]
    assert found.probes == {"front-1": "http://127.0.0.1:9001/readyz",
                            "gc": "http://127.0.0.1:9002/readyz"}
    assert found.gc_metrics == ["http://127.0.0.1:9002/metrics"]
    assert found.front_metrics == ["http://127.0.0.1:9001/metrics"]


HEAVY = ("nats", "kubernetes_asyncio", "aiohttp", "prometheus_client", "croniter", "msgspec",
         "clusterregistry.bus", "clusterregistry.kube", "clusterregistry.gc")


@pytest.mark.parametrize("argv", [["--version"], ["status", "--help"]])
def test_the_command_line_loads_no_client(argv: list[str]) -> None:
    """`clusterregistry --version` stays fast: neither the CLI nor the status command's
    module imports a client; the status command imports them when it runs."""
    code = (
        "import sys\n"
        "from clusterregistry import cli\n"
        "try:\n"
        f"    cli.main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"heavy = [m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or "
        f"any(m.startswith(h + '.') or m == h for h in {HEAVY!r})]\n"
        "print('HEAVY', sorted(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert "HEAVY []" in result.stdout, result.stdout


def test_long_messages_are_cut_on_the_screen_and_kept_in_json() -> None:
    message = "registry said: " + "x" * 300
    status = assemble(healthy(artifacts=[ArtifactView("f", "x.io/f:1", "Failed", NOW, message)]))
    assert status.reasons[0].endswith("…") and len(status.reasons[0]) < 160
    assert _row(status, "artifacts", "oldest failed").data["message"] == message
