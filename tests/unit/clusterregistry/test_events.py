"""The event correlator (kube/events.py) decides as client-go's tools/record EventCorrelator:
a repeat is a PATCH of the Event already written, ten different messages of one reason are
combined, and a source gets 25 events per object, then one per five minutes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from clusterregistry.kube import events
from clusterregistry.kube.events import (
    Cache,
    Create,
    Drop,
    Event,
    EventRecorder,
    ObjectRef,
    Patch,
    correlate,
    written,
)

ARTIFACT = ObjectRef(api_version="clusterregistry.io/v1alpha1", kind="Artifact",
                     name="acr-example-io-nf-upf-1-2-65b0aeffb68b", uid="u-1")
SOURCE = events.source_for("reconciler", "reconciler-0")


def event(message: str = "copied", *, reason: str = "Mirrored", at: float = 1000.0,
          involved: ObjectRef = ARTIFACT, type_: str = "Normal") -> Event:
    return Event(involved=involved, type=type_, reason=reason, message=message, source=SOURCE,
                 first_timestamp=at, last_timestamp=at,
                 name=events.event_name(involved.name, int(at * 1e9)))


def store(cache: Cache, decision: Create | Patch | Drop, rv: str = "7") -> Event:
    """What the recorder does after the API server accepted the write."""
    assert not isinstance(decision, Drop)
    stored = Event(**{**decision.event.__dict__, "resource_version": rv})
    written(cache, decision.key, stored)
    return stored


def test_defaults_are_client_go_s() -> None:
    cache = Cache()
    assert (cache.burst, cache.qps, cache.max_events, cache.interval, cache.size) == (
        25, 1 / 300, 10, 600.0, 4096)


def test_a_first_event_is_created_in_default_for_a_cluster_scoped_object() -> None:
    decision = correlate(event(), Cache(), now=1000.0)
    assert isinstance(decision, Create)
    body = decision.event.body()
    assert body["metadata"]["namespace"] == "default"
    assert body["metadata"]["name"].startswith(ARTIFACT.name + ".")
    # client-go's %x of the time in ns (16 hex digits from 2006 on; 1000 s is 10)
    assert body["metadata"]["name"] == f"{ARTIFACT.name}.{1000 * 10**9:x}"
    assert len(events.event_name("x", 1_750_000_000 * 10**9).split(".")[1]) == 16
    assert body["involvedObject"] == {"apiVersion": "clusterregistry.io/v1alpha1",
                                      "kind": "Artifact", "name": ARTIFACT.name, "uid": "u-1"}
    assert body["count"] == 1
    assert body["source"] == {"component": "clusterregistry-reconciler"}
    assert body["reportingComponent"] == "clusterregistry.io/reconciler"
    assert body["reportingInstance"] == "reconciler-0"
    assert body["firstTimestamp"] == body["lastTimestamp"] == "1970-01-01T00:16:40Z"
    assert "eventTime" not in body  # core/v1 as tools/record writes it


def test_an_event_in_a_namespace_stays_there() -> None:
    pod = ObjectRef(api_version="v1", kind="Pod", name="gc-0", namespace="clusterregistry")
    assert correlate(event(involved=pod), Cache(), now=1.0).event.body()[  # type: ignore[union-attr]
        "metadata"]["namespace"] == "clusterregistry"


def test_a_repeat_patches_count_last_timestamp_and_message_of_the_first() -> None:
    cache = Cache()
    first = store(cache, correlate(event(at=1000.0), cache, now=1000.0), rv="7")
    second = correlate(event(at=1060.0), cache, now=1060.0)
    assert isinstance(second, Patch)
    assert second.event.name == first.name
    assert second.event.resource_version == "7"
    assert second.event.first_timestamp == 1000.0
    assert second.event.count == 2
    assert second.patch == {"count": 2, "lastTimestamp": "1970-01-01T00:17:40Z",
                            "message": "copied"}
    store(cache, second, rv="9")
    third = correlate(event(at=1100.0), cache, now=1100.0)
    assert isinstance(third, Patch) and third.event.count == 3
    assert third.event.resource_version == "9"


def test_a_different_message_reason_or_object_is_another_event() -> None:
    cache = Cache()
    store(cache, correlate(event("a"), cache, now=1.0))
    assert isinstance(correlate(event("b"), cache, now=2.0), Create)
    assert isinstance(correlate(event("a", reason="Refreshed"), cache, now=3.0), Create)
    other = ObjectRef(api_version=ARTIFACT.api_version, kind="Artifact", name="x", uid="u-2")
    assert isinstance(correlate(event("a", involved=other), cache, now=4.0), Create)


def test_ten_different_messages_within_ten_minutes_are_combined_into_one_event() -> None:
    cache = Cache()
    for i in range(9):
        decision = correlate(event(f"took {i}s", at=1000.0 + i), cache, now=1000.0 + i)
        assert isinstance(decision, Create), i
        store(cache, decision)
    tenth = correlate(event("took 9s", at=1009.0), cache, now=1009.0)
    assert isinstance(tenth, Create)
    assert tenth.event.message == "(combined from similar events): took 9s"
    assert tenth.event.count == 1
    store(cache, tenth, rv="20")
    # every later one, whatever its message, counts on the combined Event
    eleventh = correlate(event("took 10s", at=1010.0), cache, now=1010.0)
    assert isinstance(eleventh, Patch)
    assert eleventh.event.name == tenth.event.name
    assert eleventh.patch == {"count": 2, "lastTimestamp": "1970-01-01T00:16:50Z",
                              "message": "(combined from similar events): took 10s"}


def test_the_aggregation_window_restarts_after_ten_minutes_of_quiet() -> None:
    cache = Cache()
    for i in range(9):
        store(cache, correlate(event(f"m{i}"), cache, now=1000.0 + i))
    later = correlate(event("m9"), cache, now=1008.0 + 601)
    assert isinstance(later, Create)
    assert later.event.message == "m9"  # not combined: the set started again


def test_25_events_per_object_then_one_per_five_minutes() -> None:
    cache = Cache()
    for i in range(25):
        decision = correlate(event(f"m{i % 3}"), cache, now=1000.0)
        assert not isinstance(decision, Drop), i
        store(cache, decision)
    assert correlate(event("m0"), cache, now=1000.0) == Drop("rate_limited")
    assert correlate(event("m0"), cache, now=1000.0 + 299) == Drop("rate_limited")
    assert isinstance(correlate(event("m0"), cache, now=1000.0 + 300.5), Patch)
    assert correlate(event("m0"), cache, now=1000.0 + 301) == Drop("rate_limited")
    # the bucket is per source and object: another Artifact is not held up
    other = ObjectRef(api_version=ARTIFACT.api_version, kind="Artifact", name="x", uid="u-2")
    assert isinstance(correlate(event("m0", involved=other), cache, now=1001.0), Create)


def test_the_caches_are_bounded() -> None:
    cache = Cache(size=3)
    for i in range(10):
        ref = ObjectRef(api_version="v1", kind="Pod", name=f"p{i}", namespace="ns")
        store(cache, correlate(event(involved=ref), cache, now=float(i)))
    assert len(cache.aggregates) == len(cache.observed) == len(cache.spam) == 3


# -- the recorder: never blocks, never raises ---------------------------------------------------


class _FakeCore:
    """CoreV1Api's two event calls, answering as a gate says."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.created: list[dict[str, Any]] = []
        self.patched: list[tuple[str, str, dict[str, Any]]] = []
        self.fail = False

    async def create_namespaced_event(self, namespace: str, body: dict[str, Any]) -> Any:
        await self.gate.wait()
        if self.fail:
            raise OSError("connection refused")
        self.created.append(body)
        return _Stored(body["metadata"]["name"], str(len(self.created)), body["count"])

    async def patch_namespaced_event(self, name: str, namespace: str, body: dict[str, Any],
                                     **_: Any) -> Any:
        await self.gate.wait()
        self.patched.append((namespace, name, body))
        return _Stored(name, "p", body["count"])


