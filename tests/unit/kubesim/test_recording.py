"""kubesim's event recorders: client-go's correlator, naming and series logic, with an
injected clock and an API stand-in that records every write."""

from __future__ import annotations

import asyncio
import copy
import re
from typing import Any

import pytest

from kubesim.controllers.recording import (
    AGGREGATE_MESSAGE_PREFIX,
    EventCorrelator,
    EventRecorder,
    FakeClock,
    LegacyEventRecorder,
    Lru,
    Recorder,
    Recorders,
    TokenBucket,
    format_micro_time,
    format_time,
    generate_event_name,
    object_reference,
)
from kubesim.controllers.scheduling import pod_updated, truncate_message
from kubesim.statuses import ApiError, already_exists, not_found

Obj = dict[str, Any]


def pod(name: str = "web-0", *, uid: str = "uid-1", rv: str = "7") -> Obj:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": uid,
                         "resourceVersion": rv}}


class FakeApi:
    """Enough of ApiServer for the recorders: Events kept by (namespace, name)."""

    def __init__(self, *, events_v1: bool = True) -> None:
        self.events_v1 = events_v1
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.calls: list[tuple[str, str, Any]] = []
        self.fail: list[Exception] = []  # raised by the next calls, one each
        self.rv = 0

    def resource(self, api_version: str, kind: str) -> str:
        if api_version == "events.k8s.io/v1" and not self.events_v1:
            raise ApiError(404, "NotFound", "no matches for kind")
        return api_version

    async def create(self, resource: str, obj: Obj, *, namespace: str) -> Obj:
        self.calls.append(("create", resource, copy.deepcopy(obj)))
        if self.fail:
            raise self.fail.pop(0)
        key = (resource, namespace, obj["metadata"]["name"])
        if key in self.objects:
            raise already_exists("", "events", key[2])
        self.rv += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[key] = stored
        return copy.deepcopy(stored)

    async def patch(self, resource: str, *, namespace: str, name: str, patch: Obj,
                    patch_type: str) -> Obj:
        assert patch_type == "application/strategic-merge-patch+json"
        self.calls.append(("patch", resource, copy.deepcopy(patch)))
        if self.fail:
            raise self.fail.pop(0)
        key = (resource, namespace, name)
        if key not in self.objects:
            raise not_found("", "events", name)
        self.rv += 1
        stored = self.objects[key]
        stored.update(copy.deepcopy(patch))
        stored["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(stored)

    def kinds(self) -> list[str]:
        return [call[0] for call in self.calls]


def legacy_event(recorder: Recorder, *, reason: str = "Pulling", message: str = "m",
                 obj: Obj | None = None, event_type: str = "Normal") -> Obj:
    ref = object_reference(obj or pod(), field_path="spec.containers{web}")
    return recorder.make_event(ref, event_type=event_type, reason=reason, message=message)


# --- names, references, timestamps ------------------------------------------------------------


def test_event_names_are_the_object_name_and_the_nanoseconds_in_hex() -> None:
    assert generate_event_name("web-0", 1_700_000_000_123_456_789) == "web-0.17979cfe3d85cd15"
    # not a DNS subdomain (uppercase, too long): a UUID instead, as client-go does
    for bad in ("Web", "x" * 252):
        assert re.fullmatch(r"[0-9a-f-]{36}", generate_event_name(bad, 1))


def test_references_are_built_from_the_object_or_taken_as_they_are() -> None:
    assert object_reference(pod(), field_path="spec.containers{web}") == {
        "kind": "Pod", "namespace": "default", "name": "web-0", "uid": "uid-1",
        "apiVersion": "v1", "resourceVersion": "7", "fieldPath": "spec.containers{web}"}
    node_ref = {"kind": "Node", "name": "node-1", "uid": "node-1", "namespace": ""}
    assert object_reference(node_ref) == {"kind": "Node", "name": "node-1", "uid": "node-1"}
    with pytest.raises(ValueError, match="kind"):
        object_reference({"metadata": {"name": "x"}})


def test_timestamps_are_formatted_as_metav1_does() -> None:
    ns = 1_700_000_000_123_456_789
    assert format_time(ns) == "2023-11-14T22:13:20Z"
    assert format_micro_time(ns) == "2023-11-14T22:13:20.123456Z"


def test_a_legacy_event_has_client_gos_fields() -> None:
    clock = FakeClock(1_700_000_000.5)
    recorder = Recorder(FakeApi(), component="kubelet", host="node-1", clock=clock)  # type: ignore[arg-type]
    event = legacy_event(recorder, message='Pulling image "x"')
    assert event == {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"web-0.{clock.time_ns():x}", "namespace": "default"},
        "involvedObject": object_reference(pod(), field_path="spec.containers{web}"),
        "reason": "Pulling", "message": 'Pulling image "x"',
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": "2023-11-14T22:13:20Z", "lastTimestamp": "2023-11-14T22:13:20Z",
        "count": 1, "type": "Normal", "eventTime": None,
        "reportingComponent": "kubelet", "reportingInstance": "node-1",
    }
    # cluster-scoped objects' events go to the default namespace
    node = legacy_event(recorder, obj={"kind": "Node", "name": "node-1", "uid": "node-1"})
    assert node["metadata"]["namespace"] == "default"
    no_host = Recorder(FakeApi(), component="default-scheduler", clock=clock)  # type: ignore[arg-type]
    event = legacy_event(no_host)
    assert event["source"] == {"component": "default-scheduler"}
    assert event["reportingInstance"] == ""


