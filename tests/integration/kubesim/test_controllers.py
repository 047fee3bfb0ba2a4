"""kubesim's controller manager end to end: ApiServer + ControllerManager + a real registry.

The registry is the test world's Debian docker-registry (distribution 2.8);
images are pushed with plain registry API calls (blobs, then the manifest). Every wait is on a
condition with a timeout, woken by the API server's change notifications.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import json
import tarfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from clusterregistry_sandbox.registries import Registry
from kubesim.apiserver import ApiServer
from kubesim.controllers import ControllerManager, KubeletSettings
from kubesim.resources import Resource
from tests.world.kube import ApiChanges, fast_kubelet

pytestmark = pytest.mark.integration

T = TypeVar("T")
Obj = dict[str, Any]
NS = "default"


# --- a real registry (the test world's docker-registry) -----------------------------------


@pytest.fixture
def plain_registry(registry: Registry) -> Registry:
    return registry


def _layer(content: bytes) -> tuple[bytes, str]:
    """A gzip tar layer with one file, and the diff id of its uncompressed tar."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(content))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def push_blob(
    session: aiohttp.ClientSession, registry: Registry, repo: str, data: bytes
) -> str:
    digest = digest_of(data)
    base = f"http://{registry.host}"
    async with session.post(f"{base}/v2/{repo}/blobs/uploads/",
                            headers=registry.auth_headers()) as resp:
        assert resp.status == 202, await resp.text()
        location = resp.headers["Location"]
    if location.startswith("/"):
        location = base + location
    separator = "&" if "?" in location else "?"
    async with session.put(
        f"{location}{separator}digest={digest}",
        data=data,
        headers={"Content-Type": "application/octet-stream", **registry.auth_headers()},
    ) as resp:
        assert resp.status == 201, await resp.text()
    return digest


async def push_image(
    registry: Registry, repo: str, tag: str, *, platform: str = "linux/amd64",
    content: bytes = b"hello",
) -> str:
    """Push a one-layer OCI image; returns the manifest digest."""
    os_name, arch = platform.split("/")
    layer, diff_id = _layer(content + platform.encode())
    config = json.dumps(
        {"architecture": arch, "os": os_name, "rootfs": {"type": "layers", "diff_ids": [diff_id]},
         "config": {}},
        sort_keys=True,
    ).encode()
    async with aiohttp.ClientSession() as session:
        layer_digest = await push_blob(session, registry, repo, layer)
        config_digest = await push_blob(session, registry, repo, config)
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest, "size": len(layer)}],
        }).encode()
        async with session.put(
            f"http://{registry.host}/v2/{repo}/manifests/{tag}",
            data=manifest,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json",
                     **registry.auth_headers()},
        ) as resp:
            assert resp.status == 201, await resp.text()
    return digest_of(manifest)


# --- the simulated cluster ----------------------------------------------------------------


class Cluster(ApiChanges):
    """An ApiServer + ControllerManager, with typed shortcuts and change-driven waits."""

    def __init__(self, api: ApiServer, manager: ControllerManager) -> None:
        super().__init__(api)
        self.manager = manager
        self.events: list[tuple[str, str, Obj]] = []

    def _on_change(self, event: str, resource: Resource, obj: Obj) -> None:
        self.events.append((event, resource.kind, obj))
        super()._on_change(event, resource, obj)

    def r(self, kind: str) -> Resource:
        api_version = {"Deployment": "apps/v1", "ReplicaSet": "apps/v1", "DaemonSet": "apps/v1",
                       "StatefulSet": "apps/v1", "Job": "batch/v1", "CronJob": "batch/v1"}.get(
            kind, "v1")
        return self.api.resource(api_version, kind)

    def items(self, kind: str, *, label_selector: str = "") -> list[Obj]:
        result: list[Obj] = self.api.list(
            self.r(kind), namespace=NS if kind != "Node" else None,
            label_selector=label_selector,
        )["items"]
        return result

    def get(self, kind: str, name: str) -> Obj | None:
        try:
            return self.api.get(self.r(kind), namespace=NS if kind != "Node" else None,
                                name=name)
        except Exception:
            return None

    async def create(self, obj: Obj) -> Obj:
        return await self.api.create(self.r(obj["kind"]), obj, namespace=NS
                                     if obj["kind"] != "Node" else None)


