"""Create, update and delete of each kind produce exactly the expected messages."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import msgspec
import pytest

from clusterregistry import schemas, subjects
from clusterregistry.kinds import ORIGINAL_IMAGES_ANNOTATION
from tests.integration.relay.conftest import World, events

pytestmark = pytest.mark.integration


def _pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "nf", "annotations": {
            ORIGINAL_IMAGES_ANNOTATION: json.dumps({"upf": "acr.io/nf/upf:1.2"})}},
        "spec": {"imagePullSecrets": [{"name": "pull"}],
                 "initContainers": [{"name": "init", "image": "acr.io/nf/init:1"}],
                 "containers": [{"name": "upf", "image": "edge:5000/acr.io/nf/upf:1.2",
                                 "env": [{"name": "SECRET", "value": "hunter2"}]}]},
    }


async def test_pod_lifecycle_messages(world: World) -> None:
    api = world.cluster.api
    pods = api.lookup("", "v1", "pods")
    await world.start_relay()
    await world.relisted("pod")
    created = await api.create(pods, _pod("upf-1"), namespace="nf")
    await api.patch(pods, namespace="nf", name="upf-1", patch={"status": {
        "phase": "Running",
        "containerStatuses": [{"name": "upf", "imageID": "edge:5000/acr.io/nf/upf@sha256:"
                               + "a" * 64, "ready": True, "restartCount": 0,
                               "image": "x", "state": {}}]}},
        patch_type="application/merge-patch+json", subresource="status")
    await api.delete(pods, namespace="nf", name="upf-1")
    uid = created["metadata"]["uid"]
    records = await world.wait_records(
        lambda rs: any(e.type == "DELETED" for e in events(rs, kind="pod")))
    pod_records = [r for r in records if r.subject == subjects.kube("pod", "nf", uid)]
    assert [r.data["type"] for r in pod_records] == ["ADDED", "MODIFIED", "DELETED"]
    added, modified, deleted = (msgspec_event(r.data) for r in pod_records)
    assert added.name == "upf-1" and added.namespace == "nf" and added.uid == uid
    assert added.pod is not None
    assert [(c.name, c.image, c.original_image) for c in added.pod.containers] == [
        ("upf", "edge:5000/acr.io/nf/upf:1.2", "acr.io/nf/upf:1.2")]
    assert [c.image for c in added.pod.init_containers] == ["acr.io/nf/init:1"]
    assert added.pod.image_pull_secrets == ["pull"]
    assert modified.pod is not None and modified.pod.phase == "Running"
    assert modified.pod.containers[0].image_id.endswith("a" * 64)
    assert deleted.resource_version != modified.resource_version
    for record in pod_records:
        event = msgspec_event(record.data)
        assert record.msg_id == subjects.msg_id(uid, event.resource_version, event.type)
        assert len(record.trace_id) == 32
    # no env values, no secrets: only the declared state travels
    assert "hunter2" not in json.dumps([r.data for r in records])


def msgspec_event(data: dict[str, Any]) -> schemas.KubeEvent:
    return msgspec.convert(data, schemas.KubeEvent)


async def test_owner_kinds_carry_their_template(world: World) -> None:
    api = world.cluster.api
    template = {"metadata": {"labels": {"app": "x"}}, "spec": {
        "imagePullSecrets": [{"name": "pull"}],
        "containers": [{"name": "c", "image": "acr.io/nf/x:1"}]}}
    selector = {"matchLabels": {"app": "x"}}
    await world.start_relay()
    await world.relisted()
    owners = {
        "replicaset": ("apps", "v1", "replicasets", {"replicas": 2, "selector": selector,
                                                      "template": template}),
        "daemonset": ("apps", "v1", "daemonsets", {"selector": selector,
                                                    "template": template}),
        "statefulset": ("apps", "v1", "statefulsets", {"selector": selector,
                                                        "serviceName": "x",
                                                        "template": template}),
        "job": ("batch", "v1", "jobs", {"template": {**template, "spec": {
            **template["spec"], "restartPolicy": "Never"}}}),
    }
    uids = {}
    for kind, (group, version, plural, spec) in owners.items():
        resource = api.lookup(group, version, plural)
        obj = await api.create(resource, {"metadata": {"name": f"{kind}-a"}, "spec": spec},
                               namespace="nf")
        uids[kind] = obj["metadata"]["uid"]
        await api.delete(resource, namespace="nf", name=f"{kind}-a")

    def complete(rs: list[Any]) -> bool:
        return all(any(e.type == "DELETED" for e in events(rs, kind=k)) for k in owners)

    records = await world.wait_records(complete)
    for kind, uid in uids.items():
        mine = [e for e in events(records, kind=kind) if e.uid == uid]
        assert [e.type for e in mine] == ["ADDED", "DELETED"], kind
        assert mine[0].template is not None
        assert [c.image for c in mine[0].template.containers] == ["acr.io/nf/x:1"]
        assert mine[0].template.image_pull_secrets == ["pull"]
        assert mine[0].pod is None
        assert all(r.subject == subjects.kube(kind, "nf", uid)
                   for r in records if r.data.get("uid") == uid)


async def test_owner_update_carries_the_new_template(world: World) -> None:
    api = world.cluster.api
    rs = api.lookup("apps", "v1", "replicasets")
    await world.start_relay()
    await world.relisted("replicaset")
    spec = {"replicas": 1, "selector": {"matchLabels": {"app": "y"}},
            "template": {"metadata": {"labels": {"app": "y"}},
                         "spec": {"containers": [{"name": "c", "image": "acr.io/y:1"}]}}}
    await api.create(rs, {"metadata": {"name": "y"}, "spec": spec}, namespace="nf")
    await api.patch(rs, namespace="nf", name="y", patch={"spec": {"replicas": 3}},
                    patch_type="application/merge-patch+json")
    records = await world.wait_records(
        lambda r: any(e.type == "MODIFIED" for e in events(r, kind="replicaset")))
    added, modified = events(records, kind="replicaset")
    assert added.template is not None and modified.template is not None
    assert (added.template.replicas, modified.template.replicas) == (1, 3)


async def test_artifacts_are_relayed_once_their_crd_appears(world: World) -> None:
    api = world.cluster.api
    await world.start_relay()
    await world.relisted()
    crds = api.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    await api.create(crds, {"metadata": {"name": "artifacts.clusterregistry.io"}, "spec": {
        "group": "clusterregistry.io", "scope": "Cluster",
        "names": {"plural": "artifacts", "singular": "artifact", "kind": "Artifact"},
        "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                      "subresources": {"status": {}},
                      "schema": {"openAPIV3Schema": {
                          "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}})
    await world.relisted("artifact")
    artifacts = api.lookup("clusterregistry.io", "v1alpha1", "artifacts")
    created = await api.create(artifacts, {
        "apiVersion": "clusterregistry.io/v1alpha1", "kind": "Artifact",
        "metadata": {"name": "acr-io-nf-upf-1-2"},
        "spec": {"sourceArtifact": "acr.io/nf/upf:1.2"}})
    await api.patch(artifacts, namespace=None, name="acr-io-nf-upf-1-2",
                    patch={"status": {"phase": "Available"}},
                    patch_type="application/merge-patch+json", subresource="status")
    records = await world.wait_records(
        lambda r: any(e.type == "MODIFIED" for e in events(r, kind="artifact")))
    added, modified = events(records, kind="artifact")
    uid = created["metadata"]["uid"]
    assert added.artifact is not None and modified.artifact is not None
    assert added.artifact.spec == {"sourceArtifact": "acr.io/nf/upf:1.2"}
    assert modified.artifact.status == {"phase": "Available"}
    assert any(r.subject == subjects.kube("artifact", None, uid) for r in records)


async def test_trace_follows_what_the_relay_published(world: World) -> None:
    api = world.cluster.api
    await world.start_relay()
    await world.relisted("pod")
    await api.create(api.lookup("", "v1", "pods"), _pod("traced"), namespace="nf")
    await world.wait_records(lambda r: any(e.name == "traced" for e in events(r, kind="pod")))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clusterregistry.cli", "trace", "--server", world.nats.url,
        "--from-start", "--kind", "pod", "--name", "traced", "--timeout", "3",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    added = [line for line in lines if " ADDED " in line]
    assert len(added) == 1, out.decode()
    assert "nf/traced" in added[0]
    assert "(from acr.io/nf/upf:1.2)" in added[0]