# --- the correlator ---------------------------------------------------------------------------


def test_identical_events_become_a_count_patch_of_the_first() -> None:
    clock = FakeClock()
    recorder = Recorder(FakeApi(), component="kubelet", host="node-1", clock=clock)  # type: ignore[arg-type]
    correlator = EventCorrelator(clock=clock)
    first = correlator.correlate(legacy_event(recorder))
    assert first.event is not None
    assert first.patch is None
    assert first.event["count"] == 1
    clock.advance(3)
    second = correlator.correlate(legacy_event(recorder))
    assert second.event is not None
    assert second.event["metadata"]["name"] == first.event["metadata"]["name"]
    assert second.event["count"] == 2
    assert second.event["firstTimestamp"] == first.event["firstTimestamp"]
    assert second.patch == {"count": 2, "lastTimestamp": format_time(clock.time_ns()),
                            "message": "m"}
    # what the server returned (its resourceVersion) is what the next occurrence builds on
    correlator.update_state({**second.event, "metadata": {**second.event["metadata"],
                                                          "resourceVersion": "42"}})
    third = correlator.correlate(legacy_event(recorder))
    assert third.event is not None
    assert third.event["count"] == 3
    assert third.event["metadata"]["resourceVersion"] == "42"
    # a different field path is a different event
    other = recorder.make_event(object_reference(pod(), field_path="spec.containers{side}"),
                                event_type="Normal", reason="Pulling", message="m")
    assert correlator.correlate(other).patch is None


def test_ten_similar_events_are_combined() -> None:
    clock = FakeClock()
    recorder = Recorder(FakeApi(), component="kubelet", host="node-1", clock=clock)  # type: ignore[arg-type]
    correlator = EventCorrelator(clock=clock)
    for i in range(9):
        result = correlator.correlate(legacy_event(recorder, reason="Failed", message=f"m{i}"))
        assert result.event is not None
        assert result.event["message"] == f"m{i}"
        assert result.patch is None
        clock.advance(1)
    combined = correlator.correlate(legacy_event(recorder, reason="Failed", message="m9"))
    assert combined.event is not None
    assert combined.patch is None
    assert combined.event["message"] == AGGREGATE_MESSAGE_PREFIX + "m9"
    assert combined.event["count"] == 1
    assert combined.event["metadata"]["name"] == f"web-0.{clock.time_ns():x}"
    # the combined event reports no controller: client-go builds it without those fields
    assert combined.event["reportingComponent"] == ""
    assert combined.event["source"] == {"component": "kubelet", "host": "node-1"}
    # every further new message counts on the combined event, whose message follows
    again = correlator.correlate(legacy_event(recorder, reason="Failed", message="m10"))
    assert again.event is not None
    assert again.event["metadata"]["name"] == combined.event["metadata"]["name"]
    assert again.event["count"] == 2
    assert again.patch is not None
    assert again.patch["message"] == AGGREGATE_MESSAGE_PREFIX + "m10"
    # another reason is another group
    other = correlator.correlate(legacy_event(recorder, reason="BackOff", message="x"))
    assert other.event is not None
    assert other.event["message"] == "x"