@contextlib.asynccontextmanager
async def started_cluster(settings: KubeletSettings, **kwargs: Any) -> AsyncIterator[Cluster]:
    api = ApiServer()
    await api.start()
    manager = ControllerManager(api, kubelet=settings, **kwargs)
    cluster = Cluster(api, manager)
    await manager.start()
    try:
        yield cluster
    finally:
        await manager.stop()
        await api.stop()


@pytest.fixture
async def cluster(plain_registry: Registry) -> AsyncIterator[Cluster]:
    # a shorter image pull back-off than a node's, for the reason tests.world.kube.fast_kubelet
    # gives
    settings = KubeletSettings(
        insecure_registries=[plain_registry.host], backoff_initial=0.2, backoff_max=0.8,
        job_run_seconds=0.0,
    )
    async with started_cluster(settings, job_pod_failure_backoff=0.1) as running:
        yield running


# --- object builders ----------------------------------------------------------------------


def pod_template(labels: dict[str, str], image: str, **spec: Any) -> Obj:
    return {"metadata": {"labels": labels},
            "spec": {"containers": [{"name": "app", "image": image}], **spec}}


def deployment(name: str, image: str, *, replicas: int = 2, **spec: Any) -> Obj:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": pod_template(labels, image), **spec}}


def owned_pods(cluster: Cluster, owner: Obj) -> list[Obj]:
    uid = owner["metadata"]["uid"]
    return [p for p in cluster.items("Pod")
            if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])]


def running(pod: Obj) -> bool:
    return pod.get("status", {}).get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod["status"].get("conditions") or [])


def waiting_reason(pod: Obj) -> str | None:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting")
        if waiting:
            return str(waiting.get("reason"))
    return None


# --- tests --------------------------------------------------------------------------------


async def test_nodes_are_registered_ready_with_labels(cluster: Cluster) -> None:
    nodes = {n["metadata"]["name"]: n for n in cluster.items("Node")}
    assert sorted(nodes) == ["node-1", "node-2", "node-3"]
    node = nodes["node-1"]
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "node-1"
    assert node["metadata"]["labels"]["kubernetes.io/arch"] == "amd64"
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "True"
    assert node["status"]["allocatable"]["pods"] == "110"


async def test_deployment_becomes_replicaset_and_running_pods(
    cluster: Cluster, plain_registry: Registry
) -> None:
    digest = await push_image(plain_registry, "team/web", "1.0")
    image = f"{plain_registry.host}/team/web:1.0"
    await cluster.create(deployment("web", image, replicas=3))

    rs = await cluster.wait_for(lambda: cluster.items("ReplicaSet"), what="a ReplicaSet")
    rs0 = rs[0]
    pod_hash = rs0["metadata"]["labels"]["pod-template-hash"]
    assert rs0["metadata"]["name"] == f"web-{pod_hash}"
    assert rs0["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    ref = rs0["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["controller"], ref["blockOwnerDeletion"]) == (
        "Deployment", "web", True, True)
    assert rs0["spec"]["selector"]["matchLabels"]["pod-template-hash"] == pod_hash

    def all_running() -> list[Obj] | None:
        pods = owned_pods(cluster, rs0)
        return pods if len(pods) == 3 and all(running(p) for p in pods) else None

    pods = await cluster.wait_for(all_running, what="3 running pods")
    for pod in pods:
        assert pod["metadata"]["name"].startswith(f"web-{pod_hash}-")
        assert len(pod["metadata"]["name"]) == len(f"web-{pod_hash}-") + 5
        assert pod["metadata"]["labels"] == {"app": "web", "pod-template-hash": pod_hash}
        assert pod["spec"]["nodeName"] in {"node-1", "node-2", "node-3"}
        status = pod["status"]["containerStatuses"][0]
        assert status["imageID"] == f"{plain_registry.host}/team/web@{digest}"
        assert status["image"] == image
        assert status["ready"] is True and status["started"] is True
        assert "running" in status["state"]
        assert pod["status"]["podIP"].startswith("10.244.")
        assert {c["type"] for c in pod["status"]["conditions"]} >= {
            "PodScheduled", "Initialized", "ContainersReady", "Ready"}
    # spread: least-loaded node first
    assert len({p["spec"]["nodeName"] for p in pods}) == 3

    def deployment_available() -> Obj | None:
        d = cluster.get("Deployment", "web")
        status = (d or {}).get("status") or {}
        done = (status.get("availableReplicas") == 3 and status.get("updatedReplicas") == 3
                and status.get("observedGeneration") == d["metadata"]["generation"])  # type: ignore[index]
        return d if done else None

    d = await cluster.wait_for(deployment_available, what="deployment available")
    conditions = {c["type"]: c for c in d["status"]["conditions"]}
    assert conditions["Available"]["status"] == "True"
    assert conditions["Progressing"]["reason"] == "NewReplicaSetAvailable"
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"


