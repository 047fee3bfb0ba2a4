"""The tracker on the real path (kubesim -> relay -> JetStream -> tracker -> KV): records per
owner, deletions, a tracker killed mid-flow, a DELETED the relay never saw, two trackers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from clusterregistry.errors import RetryableError
from clusterregistry.sandbox.supervising import wait_for
from clusterregistry.schemas import OwnerRecord
from tests.integration.tracker.worlds import Services, images_by_owner

pytestmark = pytest.mark.integration


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
    relay = await services.start_relay()
    await services.relisted()
    await services.start_tracker(early_loading=True)
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
    conflicts = sum(r.metric("clusterregistry_tracker_conflicts_total") for r in (first, second))
    # both read every event; each image was added once by whichever wrote first, and every
    # lost race was decided again rather than overwriting
    assert writes + conflicts >= 31