def test_similar_events_further_apart_than_ten_minutes_start_over() -> None:
    clock = FakeClock()
    recorder = Recorder(FakeApi(), component="kubelet", clock=clock)  # type: ignore[arg-type]
    correlator = EventCorrelator(clock=clock)
    for i in range(9):
        correlator.correlate(legacy_event(recorder, reason="Failed", message=f"m{i}"))
    clock.advance(601)
    result = correlator.correlate(legacy_event(recorder, reason="Failed", message="m9"))
    assert result.event is not None
    assert result.event["message"] == "m9"


def test_the_spam_filter_allows_a_burst_of_25_then_one_per_five_minutes() -> None:
    clock = FakeClock()
    recorder = Recorder(FakeApi(), component="kubelet", host="node-1", clock=clock)  # type: ignore[arg-type]
    correlator = EventCorrelator(clock=clock)
    # different reasons: no aggregation, but one token bucket (the reason is not in its key)
    passed = [not correlator.correlate(legacy_event(recorder, reason=f"R{i}")).skip
              for i in range(30)]
    assert passed == [True] * 25 + [False] * 5
    clock.advance(299)
    assert correlator.correlate(legacy_event(recorder, reason="R99")).skip
    clock.advance(1)
    assert not correlator.correlate(legacy_event(recorder, reason="R100")).skip
    assert correlator.correlate(legacy_event(recorder, reason="R101")).skip
    # Warning events of the same object have their own bucket, other objects too
    assert not correlator.correlate(legacy_event(recorder, event_type="Warning")).skip
    assert not correlator.correlate(legacy_event(recorder, obj=pod("web-1", uid="u2"))).skip


def test_events_the_spam_filter_drops_still_count() -> None:
    clock = FakeClock()
    recorder = Recorder(FakeApi(), component="kubelet", clock=clock)  # type: ignore[arg-type]
    correlator = EventCorrelator(clock=clock, burst=2)
    results = [correlator.correlate(legacy_event(recorder)) for _ in range(4)]
    assert [r.skip for r in results] == [False, False, True, True]
    clock.advance(300)
    fifth = correlator.correlate(legacy_event(recorder))
    assert fifth.event is not None
    assert fifth.event["count"] == 5


def test_lru_caches_forget_the_least_recently_used() -> None:
    lru: Lru[str, int] = Lru(2)
    lru.add("a", 1)
    lru.add("b", 2)
    assert lru.get("a") == 1  # a is now the newest
    lru.add("c", 3)
    assert "b" not in lru
    assert "a" in lru
    assert len(lru) == 2
    # the correlator's logger: a forgotten event is created anew
    clock = FakeClock()
    recorder = Recorder(FakeApi(), component="kubelet", clock=clock)  # type: ignore[arg-type]
    correlator = EventCorrelator(clock=clock, lru_size=2)
    correlator.correlate(legacy_event(recorder, reason="A"))
    correlator.correlate(legacy_event(recorder, reason="B"))
    correlator.correlate(legacy_event(recorder, reason="C"))
    again = correlator.correlate(legacy_event(recorder, reason="A"))
    assert again.event is not None
    assert again.event["count"] == 1
    assert again.patch is None


def test_token_bucket_refills_up_to_its_burst() -> None:
    bucket = TokenBucket(qps=1.0, burst=2, now_ns=0)
    assert bucket.try_accept(0)
    assert bucket.try_accept(0)
    assert not bucket.try_accept(500_000_000)
    assert bucket.try_accept(1_000_000_000)
    assert bucket.try_accept(10_000_000_000)
    assert bucket.try_accept(10_000_000_000)
    assert not bucket.try_accept(10_000_000_000)