async def test_rollout_creates_new_replicaset_and_scales_old_down(
    cluster: Cluster, plain_registry: Registry
) -> None:
    await push_image(plain_registry, "team/api", "1", content=b"one")
    await push_image(plain_registry, "team/api", "2", content=b"two")
    await cluster.create(deployment("api", f"{plain_registry.host}/team/api:1", replicas=3))

    def ready(generation_updated: int) -> Obj | None:
        d = cluster.get("Deployment", "api")
        s = (d or {}).get("status") or {}
        return d if (s.get("updatedReplicas") == 3 and s.get("availableReplicas") == 3
                     and s.get("replicas") == 3
                     and s.get("observedGeneration") == generation_updated) else None

    await cluster.wait_for(lambda: ready(1), what="first revision available")
    first_rs = cluster.items("ReplicaSet")[0]

    d = cluster.get("Deployment", "api")
    assert d is not None
    d["spec"]["template"]["spec"]["containers"][0]["image"] = f"{plain_registry.host}/team/api:2"
    await cluster.api.update(cluster.r("Deployment"), d)

    await cluster.wait_for(lambda: ready(2), timeout=15, what="second revision rolled out")
    replica_sets = {rs["metadata"]["name"]: rs for rs in cluster.items("ReplicaSet")}
    assert len(replica_sets) == 2
    old = replica_sets[first_rs["metadata"]["name"]]
    new = next(rs for n, rs in replica_sets.items() if n != first_rs["metadata"]["name"])
    assert old["spec"]["replicas"] == 0
    assert new["spec"]["replicas"] == 3
    assert new["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert new["metadata"]["labels"]["pod-template-hash"] != old["metadata"]["labels"][
        "pod-template-hash"]
    await cluster.wait_for(lambda: not owned_pods(cluster, old), what="old pods gone")
    new_pods = owned_pods(cluster, new)
    assert len(new_pods) == 3 and all(running(p) for p in new_pods)
    # maxSurge 25% of 3 rounds up to 1: never more than 4 pods at once (terminating pods
    # do not count, as in kube)
    alive: set[str] = set()
    peak = 0
    for event, kind, obj in cluster.events:
        if kind != "Pod":
            continue
        name = obj["metadata"]["name"]
        if event == "DELETED" or obj["metadata"].get("deletionTimestamp"):
            alive.discard(name)
        else:
            alive.add(name)
        peak = max(peak, len(alive))
    assert peak <= 4
    current = cluster.get("Deployment", "api")
    assert current is not None
    assert current["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"


async def test_scaling_a_deployment(cluster: Cluster, plain_registry: Registry) -> None:
    await push_image(plain_registry, "team/scale", "v1")
    await cluster.create(deployment("scale", f"{plain_registry.host}/team/scale:v1", replicas=1))
    await cluster.wait_for(
        lambda: (cluster.get("Deployment", "scale") or {}).get("status", {}).get(
            "availableReplicas") == 1, what="1 available")
    await cluster.api.patch(cluster.r("Deployment"), namespace=NS, name="scale",
                            patch={"spec": {"replicas": 4}},
                            patch_type="application/merge-patch+json")
    await cluster.wait_for(
        lambda: (cluster.get("Deployment", "scale") or {}).get("status", {}).get(
            "availableReplicas") == 4, what="4 available")
    await cluster.api.patch(cluster.r("Deployment"), namespace=NS, name="scale",
                            patch={"spec": {"replicas": 0}},
                            patch_type="application/merge-patch+json")
    await cluster.wait_for(lambda: not cluster.items("Pod"), what="all pods gone")
    status = (cluster.get("Deployment", "scale") or {})["status"]
    assert "replicas" not in status  # omitempty, as on a real cluster


async def test_missing_image_backs_off_then_runs_once_pushed(
    cluster: Cluster, plain_registry: Registry
) -> None:
    image = f"{plain_registry.host}/team/late:1.0"
    await cluster.create(deployment("late", image, replicas=1))

    def pull_failing() -> Obj | None:
        pods = cluster.items("Pod")
        return pods[0] if pods and waiting_reason(pods[0]) in (
            "ErrImagePull", "ImagePullBackOff") else None

    pod = await cluster.wait_for(pull_failing, what="ErrImagePull")
    assert pod["status"]["phase"] == "Pending"
    message = pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    assert f'failed to resolve reference "{image}"' in message
    assert "not found" in message

    await cluster.wait_for(
        lambda: waiting_reason(cluster.items("Pod")[0]) == "ImagePullBackOff",
        what="ImagePullBackOff")
    backoff = cluster.items("Pod")[0]["status"]["containerStatuses"][0]["state"]["waiting"]
    assert backoff["message"].startswith(f'Back-off pulling image "{image}"')
    assert cluster.items("Pod")[0]["status"]["phase"] == "Pending"

    await push_image(plain_registry, "team/late", "1.0")
    pod = await cluster.wait_for(
        lambda: next((p for p in cluster.items("Pod") if running(p)), None),
        timeout=10, what="the pod running after the push")
    assert pod["status"]["containerStatuses"][0]["imageID"].startswith(
        f"{plain_registry.host}/team/late@sha256:")


async def test_job_runs_to_completion(cluster: Cluster, plain_registry: Registry) -> None:
    await push_image(plain_registry, "team/batch", "1")
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "crunch", "namespace": NS},
           "spec": {"completions": 3, "parallelism": 2,
                    "template": {"metadata": {"annotations": {"kubesim.io/run-seconds": "0.2"}},
                                 "spec": {"restartPolicy": "Never", "containers": [
                                     {"name": "work",
                                      "image": f"{plain_registry.host}/team/batch:1"}
                                 ]}}}}
    created = await cluster.create(job)

    def complete() -> Obj | None:
        j = cluster.get("Job", "crunch")
        conditions = {c["type"]: c["status"] for c in (j or {}).get("status", {}).get(
            "conditions") or []}
        return j if conditions.get("Complete") == "True" else None

    done = await cluster.wait_for(complete, timeout=15, what="job Complete")
    assert done["status"]["succeeded"] == 3
    assert "active" not in done["status"]
    assert done["status"]["completionTime"] and done["status"]["startTime"]
    assert done["status"].get("uncountedTerminatedPods") == {}
    pods = owned_pods(cluster, created)
    assert len(pods) == 3
    for pod in pods:
        assert pod["status"]["phase"] == "Succeeded"
        assert pod["metadata"]["labels"]["batch.kubernetes.io/job-name"] == "crunch"
        assert pod["metadata"]["labels"]["controller-uid"] == created["metadata"]["uid"]
        assert not pod["metadata"].get("finalizers")  # tracking finalizer released
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    # parallelism 2: never more than two pods of the job running at once
    active: set[str] = set()
    peak = 0
    for event, kind, obj in cluster.events:
        if kind != "Pod":
            continue
        phase = obj.get("status", {}).get("phase")
        if event == "DELETED" or phase in ("Succeeded", "Failed"):
            active.discard(obj["metadata"]["name"])
        else:
            active.add(obj["metadata"]["name"])
        peak = max(peak, len(active))
    assert peak <= 2


