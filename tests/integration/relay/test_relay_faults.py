"""Nothing lost, nothing doubled: NATS killed, the relay killed, history expired, two relays."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import msgspec
import pytest

from clusterregistry import schemas, subjects
from clusterregistry_sandbox.supervising import wait_for
from tests.integration.relay.conftest import Record, RunningRelay, World, events
from tests.world.inventories import Inventory

pytestmark = pytest.mark.integration


def _pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "nf"},
            "spec": {"containers": [{"name": "c", "image": f"acr.io/nf/{name}:1"}]}}


async def _create(world: World, names: list[str], *, concurrency: int = 20) -> None:
    pods = world.cluster.api.lookup("", "v1", "pods")
    queue = list(names)

    async def worker() -> None:
        while queue:
            name = queue.pop(0)
            await world.cluster.api.create(pods, _pod(name), namespace="nf")
            await asyncio.sleep(0)  # interleave with the relay, as API clients would

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def _live_pods(world: World) -> dict[str, str]:
    """uid -> resourceVersion of every pod kubesim holds."""
    pods = world.cluster.api.lookup("", "v1", "pods")
    return {p["metadata"]["uid"]: p["metadata"]["resourceVersion"]
            for p in world.cluster.api.list(pods)["items"]}


def _no_duplicates(records: list[Record]) -> None:
    counts = Counter(r.msg_id for r in records)
    doubled = {k: v for k, v in counts.items() if v > 1}
    assert not doubled, f"messages stored twice: {list(doubled)[:5]}"


def _latest_state_of_every_pod(world: World, records: list[Record]) -> bool:
    latest: dict[str, schemas.KubeEvent] = {}
    for event in events(records, kind="pod"):
        latest[event.uid] = event
    live = _live_pods(world)
    return all(uid in latest and latest[uid].resource_version == rv
               for uid, rv in live.items())


async def _published(running: RunningRelay, count: int) -> None:
    async def enough() -> bool:
        total = sum(running.metric("clusterregistry_relay_events_published_total",
                                   kind="pod", type=t) for t in ("ADDED", "MODIFIED", "SYNC"))
        return total >= count

    await wait_for(enough, timeout=60, description=f"{count} pod events published")


async def test_nats_killed_and_restarted_while_1000_pods_are_created(world: World) -> None:
    running = await world.start_relay()
    await world.relisted("pod")
    creating = asyncio.create_task(_create(world, [f"p{i:04d}" for i in range(1000)]))
    await _published(running, 100)
    await world.nats.kill()
    await creating
    await world.nats.restart()
    records = await world.wait_records(
        lambda rs: _latest_state_of_every_pod(world, rs), timeout=120,
        what="the latest state of all 1,000 pods")
    assert len(_live_pods(world)) == 1000
    _no_duplicates(records)
    assert running.metric("clusterregistry_relay_publish_retries_total", kind="pod") >= 1


async def test_relay_killed_mid_flow_resumes_from_its_checkpoint(world: World) -> None:
    first = await world.start_relay("relay-a")
    await world.relisted("pod")
    creating = asyncio.create_task(_create(world, [f"q{i:03d}" for i in range(300)]))
    await _published(first, 80)
    first.kill()
    await creating
    # and more while no relay runs: only a resumed watch can bring these
    await _create(world, [f"q{i:03d}" for i in range(300, 400)])
    # the same relay restarted (same identity: it takes its own Lease back at once)
    second = await world.start_relay("relay-a")
    records = await world.wait_records(lambda rs: _latest_state_of_every_pod(world, rs),
                                       what="all 400 pods after the restart")
    assert second.metric("clusterregistry_relay_events_published_total", kind="pod",
                         type="ADDED") >= 100
    _no_duplicates(records)
    assert second.metric("clusterregistry_relay_relists_total", kind="pod") == 0
    assert sum(1 for r in records if r.subject == subjects.relist("pod")) == 2  # the first


async def test_expired_history_means_a_relist_that_tells_consumers_what_is_gone(
    world: World,
) -> None:
    api = world.cluster.api
    pods = api.lookup("", "v1", "pods")
    api.store.bucket(pods).history_limit = 50
    first = await world.start_relay("relay-a")
    await world.relisted("pod")
    await _create(world, [f"r{i:02d}" for i in range(20)])
    await world.wait_records(lambda rs: _latest_state_of_every_pod(world, rs))
    first.kill()
    # while no relay runs: deletions it will never see as events, and enough churn to push
    # its checkpoint out of the API server's history
    for i in range(10):
        await api.delete(pods, namespace="nf", name=f"r{i:02d}")
    await _create(world, [f"s{i:02d}" for i in range(10)])
    for i in range(60):
        await api.patch(pods, namespace="nf", name="s00",
                        patch={"metadata": {"labels": {"n": str(i)}}},
                        patch_type="application/merge-patch+json")
    second = await world.start_relay("relay-a")
    records = await world.wait_records(
        lambda rs: sum(1 for r in rs if r.subject == subjects.relist("pod")
                       and r.data["phase"] == "end") == 2,
        what="the second relist's end marker")
    assert second.metric("clusterregistry_relay_gone_total", kind="pod") == 1
    inventory = Inventory()
    for record in records:
        if record.subject.endswith("._relist"):
            inventory.apply_marker(msgspec.convert(record.data, schemas.RelistMarker))
        else:
            inventory.apply_event(msgspec.convert(record.data, schemas.KubeEvent))
    assert inventory.uids("pod") == set(_live_pods(world))
    _no_duplicates(records)


async def test_two_relays_no_duplicates_and_killing_the_leader_loses_nothing(
    world: World,
) -> None:
    a = await world.start_relay("relay-a")
    b = await world.start_relay("relay-b")
    await world.relisted("pod")
    leader, standby = (a, b) if a.relay.elector.leading else (b, a)
    assert not standby.relay.elector.leading
    creating = asyncio.create_task(_create(world, [f"t{i:03d}" for i in range(200)],
                                           concurrency=4))
    await _published(leader, 50)
    leader.kill()
    await creating
    # created after the leader died: only the standby, once it holds the Lease, can bring them
    await _create(world, [f"t{i:03d}" for i in range(200, 400)])
    records = await world.wait_records(lambda rs: _latest_state_of_every_pod(world, rs),
                                       what="all 400 pods after failover")
    assert standby.metric("clusterregistry_relay_events_published_total", kind="pod",
                          type="ADDED") >= 200
    _no_duplicates(records)
    assert standby.relay.elector.leading
    assert sum(1 for r in records if r.subject == subjects.relist("pod")) == 2


async def test_an_oversized_object_is_published_marked_and_the_relay_goes_on(
    world: World,
) -> None:
    running = await world.start_relay()
    await world.relisted("pod")
    huge = _pod("huge")
    huge["spec"]["containers"] = [
        {"name": f"c{i}", "image": f"acr.io/network-functions/{'x' * 120}/image-{i}:1.0"}
        for i in range(6000)]
    api = world.cluster.api
    pods = api.lookup("", "v1", "pods")
    created = await api.create(pods, huge, namespace="nf")
    await api.create(pods, _pod("after"), namespace="nf")
    records = await world.wait_records(
        lambda rs: any(e.name == "after" for e in events(rs, kind="pod")))
    marked = [e for e in events(records, kind="pod") if e.uid == created["metadata"]["uid"]]
    assert len(marked) == 1 and marked[0].oversized and marked[0].pod is None
    assert running.metric("clusterregistry_relay_oversized_total", kind="pod") == 1
    assert not running.task.done()
