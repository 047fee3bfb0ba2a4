"""kubesim's event recorders against a real in-process ApiServer, and the scheduler's events.

Events are read back as clients read them: core/v1 Events listed with the field selector
`kubectl describe` uses (involvedObject.name=<pod>). Every wait is on a condition with a
timeout, woken by the API server's change notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import pytest

from kubesim.apiserver import ApiServer
from kubesim.controllers import ControllerManager, KubeletSettings, Recorders
from kubesim.controllers.recording import AGGREGATE_MESSAGE_PREFIX, FakeClock, Recorder
from tests.world.kube import ApiChanges

pytestmark = pytest.mark.integration

T = TypeVar("T")
Obj = dict[str, Any]
NS = "default"
# nothing listens there: the kubelet's pulls fail at once, which these tests do not mind
UNREACHABLE_IMAGE = "127.0.0.1:9/team/web:1.0"


class Api(ApiChanges):
    """An ApiServer with change-driven waits and event listings."""

    def events_about(self, name: str) -> list[Obj]:
        """What `kubectl describe pod <name>` lists."""
        items: list[Obj] = self.api.list(
            self.api.resource("v1", "Event"), namespace=NS,
            field_selector=f"involvedObject.name={name}",
        )["items"]
        return items

    async def create_pod(self, name: str, **spec: Any) -> Obj:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
               "spec": {"containers": [{"name": "web", "image": UNREACHABLE_IMAGE}], **spec}}
        return await self.api.create(self.api.resource("v1", "Pod"), pod)


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    server = ApiServer()
    await server.start()
    try:
        yield Api(server)
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def kubelet_recorder(api: Api, clock: FakeClock, **kwargs: Any) -> AsyncIterator[Recorder]:
    recorder = Recorder(api.api, component="kubelet", host="node-1", clock=clock, **kwargs)
    recorder.start()
    try:
        yield recorder
    finally:
        await recorder.stop(timeout=1.0)


async def test_identical_events_end_as_one_event_with_a_count(api: Api) -> None:
    pod = await api.create_pod("web-0")
    clock = FakeClock()
    async with kubelet_recorder(api, clock) as recorder:
        for _ in range(7):
            recorder.event(pod, "Warning", "BackOff", "Back-off pulling image",
                           field_path="spec.containers{web}")
            clock.advance(10)
        await recorder.drained(timeout=10)
    [event] = api.events_about("web-0")
    assert event["count"] == 7
    assert event["reason"] == "BackOff"
    assert event["involvedObject"]["fieldPath"] == "spec.containers{web}"
    assert event["source"] == {"component": "kubelet", "host": "node-1"}
    assert event["lastTimestamp"] > event["firstTimestamp"]
    assert event["eventTime"] is None
    assert event["metadata"]["name"].startswith("web-0.")


async def test_similar_events_are_combined(api: Api) -> None:
    pod = await api.create_pod("web-0")
    clock = FakeClock()
    async with kubelet_recorder(api, clock) as recorder:
        for i in range(12):
            recorder.event(pod, "Warning", "Failed", f"Failed to pull image: attempt {i}",
                           field_path="spec.containers{web}")
            clock.advance(1)
        await recorder.drained(timeout=10)
    events = api.events_about("web-0")
    combined = [e for e in events if e["message"].startswith(AGGREGATE_MESSAGE_PREFIX)]
    assert len(events) == 10  # nine on their own, then one for the tenth and later ones
    [event] = combined
    assert event["message"] == AGGREGATE_MESSAGE_PREFIX + "Failed to pull image: attempt 11"
    assert event["count"] == 3
    assert event["reportingComponent"] == ""


async def test_the_recorder_never_blocks_its_caller_when_the_api_fails(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = await api.create_pod("web-0")
    attempts = 0
    hang = asyncio.Event()

    async def unreachable(*_args: Any, **_kwargs: Any) -> Obj:
        nonlocal attempts
        attempts += 1
        if attempts > 1:
            await hang.wait()  # the API server stops answering
        raise ConnectionResetError("connection reset by peer")

    real_create = api.api.create
    monkeypatch.setattr(api.api, "create", unreachable)
    clock = FakeClock()
    recorder = Recorder(api.api, component="kubelet", host="node-1", clock=clock,
                        sleep_duration=0.01, queue_size=100)
    recorder.start()
    # event() is a plain function: with the API down it returns at once, and what the queue
    # cannot hold is dropped rather than waited for
    for i in range(300):
        assert recorder.event(pod, "Normal", f"R{i}", "m") is None
    await api.wait_for(lambda: attempts >= 2, what="a retry")
    assert recorder.dropped >= 199
    loop = asyncio.get_running_loop()
    started = loop.time()
    await recorder.stop(timeout=0.3)
    assert loop.time() - started < 5
    assert api.events_about("web-0") == []
    # the API is back: a new recorder writes again
    monkeypatch.setattr(api.api, "create", real_create)
    async with kubelet_recorder(api, clock) as again:
        again.event(pod, "Normal", "Pulled", "m")
        await again.drained(timeout=10)
    assert [e["reason"] for e in api.events_about("web-0")] == ["Pulled"]


async def test_a_rejected_event_does_not_stop_the_ones_after_it(api: Api) -> None:
    pod = await api.create_pod("web-0")
    ghost = {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": "ghost", "namespace": "no-such-namespace", "uid": "u"}}
    async with kubelet_recorder(api, FakeClock()) as recorder:
        recorder.event(ghost, "Normal", "Pulled", "m")  # 404: its namespace does not exist
        recorder.event(pod, "Normal", "Pulled", "m")
        await recorder.drained(timeout=10)
    assert len(api.events_about("web-0")) == 1


@contextlib.asynccontextmanager
async def cluster(api: Api, **kwargs: Any) -> AsyncIterator[ControllerManager]:
    manager = ControllerManager(
        api.api, nodes=("node-1",),
        kubelet=KubeletSettings(backoff_initial=0.2, backoff_max=0.8, pull_timeout=2.0),
        recorders=Recorders(api.api, hostname="control-plane", **kwargs),
    )
    await manager.start()
    try:
        yield manager
    finally:
        await manager.stop()


async def test_scheduling_a_pod_records_scheduled(api: Api) -> None:
    async with cluster(api):
        await api.create_pod("web")

        def scheduled() -> list[Obj]:
            return [e for e in api.events_about("web") if e.get("reason") == "Scheduled"]

        [event] = await api.wait_for(scheduled, what="a Scheduled event")
    assert event["type"] == "Normal"
    assert event["message"] == "Successfully assigned default/web to node-1"
    assert event["action"] == "Binding"
    assert event["reportingComponent"] == "default-scheduler"
    assert event["reportingInstance"] == "default-scheduler-control-plane"
    assert event["involvedObject"]["kind"] == "Pod"
    assert event["eventTime"]
    # the same Event through events.k8s.io/v1, as kube-scheduler wrote it
    [v1] = [e for e in api.api.list(api.api.resource("events.k8s.io/v1", "Event"),
                                    namespace=NS)["items"]
            if e["reason"] == "Scheduled" and e["regarding"]["name"] == "web"]
    assert v1["reportingController"] == "default-scheduler"
    assert v1["note"] == event["message"]
    assert v1["regarding"]["name"] == "web"


async def test_an_unschedulable_pod_records_failed_scheduling(api: Api) -> None:
    async with cluster(api) as manager:
        await api.create_pod("picky", nodeSelector={"disk": "ssd"})

        def failed() -> list[Obj]:
            events = api.events_about("picky")
            return sorted((e for e in events if e.get("reason") == "FailedScheduling"),
                          key=lambda e: int(e["metadata"]["resourceVersion"]))

        [event] = await api.wait_for(failed, what="a FailedScheduling event")
        assert event["type"] == "Warning"
        assert event["action"] == "Scheduling"
        assert event["reportingComponent"] == "default-scheduler"
        assert event["message"] == (
            "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. "
            "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.")
        pod = api.api.get(api.api.resource("v1", "Pod"), namespace=NS, name="picky")
        assert pod["status"]["conditions"][0]["reason"] == "Unschedulable"
        # writing that condition is no new attempt, hence no second event
        await manager.recorders.drained(timeout=10)
        assert len(failed()) == 1

        async def touch_node(value: str) -> None:
            nodes = api.api.resource("v1", "Node")
            node = api.api.get(nodes, namespace=None, name="node-1")
            node["metadata"].setdefault("labels", {})["zone"] = value
            await api.api.update(nodes, node)

        # A node change is a new attempt, about the pod as it is now (its resourceVersion
        # moved with the condition): a second Event. The attempt after that is isomorphic to
        # it, and becomes its series.
        await touch_node("a")
        await api.wait_for(lambda: len(failed()) == 2, what="a second FailedScheduling")
        await touch_node("b")
        latest = await api.wait_for(
            lambda: [e for e in failed() if e.get("series")], what="a series")
        assert latest[0]["series"]["count"] == 2
        assert len(failed()) == 2