async def test_job_fails_after_backoff_limit(
    cluster: Cluster, plain_registry: Registry
) -> None:
    await push_image(plain_registry, "team/flaky", "1")
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "flaky", "namespace": NS},
           "spec": {"backoffLimit": 1,
                    "template": {"metadata": {"annotations": {"kubesim.io/exit-code": "3"}},
                                 "spec": {"restartPolicy": "Never", "containers": [
                                     {"name": "work",
                                      "image": f"{plain_registry.host}/team/flaky:1"}
                                 ]}}}}
    await cluster.create(job)

    def failed() -> Obj | None:
        j = cluster.get("Job", "flaky")
        conditions = {c["type"]: c for c in (j or {}).get("status", {}).get("conditions") or []}
        return j if conditions.get("Failed", {}).get("status") == "True" else None

    j = await cluster.wait_for(failed, timeout=15, what="job Failed")
    assert j["status"]["failed"] == 2  # the first try plus backoffLimit retries
    reasons = {c["type"]: c.get("reason") for c in j["status"]["conditions"]}
    assert reasons["Failed"] == reasons["FailureTarget"] == "BackoffLimitExceeded"
    pods = cluster.items("Pod")
    assert len(pods) == 2 and all(p["status"]["phase"] == "Failed" for p in pods)
    assert pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3


