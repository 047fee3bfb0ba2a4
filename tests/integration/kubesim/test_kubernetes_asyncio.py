"""kubesim as kubernetes-asyncio sees it: list, watch with resume, 410, patch, CRD objects."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from kubesim.running import Cluster, ClusterSettings

pytestmark = pytest.mark.integration


@pytest.fixture
async def api_client(kube_api: Cluster) -> AsyncIterator[client.ApiClient]:
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kube_api.kubeconfig),
                                  client_configuration=configuration)
    async with client.ApiClient(configuration) as api:
        yield api


def _pod(name: str, **labels: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "example.com/app:1"}]}}


async def test_list_with_limit_and_continue(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    for i in range(7):
        await core.create_namespaced_pod("default", _pod(f"p{i}"))
    first = await core.list_namespaced_pod("default", limit=3)
    assert [p.metadata.name for p in first.items] == ["p0", "p1", "p2"]
    assert first.metadata.remaining_item_count == 4
    # a write between pages does not leak into the paginated snapshot
    await core.create_namespaced_pod("default", _pod("p3a"))
    second = await core.list_namespaced_pod("default", limit=3, _continue=first.metadata._continue)
    assert [p.metadata.name for p in second.items] == ["p3", "p4", "p5"]
    third = await core.list_namespaced_pod("default", limit=3, _continue=second.metadata._continue)
    assert [p.metadata.name for p in third.items] == ["p6"]
    assert third.metadata._continue is None
    assert second.metadata.resource_version == first.metadata.resource_version
    fresh = await core.list_namespaced_pod("default")
    assert len(fresh.items) == 8


async def test_watch_resumes_from_resource_version(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    await core.create_namespaced_pod("default", _pod("before"))
    listed = await core.list_namespaced_pod("default")
    rv = listed.metadata.resource_version
    await core.create_namespaced_pod("default", _pod("after-1"))
    await core.patch_namespaced_pod("after-1", "default", {"metadata": {"labels": {"x": "1"}}})
    await core.delete_namespaced_pod("after-1", "default")
    seen: list[tuple[str, str]] = []
    w = watch.Watch()
    async for event in w.stream(core.list_namespaced_pod, "default", resource_version=rv,
                                timeout_seconds=5):
        seen.append((event["type"], event["object"].metadata.name))
        if event["type"] == "DELETED":
            w.stop()
    assert seen == [("ADDED", "after-1"), ("MODIFIED", "after-1"), ("DELETED", "after-1")]


async def test_watch_bookmarks_carry_the_resource_version(api_client: client.ApiClient,
                                                          kube_api: Cluster) -> None:
    assert kube_api.server is not None
    kube_api.server.bookmark_interval = 0.2
    core = client.CoreV1Api(api_client)
    listed = await core.list_namespaced_pod("default")
    await core.create_namespaced_pod("default", _pod("marked"))
    w = watch.Watch()
    types: list[str] = []
    async for event in w.stream(core.list_namespaced_pod, "default",
                                resource_version=listed.metadata.resource_version,
                                allow_watch_bookmarks=True, timeout_seconds=10):
        types.append(event["type"])
        if event["type"] == "BOOKMARK":
            bookmark_rv = int(event["raw_object"]["metadata"]["resourceVersion"])
            w.stop()
    assert types[0] == "ADDED" and types[-1] == "BOOKMARK"
    assert bookmark_rv >= int(listed.metadata.resource_version) + 1


async def test_expired_resource_version_is_410(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "small", ClusterSettings(controllers=False, history=5))
    await cluster.start()
    try:
        configuration = client.Configuration()
        await config.load_kube_config(config_file=str(cluster.kubeconfig),
                                      client_configuration=configuration)
        async with client.ApiClient(configuration) as api:
            core = client.CoreV1Api(api)
            old = (await core.list_namespaced_config_map("default")).metadata.resource_version
            for i in range(20):
                await core.create_namespaced_config_map(
                    "default", {"metadata": {"name": f"cm{i}"}, "data": {"i": str(i)}})
            w = watch.Watch()
            with pytest.raises(ApiException) as info:
                async for _ in w.stream(core.list_namespaced_config_map, "default",
                                        resource_version=old, timeout_seconds=5):
                    pass
            assert info.value.status == 410
            # a paginated list whose snapshot fell out of the history is 410 Expired too
            page = await core.list_namespaced_config_map("default", limit=2)
            for i in range(20, 30):
                await core.create_namespaced_config_map(
                    "default", {"metadata": {"name": f"cm{i}"}})
            with pytest.raises(ApiException) as expired:
                await core.list_namespaced_config_map("default", limit=2,
                                                      _continue=page.metadata._continue)
            assert expired.value.status == 410
    finally:
        await cluster.stop()


async def test_conflict_on_stale_update(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    created = await core.create_namespaced_config_map(
        "default", {"metadata": {"name": "cfg"}, "data": {"a": "1"}})
    created.data = {"a": "2"}
    await core.replace_namespaced_config_map("cfg", "default", created)
    created.data = {"a": "3"}
    with pytest.raises(ApiException) as info:
        await core.replace_namespaced_config_map("cfg", "default", created)
    assert info.value.status == 409
    assert '"reason":"Conflict"' in info.value.body.replace(" ", "")


async def test_patch_kinds(api_client: client.ApiClient) -> None:
    apps = client.AppsV1Api(api_client)
    deployment = {
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                     {"name": "web", "image": "nginx:1.25",
                      "env": [{"name": "A", "value": "1"}]},
                     {"name": "side", "image": "busybox"}]}}},
    }
    await apps.create_namespaced_deployment("default", deployment)
    # kubernetes-asyncio sends a strategic merge patch for a dict body by default
    patched = await apps.patch_namespaced_deployment("web", "default", {
        "spec": {"template": {"spec": {"containers": [
            {"name": "web", "env": [{"name": "B", "value": "2"}]}]}}}})
    containers = patched.spec.template.spec.containers
    assert [c.name for c in containers] == ["web", "side"]
    # as on kube-apiserver, an item the patch adds to a merged list comes first (the
    # "patch-demo-ctr-2" example of the kubectl patch task page shows the same)
    assert [(e.name, e.value) for e in containers[0].env] == [("B", "2"), ("A", "1")]
    assert containers[0].image == "nginx:1.25"


async def test_custom_objects(api_client: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api_client)
    await ext.create_custom_resource_definition({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "subresources": {"status": {}},
                               "schema": {"openAPIV3Schema": {
                                   "type": "object",
                                   "properties": {
                                       "spec": {"type": "object", "properties": {
                                           "size": {"type": "integer", "default": 3}}},
                                       "status": {"type": "object",
                                                  "x-kubernetes-preserve-unknown-fields": True},
                                   }}}}]},
    })
    custom = client.CustomObjectsApi(api_client)
    created = await custom.create_namespaced_custom_object(
        "example.com", "v1", "default", "gadgets",
        {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g1"},
         "spec": {"unknown": "pruned"}, "status": {"ignored": True}})
    assert created["spec"] == {"size": 3}  # defaulted, unknown field pruned
    assert "status" not in created  # status only through the status subresource
    updated = await custom.patch_namespaced_custom_object_status(
        "example.com", "v1", "default", "gadgets", "g1", {"status": {"phase": "Ready"}},
        _content_type="application/merge-patch+json")
    assert updated["status"] == {"phase": "Ready"}
    listed = await custom.list_namespaced_custom_object("example.com", "v1", "default", "gadgets")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["g1"]
    w = watch.Watch()
    events = []
    async for event in w.stream(custom.list_namespaced_custom_object, "example.com", "v1",
                                "default", "gadgets", resource_version=updated["metadata"][
                                    "resourceVersion"], timeout_seconds=5):
        events.append(event)
        w.stop()
        break
    await custom.delete_namespaced_custom_object("example.com", "v1", "default", "gadgets", "g1")
    assert (await custom.list_namespaced_custom_object(
        "example.com", "v1", "default", "gadgets"))["items"] == []
    del events


async def test_owner_references_cascade(api_client: client.ApiClient,
                                        kube_api: Cluster) -> None:
    core = client.CoreV1Api(api_client)
    owner = await core.create_namespaced_config_map("default", {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid,
           "controller": True, "blockOwnerDeletion": True}
    await core.create_namespaced_config_map(
        "default", {"metadata": {"name": "dependent", "ownerReferences": [ref]}})
    orphan_owner = await core.create_namespaced_config_map("default",
                                                           {"metadata": {"name": "keeper"}})
    ref2 = {**ref, "name": "keeper", "uid": orphan_owner.metadata.uid}
    await core.create_namespaced_config_map(
        "default", {"metadata": {"name": "orphaned", "ownerReferences": [ref2]}})

    await core.delete_namespaced_config_map("owner", "default")  # Background by default
    await core.delete_namespaced_config_map("keeper", "default", propagation_policy="Orphan")

    async def names() -> set[str]:
        listed = await core.list_namespaced_config_map("default")
        return {i.metadata.name for i in listed.items}

    for _ in range(200):
        current = await names()
        if current == {"orphaned"}:
            break
        await asyncio.sleep(0.05)
    assert await names() == {"orphaned"}
    orphan = await core.read_namespaced_config_map("orphaned", "default")
    assert not orphan.metadata.owner_references


async def test_watch_timeout_ends_the_stream(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    listed = await core.list_namespaced_config_map("default")
    events = []
    async for event in watch.Watch().stream(core.list_namespaced_config_map, "default",
                                            resource_version=listed.metadata.resource_version,
                                            timeout_seconds=1):
        events.append(event)
    assert events == []  # the server ended the stream after 1 s, with nothing to report


async def test_discovery_in_both_forms(kube_api: Cluster) -> None:
    assert kube_api.ca is not None
    context = ssl.create_default_context(cadata=kube_api.ca.cert_pem.decode())
    headers = {"Authorization": "Bearer kubesim"}
    async with aiohttp.ClientSession(headers=headers) as session:
        aggregated = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        async with session.get(f"{kube_api.url}/apis", ssl=context,
                               headers={"Accept": f"{aggregated},application/json"}) as resp:
            assert resp.headers["Content-Type"] == aggregated
            body = await resp.json(content_type=None)
        groups = {item["metadata"]["name"]: item for item in body["items"]}
        apps = {r["resource"]: r for r in groups["apps"]["versions"][0]["resources"]}
        assert apps["deployments"]["scope"] == "Namespaced"
        assert {s["subresource"] for s in apps["deployments"]["subresources"]} == {
            "scale", "status"}
        async with session.get(f"{kube_api.url}/apis", ssl=context) as resp:
            legacy = await resp.json()
        assert legacy["kind"] == "APIGroupList"
        assert "apps" in {g["name"] for g in legacy["groups"]}
        async with session.get(f"{kube_api.url}/api/v1", ssl=context) as resp:
            core_list = await resp.json()
        names = {r["name"] for r in core_list["resources"]}
        assert {"pods", "pods/status", "pods/ephemeralcontainers", "pods/binding",
                "namespaces", "secrets", "nodes"} <= names