class _Meta:
    def __init__(self, name: str, rv: str) -> None:
        self.name, self.resource_version = name, rv


class _Stored:
    def __init__(self, name: str, rv: str, count: int) -> None:
        self.metadata, self.count = _Meta(name, rv), count


def recorder(queue_size: int = 1000) -> tuple[EventRecorder, _FakeCore, dict[str, int]]:
    counts: dict[str, int] = {}
    rec = EventRecorder(object(), SOURCE, queue_size=queue_size,  # type: ignore[arg-type]
                        count=lambda o: counts.__setitem__(o, counts.get(o, 0) + 1))
    fake = _FakeCore()
    rec._core = fake  # type: ignore[assignment]
    return rec, fake, counts


async def test_record_never_waits_and_a_full_queue_drops_and_counts() -> None:
    rec, fake, counts = recorder(queue_size=2)
    for i in range(5):  # the API server does not answer: record returns at once anyway
        rec.record(ARTIFACT, "Normal", "Mirrored", f"m{i}")
    assert counts == {"dropped": 3}  # two queued (the writer has not run yet), three dropped
    fake.gate.set()
    await rec.stop(drain_seconds=10)
    assert [b["message"] for b in fake.created] == ["m0", "m1"]
    assert counts == {"dropped": 3, "created": 2}


async def test_a_repeat_is_patched_on_the_server() -> None:
    rec, fake, counts = recorder()
    fake.gate.set()
    rec.record(ARTIFACT, "Warning", "MirrorFailed", "unauthorized")
    rec.record(ARTIFACT, "Warning", "MirrorFailed", "unauthorized")
    await rec.stop(drain_seconds=10)
    (created,) = fake.created
    assert created["type"] == "Warning"
    assert fake.patched == [("default", created["metadata"]["name"], {
        "count": 2, "lastTimestamp": created["lastTimestamp"], "message": "unauthorized"})]
    assert counts == {"created": 1, "patched": 1}


async def test_a_failed_write_is_counted_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    rec, fake, counts = recorder()
    fake.fail = True
    fake.gate.set()
    with caplog.at_level("DEBUG", logger="clusterregistry.kube.events"):
        rec.record(ARTIFACT, "Normal", "Mirrored", "m")
        await rec.stop(drain_seconds=10)
    assert counts == {"failed": 1}
    assert any("connection refused" in r.getMessage() and r.levelname == "DEBUG"
               for r in caplog.records)