async def test_daemonset_one_pod_per_node_and_follows_node_deletion(
    cluster: Cluster, plain_registry: Registry
) -> None:
    await push_image(plain_registry, "team/agent", "1")
    labels = {"app": "agent"}
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet",
          "metadata": {"name": "agent", "namespace": NS},
          "spec": {"selector": {"matchLabels": labels},
                   "template": pod_template(labels, f"{plain_registry.host}/team/agent:1")}}
    await cluster.create(ds)

    def ds_status(ready: int, desired: int) -> Obj | None:
        d = cluster.get("DaemonSet", "agent")
        s = (d or {}).get("status") or {}
        return d if (s.get("numberReady") == ready and s.get("desiredNumberScheduled") == desired
                     and s.get("currentNumberScheduled") == desired) else None

    await cluster.wait_for(lambda: ds_status(3, 3), what="3 ready daemon pods")
    pods = cluster.items("Pod")
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["node-1", "node-2", "node-3"]
    pod = pods[0]
    terms = pod["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchFields"][0]["values"] == [pod["spec"]["nodeName"]]
    assert any(t["key"] == "node.kubernetes.io/unschedulable" for t in pod["spec"]["tolerations"])

    await cluster.api.delete(cluster.r("Node"), namespace=None, name="node-2")
    await cluster.wait_for(lambda: ds_status(2, 2), what="daemonset down to 2 nodes")
    await cluster.wait_for(
        lambda: sorted(p["spec"]["nodeName"] for p in cluster.items("Pod")) == ["node-1",
                                                                                 "node-3"],
        what="the pod of node-2 gone")

    # a node that joins gets its daemon pod
    node = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-4", "labels": {"kubernetes.io/hostname": "node-4"}}}
    created = await cluster.create(node)
    created["status"] = {"conditions": [{"type": "Ready", "status": "True"}],
                         "addresses": [{"type": "InternalIP", "address": "172.18.0.9"}]}
    await cluster.api.update(cluster.r("Node"), created, subresource="status")
    await cluster.wait_for(lambda: ds_status(3, 3), what="a daemon pod on node-4")


