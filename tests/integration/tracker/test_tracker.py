"""The tracker on the real path (kubesim -> relay -> JetStream -> tracker -> KV): records per
owner, deletions, a tracker killed mid-flow, a DELETED the relay never saw, and replicas
sharing one consumer: lost updates, a relist split between them, one SIGKILLed, a new one
that does not replay the stream."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from clusterregistry import subjects
from clusterregistry.errors import RetryableError
from clusterregistry.schemas import OwnerRecord
from clusterregistry_sandbox.supervising import Process, free_port, wait_for
from tests.integration.tracker.worlds import LOCAL_REGISTRY, Services, images_by_owner

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


def _template(*images: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": f"c{i}", "image": image}
                                    for i, image in enumerate(images)]}}


async def _replicaset(world: Services, name: str, *images: str, ns: str = "nf"
                      ) -> dict[str, Any]:
    api = world.cluster.api
    return await api.create(api.lookup("apps", "v1", "replicasets"), {
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}},
                 "template": _template(*images)}}, namespace=ns)


async def _pod(world: Services, name: str, *images: str, owner: dict[str, Any] | None = None,
               ns: str = "nf", originals: dict[str, str] | None = None) -> dict[str, Any]:
    api = world.cluster.api
    meta: dict[str, Any] = {"name": name}
    if owner is not None:
        meta["ownerReferences"] = [{
            "apiVersion": "apps/v1", "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True}]
    if originals:
        meta["annotations"] = {"clusterregistry.io/original-images": json.dumps(originals)}
    return await api.create(api.lookup("", "v1", "pods"), {
        "metadata": meta,
        "spec": {"containers": [{"name": f"c{i}", "image": image}
                                for i, image in enumerate(images)]}}, namespace=ns)


async def _delete(world: Services, kind: tuple[str, str, str], name: str, ns: str = "nf"
                  ) -> None:
    api = world.cluster.api
    await api.delete(api.lookup(*kind), namespace=ns, name=name)


RS = ("apps", "v1", "replicasets")
PODS = ("", "v1", "pods")


async def _until_refs(world: Services, expected: dict[tuple[str, str, str], list[str]], *,
                      timeout: float = 60) -> dict[str, OwnerRecord]:
    last: list[Any] = []

    async def check() -> tuple[dict[str, OwnerRecord]] | None:
        refs = await world.refs()
        last[:] = [images_by_owner(refs)]
        return (refs,) if images_by_owner(refs) == expected else None  # () when none: truthy

    try:
        return (await wait_for(check, timeout=timeout, description="owner records",
                               retry_on=(RetryableError,)))[0]
    except TimeoutError:
        raise AssertionError(f"records: {last[0] if last else None}\nexpected: {expected}"
                             ) from None


async def test_records_per_owner_with_originals_and_deletion(services: Services) -> None:
    await services.start_relay()
    await services.relisted()
    await services.start_tracker(early_loading=False)
    rs = await _replicaset(services, "upf", "acr.example.io/nf/upf:1.2")
    # without early loading the ReplicaSet alone references nothing
    await _pod(services, "bare", "busybox")
    await _until_refs(services, {("Pod", "nf", "bare"): ["docker.io/library/busybox:latest"]})
    await _pod(services, "upf-1", "edge.local:5000/acr.example.io/nf/upf:1.2",
               "edge.local:5000/acr.example.io/nf/sidecar:2", owner={**rs, "kind": "ReplicaSet"},
               originals={"c0": "acr.example.io/nf/upf:1.2"})
    refs = await _until_refs(services, {
        ("Pod", "nf", "bare"): ["docker.io/library/busybox:latest"],
        ("ReplicaSet", "nf", "upf"): ["acr.example.io/nf/sidecar:2", "acr.example.io/nf/upf:1.2"],
    })
    assert refs[rs["metadata"]["uid"]].kind == "ReplicaSet"
    # the pod going removes nothing; its ReplicaSet and the bare pod going remove their records
    await _delete(services, PODS, "upf-1")
    await asyncio.sleep(0)
    await _delete(services, PODS, "bare")
    await _until_refs(services, {
        ("ReplicaSet", "nf", "upf"): ["acr.example.io/nf/sidecar:2", "acr.example.io/nf/upf:1.2"]})
    await _delete(services, RS, "upf")
    await _until_refs(services, {})


async def test_killed_mid_flow_and_restarted_the_records_are_exact(services: Services) -> None:
    await services.start_relay()
    await services.relisted()
    tracker = await services.start_tracker(early_loading=True, batch_size=8)
    owners = [await _replicaset(services, f"rs-{i}", f"acr.example.io/nf/app{i}:1")
              for i in range(6)]
    expected: dict[tuple[str, str, str], list[str]] = {}
    for i, rs in enumerate(owners):
        expected[("ReplicaSet", "nf", f"rs-{i}")] = [f"acr.example.io/nf/app{i}:1"]
        for j in range(4):
            await _pod(services, f"rs-{i}-{j}", f"acr.example.io/nf/app{i}:1",
                       f"acr.example.io/nf/extra{j}:1", owner={**rs, "kind": "ReplicaSet"})
        expected[("ReplicaSet", "nf", f"rs-{i}")] = sorted(
            [f"acr.example.io/nf/app{i}:1"] + [f"acr.example.io/nf/extra{j}:1"
                                               for j in range(4)])
    await wait_for(lambda: _applied(tracker, 5), timeout=30, description="some progress")
    await tracker.kill()
    # while no tracker runs: two owners go (one with its pods), a bare pod comes
    await _delete(services, RS, "rs-0")
    await _delete(services, RS, "rs-1")
    for j in range(4):
        await _delete(services, PODS, f"rs-1-{j}")
    await _pod(services, "lonely", "acr.example.io/nf/lonely:1")
    del expected[("ReplicaSet", "nf", "rs-0")]
    del expected[("ReplicaSet", "nf", "rs-1")]
    expected[("Pod", "nf", "lonely")] = ["acr.example.io/nf/lonely:1"]
    # the same durable consumer: what the killed tracker had not acked comes again
    await services.start_tracker(early_loading=True, batch_size=8)
    await _until_refs(services, expected)


async def _applied(running: Any, count: int) -> bool:
    return bool(running.service.applied >= count)


async def test_a_missed_deleted_is_recovered_through_a_relist(services: Services) -> None:
    await services.start_relay()
    await services.relisted()
    await services.start_tracker(early_loading=True)
    await _missed_deleted_recovered(services)


async def test_two_trackers_split_a_relist_and_recover_a_missed_deleted(
        services: Services) -> None:
    await services.start_relay()
    await services.relisted()
    # small batches, so both replicas get part of every stretch of the stream
    first = await services.start_tracker("a", early_loading=True, batch_size=2)
    second = await services.start_tracker("b", early_loading=True, batch_size=2)
    await _missed_deleted_recovered(services)
    # the relist's end was concluded by one of them, from marks both wrote
    relists = sum(r.metric("clusterregistry_tracker_relists_total", kind="replicaset")
                  for r in (first, second))
    dereferenced = sum(r.metric("clusterregistry_tracker_dereferenced_total", kind=kind)
                       for r in (first, second) for kind in ("replicaset", "pod"))
    assert relists >= 1 and dereferenced == 2
    assert first.service.applied > 0 and second.service.applied > 0  # the stream was split
    await _one_shared_consumer(services)


async def _missed_deleted_recovered(services: Services) -> None:
    relay = services.running[0]
    for name in ("keep", "gone"):
        await _replicaset(services, name, f"acr.example.io/nf/{name}:1")
    bare = await _pod(services, "bare-gone", "acr.example.io/nf/bare:1")
    await _until_refs(services, {
        ("ReplicaSet", "nf", "keep"): ["acr.example.io/nf/keep:1"],
        ("ReplicaSet", "nf", "gone"): ["acr.example.io/nf/gone:1"],
        ("Pod", "nf", "bare-gone"): ["acr.example.io/nf/bare:1"]})
    await relay.shutdown()
    # while the relay is down: deletions, then enough churn that the API server's history no
    # longer reaches the relay's checkpoint, so it gets 410 Gone and relists
    api = services.cluster.api
    for kind in (RS, PODS):
        api.store.bucket(api.lookup(*kind)).history_limit = 20
    await _delete(services, RS, "gone")
    await _delete(services, PODS, "bare-gone")
    for i in range(25):
        await api.patch(api.lookup(*RS), namespace="nf", name="keep",
                        patch={"metadata": {"labels": {"churn": str(i)}}},
                        patch_type="application/merge-patch+json")
        await _pod(services, f"churn-{i}", "acr.example.io/nf/churn:1",
                   owner={**(await _get(services, "keep")), "kind": "ReplicaSet"})
    restarted = await services.start_relay("relay-b")
    refs = await _until_refs(services, {
        ("ReplicaSet", "nf", "keep"): ["acr.example.io/nf/churn:1", "acr.example.io/nf/keep:1"]})
    assert bare["metadata"]["uid"] not in refs
    assert restarted.metric("clusterregistry_relay_gone_total", kind="replicaset") >= 1


async def _one_shared_consumer(services: Services) -> None:
    js = await services.observer()
    names = [c.name for c in await js.consumers_info(subjects.KUBE_STREAM)
             if c.name.startswith(subjects.TRACKER_CONSUMER)]
    assert names == [subjects.TRACKER_CONSUMER]


async def _get(world: Services, name: str) -> dict[str, Any]:
    api = world.cluster.api
    found = api.get(api.lookup(*RS), namespace="nf", name=name)
    assert found is not None
    return found


async def test_two_trackers_lose_no_update(services: Services) -> None:
    await services.start_relay()
    await services.relisted()
    first = await services.start_tracker("a", early_loading=True, batch_size=4)
    second = await services.start_tracker("b", early_loading=True, batch_size=4)
    rs = await _replicaset(services, "shared", "acr.example.io/nf/base:1")
    for j in range(30):
        await _pod(services, f"p-{j}", f"acr.example.io/nf/img{j}:1",
                   owner={**rs, "kind": "ReplicaSet"})
    await _until_refs(services, {("ReplicaSet", "nf", "shared"): sorted(
        ["acr.example.io/nf/base:1"] + [f"acr.example.io/nf/img{j}:1" for j in range(30)])})
    writes = sum(r.metric("clusterregistry_tracker_kv_writes_total", operation="put")
                 for r in (first, second))
    # the pods were split between them, all writing one owner's record: every image was
    # added by a write of its own (a lost race was decided again rather than overwriting)
    assert writes >= 31
    assert first.service.applied > 0 and second.service.applied > 0
    await _one_shared_consumer(services)


def _process_env(services: Services, port: int) -> dict[str, str]:
    return {**os.environ, "CLUSTERREGISTRY_NATS_SERVERS": services.nats.url,
            "CLUSTERREGISTRY_PROBEPORT": str(port),
            "CLUSTERREGISTRY_PROBEHOST": "127.0.0.1", "CLUSTERREGISTRY_LOG_FORMAT": "json",
            "CLUSTERREGISTRY_ENABLECLUSTERREGISTRY": "true",
            "CLUSTERREGISTRY_ENABLEEARLYLOADING": "true",
            "CLUSTERREGISTRY_LOCALREGISTRY": LOCAL_REGISTRY,
            # as `start_tracker` sets them: one consumer, one configuration
            "CLUSTERREGISTRY_TRACKER_BATCHSIZE": "4",
            "CLUSTERREGISTRY_TRACKER_ACKWAITSECONDS": "3",
            "CLUSTERREGISTRY_TRACKER_RETRYINITIALSECONDS": "0.1",
            "CLUSTERREGISTRY_TRACKER_RETRYMAXSECONDS": "1"}


async def _applied_by_process(session: aiohttp.ClientSession, port: int) -> float:
    try:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
            text = await resp.text()
    except aiohttp.ClientError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("clusterregistry_tracker_events_total{"))


async def test_one_of_two_trackers_sigkilled_the_other_finishes(services: Services,
                                                                tmp_path: Path) -> None:
    await services.start_relay()
    await services.relisted()
    port = free_port()
    killed = Process([sys.executable, str(ROOT / "cmd" / "tracker.py"), "--identity",
                      "tracker-7f9c-x2"], name="tracker-a",
                     log_path=tmp_path / "tracker-a.log", env=_process_env(services, port))
    await killed.start()
    try:
        async with aiohttp.ClientSession() as session:
            await wait_for(lambda: _ready(session, port), timeout=60,
                           description="the process tracker ready")
            expected: dict[tuple[str, str, str], list[str]] = {}

            async def owner_with_pods(i: int) -> None:
                rs = await _replicaset(services, f"rs-{i}", f"acr.example.io/nf/app{i}:1")
                for j in range(4):
                    await _pod(services, f"rs-{i}-{j}", f"acr.example.io/nf/app{i}:1",
                               f"acr.example.io/nf/extra{j}:1",
                               owner={**rs, "kind": "ReplicaSet"})
                expected[("ReplicaSet", "nf", f"rs-{i}")] = sorted(
                    [f"acr.example.io/nf/app{i}:1"] + [f"acr.example.io/nf/extra{j}:1"
                                                       for j in range(4)])

            # the process alone applies some owners first (with two pulling from the one
            # consumer, which gets what is up to the server: an in-process tracker could
            # take every message), then both pull while more come, then the process dies
            made = 0
            while await _applied_by_process(session, port) < 3:
                assert made < 40, "the process tracker never got a message"
                await owner_with_pods(made)
                made += 1
            survivor = await services.start_tracker("tracker-7f9c-y3", early_loading=True,
                                                    batch_size=4)
            for i in range(made, made + 3):
                await owner_with_pods(i)
            made += 3
        assert await killed.kill() == -9
        # from here on only the survivor runs: what the killed one held comes back to it
        # after the ack wait, and everything new is its alone
        for i in range(made, made + 3):
            await owner_with_pods(i)
        await _delete(services, RS, "rs-0")
        del expected[("ReplicaSet", "nf", "rs-0")]
        await _pod(services, "lonely", "acr.example.io/nf/lonely:1")
        expected[("Pod", "nf", "lonely")] = ["acr.example.io/nf/lonely:1"]
        await _until_refs(services, expected)
        assert survivor.service.applied > 0
        await _one_shared_consumer(services)
    finally:
        await killed.kill()


async def _ready(session: aiohttp.ClientSession, port: int) -> bool:
    try:
        async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def test_a_new_tracker_does_not_replay_the_stream(services: Services) -> None:
    await services.start_relay()
    await services.relisted()
    old = await services.start_tracker("tracker-5d8f-old", early_loading=True)
    for i in range(5):
        await _replicaset(services, f"rs-{i}", f"acr.example.io/nf/app{i}:1")
    expected = {("ReplicaSet", "nf", f"rs-{i}"): [f"acr.example.io/nf/app{i}:1"]
                for i in range(5)}
    await _until_refs(services, expected)
    js = await services.observer()

    async def all_acked() -> bool:
        info = await js.consumer_info(subjects.KUBE_STREAM, subjects.TRACKER_CONSUMER)
        stream = await js.stream_info(subjects.KUBE_STREAM)
        return bool(info.ack_floor and info.ack_floor.stream_seq == stream.state.last_seq)

    await wait_for(all_acked, timeout=30, description="the stream applied")
    history = (await js.stream_info(subjects.KUBE_STREAM)).state.messages
    await old.shutdown()
    # a rollout: the next pod has a new name, and reads on where the last one stopped
    new = await services.start_tracker("tracker-5d8f-new", early_loading=True)
    await _replicaset(services, "rs-5", "acr.example.io/nf/app5:1")
    expected[("ReplicaSet", "nf", "rs-5")] = ["acr.example.io/nf/app5:1"]
    await _until_refs(services, expected)
    await wait_for(all_acked, timeout=30, description="the new message applied")
    # the relists and the five owners' events were not applied again: only what came after
    assert history > 5
    assert new.service.applied == 1, (new.service.applied, history)
    await _one_shared_consumer(services)