# --- the legacy recorder's writes ---------------------------------------------------------------


async def test_the_recorder_creates_then_patches_and_recreates_after_a_404() -> None:
    api = FakeApi()
    clock = FakeClock()
    recorder = Recorder(api, component="kubelet", host="node-1", clock=clock)  # type: ignore[arg-type]
    recorder.start()
    try:
        for _ in range(3):
            recorder.event(pod(), "Normal", "Pulled", "done", field_path="spec.containers{web}")
            clock.advance(1)
        await recorder.drained(timeout=5)
        assert api.kinds() == ["create", "patch", "patch"]
        [stored] = api.objects.values()
        assert stored["count"] == 3
        # the Event was deleted (its TTL ran out): the next occurrence creates it anew
        api.objects.clear()
        recorder.event(pod(), "Normal", "Pulled", "done", field_path="spec.containers{web}")
        await recorder.drained(timeout=5)
        assert api.kinds()[-2:] == ["patch", "create"]
        [recreated] = api.objects.values()
        assert recreated["count"] == 4
        assert "resourceVersion" not in api.calls[-1][2]["metadata"]
    finally:
        await recorder.stop()


async def test_rejected_events_are_not_retried_and_transport_errors_are() -> None:
    api = FakeApi()
    recorder = Recorder(api, component="kubelet", max_tries=3, sleep_duration=0.0)  # type: ignore[arg-type]
    recorder.start()
    try:
        api.fail = [ApiError(500, "InternalError", "boom")]
        recorder.event(pod(), "Normal", "A", "m")
        await recorder.drained(timeout=5)
        assert api.kinds() == ["create"]
        api.fail = [OSError("connection refused")] * 5
        recorder.event(pod(), "Normal", "B", "m")
        await recorder.drained(timeout=5)
        assert api.kinds() == ["create"] * 4  # three tries, then given up
    finally:
        await recorder.stop()


async def test_invalid_events_are_not_sent() -> None:
    api = FakeApi()
    recorder = Recorder(api, component="kubelet")  # type: ignore[arg-type]
    recorder.start()
    try:
        recorder.event(pod(), "Info", "A", "m")
        recorder.event({"metadata": {"name": "x"}}, "Normal", "A", "m")
        await recorder.drained(timeout=5)
        assert api.calls == []
    finally:
        await recorder.stop()


async def test_event_never_blocks_and_drops_what_the_queue_cannot_hold() -> None:
    hang = asyncio.Event()

    class HungApi(FakeApi):
        async def create(self, resource: str, obj: Obj, *, namespace: str) -> Obj:
            await hang.wait()
            return obj

    recorder = Recorder(HungApi(), component="kubelet", queue_size=10)  # type: ignore[arg-type]
    recorder.start()
    for i in range(50):  # synchronous calls: nothing here can wait
        recorder.event(pod(), "Normal", f"R{i}", "m")
    await asyncio.sleep(0)  # the writer takes one event and hangs on it
    for i in range(50, 60):
        recorder.event(pod(), "Normal", f"R{i}", "m")
    assert recorder.dropped == 49
    loop = asyncio.get_running_loop()
    started = loop.time()
    await recorder.stop(timeout=0.2)
    assert loop.time() - started < 2
    recorder.event(pod(), "Normal", "late", "m")  # after stop: logged and dropped, no error


# --- events.k8s.io ------------------------------------------------------------------------------


async def scheduler_recorder(api: FakeApi, clock: FakeClock, **kwargs: Any) -> EventRecorder:
    """A started recorder whose heartbeat has made its first (immediate) round."""
    recorder = EventRecorder(
        api, reporting_controller="default-scheduler",  # type: ignore[arg-type]
        reporting_instance="default-scheduler-host", clock=clock, **kwargs)
    recorder.start()
    await asyncio.sleep(0)
    return recorder


