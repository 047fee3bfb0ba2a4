"""The issue's must-shows on the real path: kubesim's controllers -> relay -> JetStream ->
tracker -> KV -> reconciler -> Artifacts (kubectl) and CLUSTERREGISTRY_MIRROR -> the fake
mirror worker -> results -> Available."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import nats.js.errors
import pytest

from clusterregistry import references, schemas, subjects
from clusterregistry.kube.artifacts import Artifacts
from clusterregistry.kube.clients import api_client
from clusterregistry.reconciler import statuses
from clusterregistry.schemas import MirrorRequest, MirrorResult
from tests.integration.tracker.worlds import Services, digest_of, succeed
from tests.world.kube import Kubectl

pytestmark = pytest.mark.integration

A, B, C = ("acr.example.io/nf/upf:1.2", "acr.example.io/nf/smf:3.1",
           "acr.example.io/nf/sidecar:0.9")


def _template(app: str, *images: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": app}},
            "spec": {"containers": [{"name": f"c{i}", "image": image}
                                    for i, image in enumerate(images)]}}


def _workload(kind: str, name: str, *images: str, replicas: int | None = 1,
              **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"selector": {"matchLabels": {"app": name}},
                            "template": _template(name, *images), **spec}
    if replicas is not None:
        body["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": body}


def _resource(world: Services, group: str, version: str, plural: str) -> Any:
    return world.cluster.api.lookup(group, version, plural)


def _pods(world: Services, ns: str = "nf") -> list[dict[str, Any]]:
    pods = _resource(world, "", "v1", "pods")
    return [p for p in world.cluster.api.list(pods)["items"]
            if p["metadata"]["namespace"] == ns and not p["metadata"].get("deletionTimestamp")]


def _available(world: Services, expected: dict[str, int]) -> bool:
    artifacts = world.artifacts()
    return world.refs_by_source() == expected and all(
        (a.get("status") or {}).get("phase") == "Available" for a in artifacts.values())


async def _records_match(world: Services, expected: dict[str, int]) -> bool:
    records = await world.artifact_records()
    return {r.source: r.references for r in records.values()} == expected


async def test_a_deployment_s_three_images_become_artifacts_before_its_pods(
        world: Services, kubectl: Kubectl) -> None:
    api = world.cluster.api
    deployments = _resource(world, "apps", "v1", "deployments")
    await world.start_all(early_loading=True)
    await api.create(deployments, _workload("Deployment", "upf", A, B, C, replicas=0),
                     namespace="nf")
    # early loading: the ReplicaSet's template is enough, no pod exists
    await world.until(lambda: _available(world, {A: 1, B: 1, C: 1}),
                      what="three Available Artifacts with REFS 1")
    assert _pods(world) == []
    await world.until(lambda: _records_match(world, {A: 1, B: 1, C: 1}),
                      what="the artifacts bucket")
    out = (await kubectl.run("get", "artifacts")).stdout.splitlines()
    assert out[0].split() == ["NAME", "SOURCE", "PHASE", "SIZE", "REFS", "AGE"]
    rows = {line.split()[1]: line.split() for line in out[1:]}
    assert set(rows) == {A, B, C}
    for source, row in rows.items():
        assert row[0] == references.artifact_name(references.parse(source))
        assert row[2:5] == ["Available", statuses.human_size(1000 + len(source)), "1"]
    first = await world.refs()
    old_rs = next(iter(first.values()))

    # scaling up and to zero, and every pod killed: references unchanged
    await api.patch(deployments, namespace="nf", name="upf", patch={"spec": {"replicas": 3}},
                    patch_type="application/merge-patch+json")
    await world.until(lambda: len(_pods(world)) == 3, what="three pods")
    pods = _resource(world, "", "v1", "pods")
    for pod in _pods(world):
        await api.delete(pods, namespace="nf", name=pod["metadata"]["name"])
    await world.until(lambda: len(_pods(world)) == 3, what="three new pods")
    await api.patch(deployments, namespace="nf", name="upf", patch={"spec": {"replicas": 0}},
                    patch_type="application/merge-patch+json")
    await world.until(lambda: _pods(world) == [], what="no pods")
    assert await world.refs() == first
    assert world.refs_by_source() == {A: 1, B: 1, C: 1}

    # a rolling update keeps the old ReplicaSet, so what it references stays referenced
    c2 = "acr.example.io/nf/sidecar:1.0"
    await api.patch(deployments, namespace="nf", name="upf",
                    patch={"spec": {"replicas": 1, "template": _template("upf", A, B, c2)}},
                    patch_type="application/merge-patch+json")
    await world.until(lambda: _available(world, {A: 2, B: 2, C: 1, c2: 1}),
                      what="the new ReplicaSet's references added, the old one's kept")
    assert (await world.refs())[old_rs.uid] == old_rs

    # deleting the Deployment cascades to its ReplicaSets: references drop to zero
    await api.delete(deployments, namespace="nf", name="upf")
    await world.until(lambda: world.refs_by_source() == {A: 0, B: 0, C: 0, c2: 0},
                      what="references at zero")
    assert await world.refs() == {}
    for artifact in world.artifacts().values():
        assert artifact["status"]["unreferencedSince"]
        assert artifact["status"]["phase"] == "Available"  # GC decides, not the reconciler
    await world.until(lambda: _records_match(world, {A: 0, B: 0, C: 0, c2: 0}),
                      what="the artifacts bucket at zero references")
    records = await world.artifact_records()
    assert all(r.unreferenced_since > 0 for r in records.values())


async def test_without_early_loading_images_count_from_the_first_pod(world: Services) -> None:
    api = world.cluster.api
    deployments = _resource(world, "apps", "v1", "deployments")
    tracker, _, _ = await world.start_all(early_loading=False)
    await api.create(deployments, _workload("Deployment", "late", A, replicas=0), namespace="nf")
    await world.until(lambda: tracker.metric("clusterregistry_tracker_events_total",
                                             kind="replicaset", outcome="no-pod-yet") >= 1,
                      what="the tracker seeing the ReplicaSet")
    await asyncio.sleep(0)
    assert world.artifacts() == {}
    assert await world.refs() == {}
    await api.patch(deployments, namespace="nf", name="late", patch={"spec": {"replicas": 1}},
                    patch_type="application/merge-patch+json")
    await world.until(lambda: _available(world, {A: 1}), what="the Artifact once a pod exists")


async def test_every_owner_kind_and_an_image_shared_across_namespaces(world: Services) -> None:
    api = world.cluster.api
    await world.start_all(early_loading=True)
    shared, job_image, ds_image, sts_image, bare_image = (
        "acr.example.io/nf/shared:1", "acr.example.io/nf/job:1", "acr.example.io/nf/ds:1",
        "acr.example.io/nf/sts:1", "acr.example.io/nf/bare:1")
    deployments = _resource(world, "apps", "v1", "deployments")
    jobs = _resource(world, "batch", "v1", "jobs")
    daemonsets = _resource(world, "apps", "v1", "daemonsets")
    statefulsets = _resource(world, "apps", "v1", "statefulsets")
    pods = _resource(world, "", "v1", "pods")
    for ns in ("nf", "other"):
        await api.create(deployments, _workload("Deployment", "web", shared), namespace=ns)
    job_template = _template("job", job_image)
    job_template["spec"]["restartPolicy"] = "Never"
    await api.create(jobs, {"apiVersion": "batch/v1", "kind": "Job",
                            "metadata": {"name": "migrate"},
                            "spec": {"template": job_template}}, namespace="nf")
    await api.create(daemonsets, _workload("DaemonSet", "agent", ds_image, replicas=None),
                     namespace="nf")
    await api.create(statefulsets, _workload("StatefulSet", "db", sts_image, replicas=2,
                                             serviceName="db"), namespace="nf")
    await api.create(pods, {"metadata": {"name": "debug"}, "spec": {"containers": [
        {"name": "c", "image": bare_image}]}}, namespace="nf")
    everything = {shared: 2, job_image: 1, ds_image: 1, sts_image: 1, bare_image: 1}
    await world.until(lambda: _available(world, everything), what="every owner's Artifact")
    kinds = sorted(r.kind for r in (await world.refs()).values())
    assert kinds == ["DaemonSet", "Job", "Pod", "ReplicaSet", "ReplicaSet", "StatefulSet"]

    # the shared image stays referenced until its last owner goes
    await api.delete(deployments, namespace="nf", name="web")
    await world.until(lambda: world.refs_by_source() == {**everything, shared: 1},
                      what="one owner of the shared image left")
    await api.delete(deployments, namespace="other", name="web")
    await api.delete(jobs, namespace="nf", name="migrate")
    await api.delete(daemonsets, namespace="nf", name="agent")
    await api.delete(statefulsets, namespace="nf", name="db")
    await api.delete(pods, namespace="nf", name="debug")
    await world.until(lambda: world.refs_by_source() == dict.fromkeys(everything, 0),
                      what="every reference gone")


async def test_failures_retry_with_backoff_timeouts_ask_again_tags_refresh(
        world: Services) -> None:
    api = world.cluster.api
    pinned_fail = "acr.example.io/nf/flaky@sha256:" + "1" * 64
    pinned_silent = "acr.example.io/nf/silent@sha256:" + "2" * 64
    moving = "acr.example.io/nf/moving:latest"
    seen: dict[str, list[tuple[int, int]]] = {}

    def respond(request: MirrorRequest) -> MirrorResult | None:
        seen.setdefault(request.source, []).append((request.generation, request.attempt))
        if request.source == pinned_fail and len(seen[request.source]) <= 2:
            return MirrorResult(artifact=request.artifact, generation=request.generation,
                                source=request.source, destination=request.destination,
                                ok=False, error="GET /v2/nf/flaky/manifests: 503",
                                reason="unavailable", retryable=True)
        if request.source == pinned_silent and len(seen[request.source]) == 1:
            return None  # a mirror that died holding the request
        result = succeed(request)
        if request.source == moving:  # the tag moves at every copy
            result = msgspec.structs.replace(
                result, digest=digest_of(request.source, request.generation))
        return result

    await world.start_relay()
    await world.relisted()
    await world.start_tracker(early_loading=True)
    reconciler = await world.start_reconciler(
        retry_initial_seconds=0.5, retry_max_seconds=2.0, mirror_timeout_seconds=2.0,
        refresh_interval_seconds=1.5)
    await world.start_mirror(respond)
    await api.create(_resource(world, "apps", "v1", "replicasets"), {
        "metadata": {"name": "mixed"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "mixed"}},
                 "template": _template("mixed", pinned_fail, pinned_silent, moving)}},
        namespace="nf")
    await world.until(lambda: _available(world, {pinned_fail: 1, pinned_silent: 1, moving: 1}),
                      what="every Artifact Available in the end")
    # the flaky one failed twice, each time retried with a new generation
    first = seen[pinned_fail][0][0]
    assert seen[pinned_fail][:3] == [(first, 0), (first + 1, 1), (first + 2, 2)]
    # the silent one was asked again after the timeout
    first = seen[pinned_silent][0][0]
    assert seen[pinned_silent][:2] == [(first, 0), (first + 1, 1)]
    assert reconciler.metric("clusterregistry_reconciler_mirror_requests_total",
                             reason="timeout") >= 1
    assert reconciler.metric("clusterregistry_reconciler_retries_total") >= 3
    final = world.artifacts()[pinned_fail]["status"]
    assert (final["attempts"], final["message"]) == (0, "")
    # the Failed phase and the registry's message were stored (the relay relayed them)
    phases = await _artifact_history(world, pinned_fail)
    assert ("Failed", "GET /v2/nf/flaky/manifests: 503 (unavailable)") in [
        (p, m.split(";")[0]) for p, m in phases]
    assert [p for p, _ in phases if p].index("Failed") > 0
    # a mutable tag is copied again, and the digest follows the tag
    await world.until(lambda: len(seen.get(moving, [])) >= 2, what="a refresh of the tag")
    await world.until(
        lambda: "the tag moved" in world.artifacts()[moving]["status"].get("message", ""),
        what="the moved tag recorded")
    assert "nextMirrorTime" not in world.artifacts()[pinned_fail]["status"]  # digests stay


async def _artifact_history(world: Services, source: str) -> list[tuple[str, str]]:
    """(phase, message) of every relayed state of one Artifact, in stream order."""
    js = await world.observer()
    info = await js.stream_info(subjects.KUBE_STREAM)
    out = []
    name = references.artifact_name(references.parse(source))
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(subjects.KUBE_STREAM, seq)
        except nats.js.errors.NotFoundError:  # removed by the stream's limits
            continue
        subject = msg.subject or ""
        if not subject.startswith("clusterregistry.kube.artifact.") or subject.endswith(
                "._relist"):
            continue
        event = schemas.kube_event_decoder.decode(msg.data or b"")
        if event.name == name and event.artifact is not None:
            status = event.artifact.status
            out.append((str(status.get("phase", "")), str(status.get("message", ""))))
    return out


async def test_gc_is_not_fought_and_a_new_reference_brings_the_artifact_back(
        world: Services) -> None:
    api = world.cluster.api
    pods = _resource(world, "", "v1", "pods")
    _, reconciler, mirror = await world.start_all(early_loading=True)
    await api.create(pods, {"metadata": {"name": "once"}, "spec": {"containers": [
        {"name": "c", "image": A}]}}, namespace="nf")
    await world.until(lambda: _available(world, {A: 1}), what="the Artifact")
    await api.delete(pods, namespace="nf", name="once")
    await world.until(lambda: world.refs_by_source() == {A: 0}, what="no reference")
    name = references.artifact_name(references.parse(A))
    client = await api_client(str(world.cluster.kubeconfig))
    try:
        artifacts = Artifacts(client)
        # what GC does: mark Deleting (conditionally), delete the record and the Artifact
        current = await artifacts.get(name)
        assert current is not None
        await artifacts.patch_status(name, {"phase": "Deleting"},
                                     resource_version=current["metadata"]["resourceVersion"])
        kv = await (await world.observer()).key_value(subjects.ARTIFACTS_BUCKET)
        await kv.delete(name)
        deleting = await artifacts.get(name)
        assert deleting is not None
        requests_before = len(mirror.requests)
        assert await artifacts.delete(
            name, resource_version=deleting["metadata"]["resourceVersion"])
        # the reconciler hears of it and leaves it deleted: nobody references it
        await world.until(lambda: reconciler.service.idle() and name not in
                          reconciler.service.cache, what="the reconciler seeing the deletion")
        await asyncio.sleep(0)
        assert world.artifacts() == {}
        assert await world.artifact_records() == {}
        assert len(mirror.requests) == requests_before

        # a new reference: created anew and copied again
        await api.create(pods, {"metadata": {"name": "again"}, "spec": {"containers": [
            {"name": "c", "image": A}]}}, namespace="nf")
        await world.until(lambda: _available(world, {A: 1}), what="the Artifact back")
        assert len(mirror.requests) == requests_before + 1
        await world.until(lambda: _records_match(world, {A: 1}), what="its record back")

        # referenced while GC marks it Deleting: taken back, copied again
        current = await artifacts.get(name)
        assert current is not None
        generation = current["status"]["mirrorGeneration"]
        await artifacts.patch_status(name, {"phase": "Deleting"},
                                     resource_version=current["metadata"]["resourceVersion"])
        await world.until(
            lambda: (world.artifacts()[A]["status"].get("mirrorGeneration") == generation + 1
                     and _available(world, {A: 1})),
            what="the Deleting Artifact referenced again, copied again")
    finally:
        await client.close()


async def test_two_reconcilers_write_each_step_once(world: Services) -> None:
    api = world.cluster.api
    await world.start_relay()
    await world.relisted()
    await world.start_tracker(early_loading=True)
    first = await world.start_reconciler("a")
    second = await world.start_reconciler("b")
    mirror = await world.start_mirror()
    images = [f"acr.example.io/nf/app{i}:1" for i in range(6)]
    await api.create(_resource(world, "apps", "v1", "replicasets"), {
        "metadata": {"name": "many"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "many"}},
                 "template": _template("many", *images)}}, namespace="nf")
    await world.until(lambda: _available(world, dict.fromkeys(images, 1)),
                      what="every Artifact Available with two reconcilers")
    # both decided every step: a create or status write that lost (409) was decided again,
    # and a request repeated for the same generation is one message (Nats-Msg-Id)
    requested = [(r.artifact, r.generation) for r in mirror.requests]
    assert len(requested) == len(set(requested)) == len(images)
    creates = sum(r.metric("clusterregistry_reconciler_api_writes_total", operation="create")
                  for r in (first, second))
    assert creates == len(images)
    await world.until(lambda: _records_match(world, dict.fromkeys(images, 1)),
                      what="the artifacts bucket")