async def test_statefulset_creates_in_order_and_scales_down_in_reverse(
    cluster: Cluster, plain_registry: Registry
) -> None:
    await push_image(plain_registry, "team/db", "1")
    labels = {"app": "db"}
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": "db", "namespace": NS},
           "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": labels},
                    "template": pod_template(labels, f"{plain_registry.host}/team/db:1")}}
    await cluster.create(sts)

    def ready_count(n: int) -> Obj | None:
        s = cluster.get("StatefulSet", "db")
        st = (s or {}).get("status") or {}
        return s if st.get("readyReplicas") == n and st.get("replicas") == n else None

    await cluster.wait_for(lambda: ready_count(3), timeout=15, what="3 ready members")
    pods = {p["metadata"]["name"]: p for p in cluster.items("Pod")}
    assert sorted(pods) == ["db-0", "db-1", "db-2"]
    assert pods["db-1"]["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] == "db-1"
    assert pods["db-1"]["metadata"]["labels"]["controller-revision-hash"].startswith("db-")
    assert pods["db-1"]["spec"]["hostname"] == "db-1"
    assert pods["db-1"]["spec"]["subdomain"] == "db"

    # OrderedReady: each member was created only once its predecessor was Running and Ready
    ready_now: set[str] = set()
    for event, kind, obj in cluster.events:
        if kind != "Pod":
            continue
        name = obj["metadata"]["name"]
        if event == "ADDED":
            ordinal = int(name.rsplit("-", 1)[1])
            assert all(f"db-{i}" in ready_now for i in range(ordinal)), name
        if running(obj):
            ready_now.add(name)

    # a deleted member comes back under the same name
    old_uid = pods["db-1"]["metadata"]["uid"]
    await cluster.api.delete(cluster.r("Pod"), namespace=NS, name="db-1")
    await cluster.wait_for(
        lambda: (p := cluster.get("Pod", "db-1")) is not None
        and p["metadata"]["uid"] != old_uid and running(p),
        what="db-1 recreated")

    mark = len(cluster.events)
    await cluster.api.patch(cluster.r("StatefulSet"), namespace=NS, name="db",
                            patch={"spec": {"replicas": 1}},
                            patch_type="application/merge-patch+json")
    await cluster.wait_for(lambda: ready_count(1), timeout=15, what="scaled down to 1")
    deletions = [obj["metadata"]["name"] for event, kind, obj in cluster.events[mark:]
                 if kind == "Pod" and event == "DELETED"]
    assert deletions == ["db-2", "db-1"]


async def test_pod_without_fitting_node_is_unschedulable(cluster: Cluster) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "picky", "namespace": NS},
           "spec": {"nodeSelector": {"disk": "ssd"},
                    "containers": [{"name": "c", "image": "127.0.0.1:1/never:1"}]}}
    await cluster.create(pod)

    def unschedulable() -> Obj | None:
        p = cluster.get("Pod", "picky")
        for c in (p or {}).get("status", {}).get("conditions") or []:
            if c["type"] == "PodScheduled" and c["status"] == "False":
                condition: Obj = c
                return condition
        return None

    condition = await cluster.wait_for(unschedulable, what="PodScheduled=False")
    assert condition["reason"] == "Unschedulable"
    assert condition["message"].startswith(
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.")
    picky = cluster.get("Pod", "picky")
    assert picky is not None and picky["status"]["phase"] == "Pending"
    assert not picky["spec"].get("nodeName")


async def test_cronjob_runs_a_missed_schedule(
    cluster: Cluster, plain_registry: Registry
) -> None:
    await push_image(plain_registry, "team/cron", "1")
    cronjob = {"apiVersion": "batch/v1", "kind": "CronJob",
               "metadata": {"name": "tick", "namespace": NS},
               "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                   "restartPolicy": "OnFailure",
                   "containers": [{"name": "t", "image": f"{plain_registry.host}/team/cron:1"}],
               }}}}}}
    created = await cluster.create(cronjob)
    # Pretend the last run was three minutes ago: the most recent minute is then due now.
    created["status"] = {"lastScheduleTime": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 180))}
    await cluster.api.update(cluster.r("CronJob"), created, subresource="status")
    jobs = await cluster.wait_for(lambda: cluster.items("Job"), what="a job from the cronjob")
    job = jobs[0]
    minutes = int(job["metadata"]["name"].rsplit("-", 1)[1])
    assert abs(minutes * 60 - time.time()) < 120
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    assert "batch.kubernetes.io/cronjob-scheduled-timestamp" in job["metadata"]["annotations"]
    await cluster.wait_for(
        lambda: any(c["type"] == "Complete" for c in (cluster.get("Job", job["metadata"]["name"])
                                                       or {}).get("status", {}).get(
            "conditions") or []), what="the job completes")
    cj = await cluster.wait_for(
        lambda: (c := cluster.get("CronJob", "tick")) is not None
        and c["status"].get("lastSuccessfulTime") and c, what="lastSuccessfulTime")
    assert cj["status"]["lastScheduleTime"]


async def test_image_pull_secret_with_basic_auth(tmp_path: Path) -> None:
    password = "s3cret-pass"
    registry = Registry(tmp_path / "auth-registry", name="auth-registry", username="puller",
                        password=password)
    await registry.start()
    try:
        digest = await push_image(registry, "private/app", "1")
        image = f"{registry.host}/private/app:1"
        settings = fast_kubelet(insecure_registries=[registry.host])
        async with started_cluster(settings) as cluster:
            config = {"auths": {registry.host: {"auth": base64.b64encode(
                f"puller:{password}".encode()).decode()}}}
            await cluster.create({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"name": "pull", "namespace": NS},
                "data": {".dockerconfigjson": base64.b64encode(
                    json.dumps(config).encode()).decode()}})
            await cluster.create(deployment("anon", image, replicas=1))
            authed = deployment("authed", image, replicas=1)
            authed["spec"]["template"]["spec"]["imagePullSecrets"] = [{"name": "pull"}]
            await cluster.create(authed)

            def pod_of(app: str) -> Obj | None:
                return next((p for p in cluster.items("Pod")
                             if p["metadata"]["labels"].get("app") == app), None)

            ok = await cluster.wait_for(
                lambda: p if (p := pod_of("authed")) is not None and running(p) else None,
                what="the pod with the pull secret running")
            assert ok["status"]["containerStatuses"][0]["imageID"] == (
                f"{registry.host}/private/app@{digest}")
            denied = await cluster.wait_for(
                lambda: p if (p := pod_of("anon")) is not None and waiting_reason(p) else None,
                what="the pod without credentials failing")
            message = denied["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
            assert "401 Unauthorized" in message or "authorization" in message
            assert denied["status"]["phase"] == "Pending"
    finally:
        await registry.stop()