async def test_an_events_v1_event_has_client_gos_fields() -> None:
    api, clock = FakeApi(), FakeClock(1_700_000_000.25)
    recorder = await scheduler_recorder(api, clock)
    try:
        recorder.eventf(pod(), None, "Normal", "Scheduled", "Binding",
                        "Successfully assigned default/web-0 to node-1")
        await recorder.drained(timeout=5)
    finally:
        await recorder.stop()
    [(kind, resource, event)] = api.calls
    assert (kind, resource) == ("create", "events.k8s.io/v1")
    assert event == {
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": f"web-0.{clock.time_ns():x}", "namespace": "default"},
        "eventTime": "2023-11-14T22:13:20.250000Z",
        "reportingController": "default-scheduler",
        "reportingInstance": "default-scheduler-host",
        "action": "Binding", "reason": "Scheduled",
        "regarding": object_reference(pod()),
        "note": "Successfully assigned default/web-0 to node-1", "type": "Normal",
    }


async def test_isomorphic_events_become_a_series_written_by_the_heartbeat() -> None:
    api, clock = FakeApi(), FakeClock()
    recorder = await scheduler_recorder(api, clock)
    try:
        def failed(note: str) -> None:
            recorder.eventf(pod(), None, "Warning", "FailedScheduling", "Scheduling", note)

        failed("0/3 nodes are available")
        clock.advance(10)
        failed("0/3 nodes are available")  # the note does not matter
        await recorder.drained(timeout=5)
        assert api.kinds() == ["create", "patch"]
        assert api.calls[1][2] == {"series": {
            "count": 2, "lastObservedTime": format_micro_time(clock.time_ns())}}
        for _ in range(3):
            clock.advance(10)
            failed("again")
        await recorder.drained(timeout=5)
        assert api.kinds() == ["create", "patch"]  # counted in memory only
        last_seen = clock.time_ns()
        # the refresh heartbeat writes running series
        await recorder.refresh_series()
        assert api.calls[-1][2] == {"series": {"count": 5,
                                               "lastObservedTime": format_micro_time(last_seen)}}
        # not quiet for six minutes yet: stays
        clock.advance(359)
        await recorder.finish_series()
        assert len(recorder.cache) == 1
        # quiet for six minutes: the final count is written and the series forgotten
        clock.advance(2)
        failed_calls = len(api.calls)
        await recorder.finish_series()
        assert len(api.calls) == failed_calls + 1
        assert recorder.cache == {}
        [stored] = api.objects.values()
        assert stored["series"]["count"] == 5
        # the next one starts a new Event
        failed("later")
        await recorder.drained(timeout=5)
        assert api.kinds()[-1] == "create"
        assert len(api.objects) == 2
    finally:
        await recorder.stop()


async def test_a_singleton_is_forgotten_after_six_minutes_without_a_write() -> None:
    api, clock = FakeApi(), FakeClock()
    recorder = await scheduler_recorder(api, clock)
    try:
        recorder.eventf(pod(), None, "Normal", "Scheduled", "Binding", "x")
        await recorder.drained(timeout=5)
        clock.advance(361)
        await recorder.finish_series()
        assert recorder.cache == {}
        assert api.kinds() == ["create"]
    finally:
        await recorder.stop()


async def test_a_different_resource_version_is_not_isomorphic() -> None:
    api, clock = FakeApi(), FakeClock()
    recorder = await scheduler_recorder(api, clock)
    try:
        recorder.eventf(pod(rv="1"), None, "Warning", "FailedScheduling", "Scheduling", "x")
        recorder.eventf(pod(rv="2"), None, "Warning", "FailedScheduling", "Scheduling", "x")
        await recorder.drained(timeout=5)
        assert api.kinds() == ["create", "create"]
    finally:
        await recorder.stop()


