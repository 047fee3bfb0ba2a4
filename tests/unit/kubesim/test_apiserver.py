"""ApiServer semantics without HTTP: metadata, concurrency, deletion, watch and lists."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from clusterregistry_sandbox.supervising import wait_for
from kubesim import statuses
from kubesim.apiserver import JSON_PATCH, MERGE_PATCH, ApiServer
from kubesim.resources import Resource
from kubesim.storage import Event, Store, Watch


@pytest.fixture
async def api() -> AsyncIterator[ApiServer]:
    server = ApiServer(store=Store(history=50))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _cm(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}


def _pod(name: str, node: str = "", **labels: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "example.com/a:1"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": spec}


def _drain(watch: Watch) -> list[tuple[str, str]]:
    return [(e.type, e.object["metadata"]["name"]) for e in watch.drain()]


async def _wait(predicate: Any, timeout: float = 10.0) -> None:
    async def check() -> Any:
        return predicate()

    await wait_for(check, timeout=timeout, interval=0.01)


def cms(api: ApiServer) -> Resource:
    return api.lookup("", "v1", "configmaps")


async def test_create_fills_system_fields_and_one_global_counter(api: ApiServer) -> None:
    a = await api.create(cms(api), _cm("a"), namespace="default")
    pod = await api.create(api.lookup("", "v1", "pods"), _pod("p"), namespace="default")
    assert a["metadata"]["uid"] != pod["metadata"]["uid"]
    assert int(pod["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])
    assert a["metadata"]["generation"] == 1
    assert a["metadata"]["creationTimestamp"].endswith("Z")
    assert pod["status"]["phase"] == "Pending"


async def test_generate_name(api: ApiServer) -> None:
    obj = _cm("")
    obj["metadata"] = {"generateName": "web-"}
    created = await api.create(cms(api), obj, namespace="default")
    name = created["metadata"]["name"]
    assert name.startswith("web-") and len(name) == len("web-") + 5


async def test_errors_carry_kube_reasons(api: ApiServer) -> None:
    await api.create(cms(api), _cm("a"), namespace="default")
    with pytest.raises(statuses.ApiError) as exists:
        await api.create(cms(api), _cm("a"), namespace="default")
    assert (exists.value.code, exists.value.reason) == (409, "AlreadyExists")
    with pytest.raises(statuses.ApiError) as missing:
        api.get(cms(api), namespace="default", name="nope")
    assert (missing.value.code, missing.value.reason) == (404, "NotFound")
    with pytest.raises(statuses.ApiError) as no_ns:
        await api.create(cms(api), _cm("x"), namespace="absent")
    assert no_ns.value.code == 404
    with pytest.raises(statuses.ApiError) as bad:
        await api.create(cms(api), _cm("Bad_Name"), namespace="default")
    assert (bad.value.code, bad.value.reason) == (422, "Invalid")
    assert bad.value.details is not None
    assert bad.value.details["causes"][0]["field"] == "metadata.name"


async def test_stale_update_conflicts_and_noop_keeps_the_version(api: ApiServer) -> None:
    created = await api.create(cms(api), _cm("a"), namespace="default")
    same = await api.update(cms(api), created)
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    changed = {**created, "data": {"k": "w"}}
    await api.update(cms(api), changed)
    with pytest.raises(statuses.ApiError) as conflict:
        await api.update(cms(api), {**created, "data": {"k": "x"}})
    assert (conflict.value.code, conflict.value.reason) == (409, "Conflict")


async def test_generation_moves_with_spec_not_metadata_or_status(api: ApiServer) -> None:
    deployments = api.lookup("apps", "v1", "deployments")
    spec = {"selector": {"matchLabels": {"a": "b"}}, "template": {
        "metadata": {"labels": {"a": "b"}},
        "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}
    created = await api.create(deployments, {"metadata": {"name": "d"}, "spec": spec},
                               namespace="default")
    labelled = await api.patch(deployments, namespace="default", name="d",
                               patch={"metadata": {"labels": {"x": "y"}}},
                               patch_type=MERGE_PATCH)
    status = await api.patch(deployments, namespace="default", name="d",
                             patch={"status": {"replicas": 3}}, patch_type=MERGE_PATCH,
                             subresource="status")
    scaled = await api.patch(deployments, namespace="default", name="d",
                             patch=[{"op": "replace", "path": "/spec/replicas", "value": 2}],
                             patch_type=JSON_PATCH)
    assert [o["metadata"]["generation"] for o in (created, labelled, status, scaled)] == [
        1, 1, 1, 2]
    assert status["status"] == {"replicas": 3}
    # the main endpoint cannot write status
    ignored = await api.patch(deployments, namespace="default", name="d",
                              patch={"status": {"replicas": 9}}, patch_type=MERGE_PATCH)
    assert ignored["status"] == {"replicas": 3}


async def test_finalizers_hold_deletion_until_removed(api: ApiServer) -> None:
    obj = _cm("held")
    obj["metadata"]["finalizers"] = ["example.com/keep"]
    await api.create(cms(api), obj, namespace="default")
    deleting = await api.delete(cms(api), namespace="default", name="held")
    assert deleting["metadata"]["deletionTimestamp"]
    assert api.get(cms(api), namespace="default", name="held")["metadata"]["finalizers"] == [
        "example.com/keep"]
    await api.patch(cms(api), namespace="default", name="held",
                    patch={"metadata": {"finalizers": None}}, patch_type=MERGE_PATCH)
    with pytest.raises(statuses.ApiError):
        api.get(cms(api), namespace="default", name="held")


async def test_bound_pods_terminate_gracefully(api: ApiServer) -> None:
    pods = api.lookup("", "v1", "pods")
    await api.create(pods, _pod("bound", node="node-1"), namespace="default")
    await api.create(pods, _pod("unbound"), namespace="default")
    terminating = await api.delete(pods, namespace="default", name="bound")
    assert terminating["metadata"]["deletionGracePeriodSeconds"] == 30
    assert api.get(pods, namespace="default", name="bound")
    await api.delete(pods, namespace="default", name="unbound")
    with pytest.raises(statuses.ApiError):
        api.get(pods, namespace="default", name="unbound")
    await api.delete(pods, namespace="default", name="bound", grace_period_seconds=0)
    with pytest.raises(statuses.ApiError):
        api.get(pods, namespace="default", name="bound")


async def test_foreground_deletion_waits_for_dependents(api: ApiServer) -> None:
    owner = await api.create(cms(api), _cm("owner"), namespace="default")
    dep = _cm("dep")
    dep["metadata"]["ownerReferences"] = [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
        "uid": owner["metadata"]["uid"], "blockOwnerDeletion": True}]
    dep["metadata"]["finalizers"] = ["example.com/slow"]
    await api.create(cms(api), dep, namespace="default")
    await api.delete(cms(api), namespace="default", name="owner",
                     propagation_policy="Foreground")
    await _wait(lambda: api.get(cms(api), namespace="default", name="dep")["metadata"].get(
        "deletionTimestamp"))
    # the owner stays while its blocking dependent is still there
    assert "foregroundDeletion" in api.get(cms(api), namespace="default", name="owner")[
        "metadata"]["finalizers"]
    await api.patch(cms(api), namespace="default", name="dep",
                    patch={"metadata": {"finalizers": None}}, patch_type=MERGE_PATCH)

    def owner_gone() -> bool:
        try:
            api.get(cms(api), namespace="default", name="owner")
        except statuses.ApiError:
            return True
        return False

    await _wait(owner_gone)


async def test_namespace_termination_empties_it(api: ApiServer) -> None:
    namespaces = api.lookup("", "v1", "namespaces")
    await api.create(namespaces, {"metadata": {"name": "doomed"}})
    await api.create(cms(api), _cm("a"), namespace="doomed")
    ns = await api.delete(namespaces, namespace=None, name="doomed")
    assert ns["status"]["phase"] == "Terminating"
    with pytest.raises(statuses.ApiError) as refused:
        await api.create(cms(api), _cm("b"), namespace="doomed")
    assert refused.value.code == 403

    def gone() -> bool:
        try:
            api.get(namespaces, namespace=None, name="doomed")
        except statuses.ApiError:
            return True
        return False

    await _wait(gone)
    assert api.list(cms(api), namespace="doomed")["items"] == []


async def test_watch_with_selector_sees_objects_enter_and_leave(api: ApiServer) -> None:
    await api.create(cms(api), _cm("a", tier="edge"), namespace="default")
    watch = api.watch(cms(api), namespace="default", label_selector="tier=edge",
                      resource_version=str(api.store.rv))
    await api.patch(cms(api), namespace="default", name="a",
                    patch={"metadata": {"labels": {"tier": "core"}}}, patch_type=MERGE_PATCH)
    await api.patch(cms(api), namespace="default", name="a",
                    patch={"metadata": {"labels": {"tier": "edge"}}}, patch_type=MERGE_PATCH)
    await api.create(cms(api), _cm("b", tier="core"), namespace="default")
    await api.delete(cms(api), namespace="default", name="a")
    assert _drain(watch) == [("DELETED", "a"), ("ADDED", "a"), ("DELETED", "a")]
    watch.close()


async def test_watch_resume_and_410_after_compaction(api: ApiServer) -> None:
    start = str(api.store.rv)
    for i in range(10):
        await api.create(cms(api), _cm(f"c{i}"), namespace="default")
    resumed = api.watch(cms(api), resource_version=start)
    assert [name for _, name in _drain(resumed)] == [f"c{i}" for i in range(10)]
    resumed.close()
    for i in range(60):  # history holds 50 changes
        await api.patch(cms(api), namespace="default", name="c0",
                        patch={"data": {"i": str(i)}}, patch_type=MERGE_PATCH)
    with pytest.raises(statuses.ApiError) as gone:
        api.watch(cms(api), resource_version=start)
    assert (gone.value.code, gone.value.reason) == (410, "Expired")


async def test_initial_events_when_no_resource_version(api: ApiServer) -> None:
    await api.create(cms(api), _cm("x"), namespace="default")
    watch = api.watch(cms(api))
    events = watch.drain()
    assert [(e.type, e.object["metadata"]["name"]) for e in events] == [("ADDED", "x")]
    assert isinstance(events[0], Event)
    watch.close()


async def test_pod_field_selectors(api: ApiServer) -> None:
    pods = api.lookup("", "v1", "pods")
    await api.create(pods, _pod("on1", node="node-1"), namespace="default")
    await api.create(pods, _pod("on2", node="node-2"), namespace="default")
    listed = api.list(pods, field_selector="spec.nodeName=node-2")
    assert [p["metadata"]["name"] for p in listed["items"]] == ["on2"]
    with pytest.raises(statuses.ApiError) as bad:
        api.list(cms(api), field_selector="spec.nodeName=node-2")
    assert bad.value.code == 400


async def test_deleting_a_crd_removes_its_objects(api: ApiServer) -> None:
    crds = api.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    await api.create(crds, {"metadata": {"name": "things.example.com"}, "spec": {
        "group": "example.com", "scope": "Cluster",
        "names": {"plural": "things", "singular": "thing", "kind": "Thing"},
        "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
            "openAPIV3Schema": {"type": "object",
                                "x-kubernetes-preserve-unknown-fields": True}}}]}})
    things = api.lookup("example.com", "v1", "things")
    await api.create(things, {"apiVersion": "example.com/v1", "kind": "Thing",
                              "metadata": {"name": "t1"}})
    watch = api.watch(things, resource_version=str(api.store.rv))
    await api.delete(crds, namespace=None, name="things.example.com")
    assert _drain(watch) == [("DELETED", "t1")]
    assert watch.closed
    with pytest.raises(statuses.ApiError):
        api.lookup("example.com", "v1", "things")


async def test_dry_run_writes_nothing(api: ApiServer) -> None:
    rv = api.store.rv
    created = await api.create(cms(api), _cm("dry"), namespace="default", dry_run=True)
    assert created["metadata"]["uid"]
    assert api.store.rv == rv
    with pytest.raises(statuses.ApiError):
        api.get(cms(api), namespace="default", name="dry")