async def test_a_series_whose_event_is_gone_is_created_and_a_race_is_retried() -> None:
    api, clock = FakeApi(), FakeClock()
    recorder = await scheduler_recorder(api, clock, sleep_duration=0.0)
    try:
        recorder.eventf(pod(), None, "Warning", "FailedScheduling", "Scheduling", "x")
        await recorder.drained(timeout=5)
        api.objects.clear()
        recorder.eventf(pod(), None, "Warning", "FailedScheduling", "Scheduling", "x")
        await recorder.drained(timeout=5)
        assert api.kinds() == ["create", "patch", "create"]
        [stored] = api.objects.values()
        assert stored["series"]["count"] == 2
        # patch 404, then the create finds it exists (the first create raced): retried
        other = pod("web-1", uid="u2")
        recorder.eventf(other, None, "Warning", "FailedScheduling", "Scheduling", "x")
        await recorder.drained(timeout=5)
        api.fail = [not_found("", "events", "x"), already_exists("", "events", "x")]
        recorder.eventf(other, None, "Warning", "FailedScheduling", "Scheduling", "x")
        await recorder.drained(timeout=5)
        assert api.kinds()[-4:] == ["create", "patch", "create", "patch"]
        assert [o["series"]["count"] for o in api.objects.values()] == [2, 2]
    finally:
        await recorder.stop()


async def test_without_events_v1_the_scheduler_records_legacy_events() -> None:
    api, clock = FakeApi(events_v1=False), FakeClock()
    recorders = Recorders(api, clock=clock, hostname="host")  # type: ignore[arg-type]
    recorder = recorders.event_recorder_for("default-scheduler")
    assert isinstance(recorder, LegacyEventRecorder)
    recorders.start()
    try:
        recorder.eventf(pod(), None, "Normal", "Scheduled", "Binding", "assigned")
        await recorders.drained(timeout=5)
    finally:
        await recorders.stop()
    [(kind, resource, event)] = api.calls
    assert (kind, resource) == ("create", "v1")
    assert event["source"] == {"component": "default-scheduler"}
    assert event["message"] == "assigned"
    assert event["reportingComponent"] == "default-scheduler"


async def test_recorders_are_one_per_source_and_started_with_the_factory() -> None:
    api, clock = FakeApi(), FakeClock()
    recorders = Recorders(api, clock=clock, hostname="host")  # type: ignore[arg-type]
    kubelet = recorders.recorder_for("kubelet", host="node-1")
    assert recorders.recorder_for("kubelet", host="node-1") is kubelet
    assert recorders.recorder_for("kubelet", host="node-2") is not kubelet
    scheduler = recorders.event_recorder_for("default-scheduler")
    assert isinstance(scheduler, EventRecorder)
    assert scheduler.reporting_instance == "default-scheduler-host"
    assert not kubelet.running
    recorders.start()
    try:
        assert kubelet.running
        late = recorders.recorder_for("kubelet", host="node-3")
        assert late.running
        kubelet.event(pod(), "Normal", "Pulled", "m")
        scheduler.eventf(pod(), None, "Normal", "Scheduled", "Binding", "m")
        await recorders.drained(timeout=5)
        assert sorted(r for _, r, _ in api.calls) == ["events.k8s.io/v1", "v1"]
    finally:
        await recorders.stop()
    assert not kubelet.running


# --- the scheduler's side ---------------------------------------------------------------------


def test_the_scheduler_truncates_notes_to_the_events_api_limit() -> None:
    assert truncate_message("short") == "short"
    long = "x" * 2000
    assert truncate_message(long) == "x" * 1020 + " ..."
    assert len(truncate_message(long)) == 1024


def test_a_status_change_is_no_pod_update_for_the_scheduling_queue() -> None:
    old = {**pod(), "spec": {"nodeSelector": {"disk": "ssd"}}, "status": {"phase": "Pending"}}
    status_only = {**old, "metadata": {**old["metadata"], "resourceVersion": "8"},
                   "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled"}]}}
    assert not pod_updated(old, status_only)
    tolerating = {**old, "spec": {**old["spec"], "tolerations": [{"operator": "Exists"}]}}
    assert pod_updated(old, tolerating)
    labelled = {**old, "metadata": {**old["metadata"], "labels": {"a": "b"}}}
    assert pod_updated(old, labelled)
