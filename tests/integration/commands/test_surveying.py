"""`clusterregistry status` and `kubectl clusterregistry status` against real parts: a
nats-server with the streams and durable consumers the services create and a GC event,
kubesim with the Artifact CRD and Artifacts, and probe servers standing for GC and a front
with their real metrics. Healthy; then NATS stopped: degraded, exit 1, the reason names
NATS, and the answer comes within the NATS timeout (measured, bounded generously)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from clusterregistry import subjects
from clusterregistry.front.metrics import FrontMetrics
from clusterregistry.gc.metrics import GcMetrics
from clusterregistry.kube.artifacts import Artifacts
from clusterregistry.kube.clients import api_client
from clusterregistry.runtime.probes import ProbeServer
from clusterregistry.schemas import GcEvent, encode
from clusterregistry_sandbox.natsservers import NatsServer
from kubesim.resources import Resource
from kubesim.running import Cluster
from tests.world.kube import KUBECTL
from tests.world.nats import jetstream

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
NATS_TIMEOUT = 2.0


async def _streams_and_consumers(url: str) -> None:
    """What the relay, tracker, reconciler, mirror and GC create, and one finished GC run."""
    from nats.js.api import ConsumerConfig, RetentionPolicy  # noqa: PLC0415

    async with jetstream(url) as js:
        await js.add_stream(name=subjects.KUBE_STREAM, subjects=[subjects.KUBE_ALL])
        await js.add_stream(name=subjects.MIRROR_STREAM,
                            subjects=list(subjects.MIRROR_STREAM_SUBJECTS),
                            retention=RetentionPolicy.WORK_QUEUE)
        await js.add_stream(name=subjects.GC_STREAM, subjects=[subjects.GC_ALL])
        for stream, durable, subject in (
            (subjects.KUBE_STREAM, subjects.TRACKER_CONSUMER, subjects.KUBE_ALL),
            (subjects.KUBE_STREAM, subjects.RECONCILER_ARTIFACTS_CONSUMER + "-r0",
             subjects.kube_kind("artifact")),
            (subjects.MIRROR_STREAM, subjects.RECONCILER_RESULTS_CONSUMER,
             subjects.MIRROR_RESULT_ALL),
            (subjects.MIRROR_STREAM, subjects.MIRROR_CONSUMER, subjects.MIRROR_REQUEST),
        ):
            await js.add_consumer(stream, ConsumerConfig(durable_name=durable,
                                                         filter_subject=subject))
        # two mirror requests waiting in the work queue
        for n in range(2):
            await js.publish(subjects.MIRROR_REQUEST, b"{}", headers={
                subjects.MSG_ID_HEADER: f"req-{n}"})
        await js.publish(subjects.gc("started"), encode(GcEvent(run="r1", event="started",
                                                                time=time.time() - 65)))
        await js.publish(subjects.gc("finished"), encode(GcEvent(
            run="r1", event="finished", deleted=3, bytes_freed=12 << 20,
            read_only_seconds=0.7, time=time.time() - 60)))


async def _artifacts(kubeconfig: Path) -> None:
    api = await api_client(str(kubeconfig))
    try:
        artifacts = Artifacts(api)
        for name, source, phase in (("nginx-aa", "docker.io/library/nginx:1.25", "Available"),
                                    ("upf-bb", "acr.io/nf/upf:1.2", "Available"),
                                    ("smf-cc", "acr.io/nf/smf:2.0", "Mirroring")):
            await artifacts.create({"metadata": {"name": name},
                                    "spec": {"sourceArtifact": source,
                                             "localArtifact": f"edge:5000/{source}"}})
            await artifacts.patch_status(name, {"phase": phase})
    finally:
        await api.close()


@pytest.fixture
async def probes() -> AsyncIterator[tuple[ProbeServer, ProbeServer]]:
    """GC's and a front's probe servers with their real metrics, as the processes set them."""
    gc_registry, front_registry = CollectorRegistry(), CollectorRegistry()
    gc_metrics = GcMetrics(gc_registry)
    gc_metrics.used_bytes.set(300 << 20)
    gc_metrics.capacity_bytes.set(1 << 30)
    front_metrics = FrontMetrics(front_registry)
    for _ in range(9):
        front_metrics.answered("blob", "hit")
    front_metrics.answered("manifest", "miss_streamed")
    gc = ProbeServer("127.0.0.1", 0, registry=gc_registry)
    front = ProbeServer("127.0.0.1", 0, registry=front_registry)
    async with gc, front:
        yield gc, front


def _flags(nats: NatsServer, kube: Cluster, gc: ProbeServer, front: ProbeServer,
           settings: Path) -> list[str]:
    base = "http://127.0.0.1"
    return [
        "--config", str(settings), "--kubeconfig", str(kube.kubeconfig),
        "--server", nats.url,
        "--gc-metrics", f"{base}:{gc.port}/metrics",
        "--front-metrics", f"{base}:{front.port}/metrics",
        "--probe", f"gc={base}:{gc.port}/readyz", "--probe", f"front-1={base}:{front.port}/readyz",
        "--timeout", f"nats={NATS_TIMEOUT}",
    ]


async def _run(argv: list[str], env: dict[str, str] | None = None
               ) -> tuple[int, str, str, float]:
    began = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=env or {**os.environ, "KUBECONFIG": ""})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode(), time.monotonic() - began


def _settings(tmp_path: Path) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text("clusterRegistry:\n  storageSize: 1Gi\n  clusterRegistryGCThreshold: 80\n"
                    "  clusterRegistryGCCadence: '0 3 * * *'\n")
    return path


async def test_healthy_then_degraded_with_nats_stopped(
    nats_server: NatsServer, kube_api: Cluster, artifact_crd_installed: Resource,
    probes: tuple[ProbeServer, ProbeServer], tmp_path: Path,
) -> None:
    gc, front = probes
    await _streams_and_consumers(nats_server.url)
    await _artifacts(kube_api.kubeconfig)
    flags = _flags(nats_server, kube_api, gc, front, _settings(tmp_path))
    cli = [str(BIN / "clusterregistry"), "status"]

    code, out, err, _ = await _run([*cli, *flags])
    print(out)
    assert code == 0, out + err
    assert out.startswith("clusterregistry: healthy")
    assert "300Mi of 1Gi (29.3%); storageSize 1Gi; GC threshold 80%" in out
    assert "2 Available, 0 Pending, 1 Mirroring" in out and "smf-cc" in out
    assert "2 waiting, 0 copies in flight" in out
    assert "freed 12Mi (3 Artifact(s)), read-only 0.7s" in out
    assert "90.0% (9 hits of 10 manifest and blob requests" in out

    code, out, err, _ = await _run([*cli, *flags, "-o", "json"])
    document: dict[str, Any] = json.loads(out)
    assert code == 0 and document["status"] == "healthy", out + err
    lag = {row["item"]: row for row in document["sections"]["consumers"]}
    assert lag[subjects.MIRROR_CONSUMER]["pending"] == 2
    assert lag[subjects.TRACKER_CONSUMER]["pending"] == 0
    assert document["sections"]["gc"][0]["bytes_freed"] == 12 << 20

    await nats_server.stop()
    code, out, err, took = await _run([*cli, *flags])
    print(out, f"answered in {took:.2f}s with a {NATS_TIMEOUT}s NATS timeout")
    assert code == 1, out + err
    assert out.startswith("clusterregistry: DEGRADED")
    reasons = [line for line in out.splitlines() if line.startswith("  - ")]
    assert reasons == [f"  - NATS unreachable ({nats_server.url}): no answer within "
                       f"{NATS_TIMEOUT:g}s"], out
    assert "? MIRROR" in out and "2 Available" in out  # the other sources still answer
    # generous: the interpreter's start and the other sources run beside the NATS timeout
    assert took < 4 * NATS_TIMEOUT + 4, took


async def test_kubectl_clusterregistry_status_is_the_same_command(
    nats_server: NatsServer, kube_api: Cluster, artifact_crd_installed: Resource,
    probes: tuple[ProbeServer, ProbeServer], tmp_path: Path,
) -> None:
    """The venv's kubectl finds the `kubectl-clusterregistry` console script on PATH and
    hands it `status ...`; the API server comes from $KUBECONFIG, as for kubectl itself."""
    gc, front = probes
    await _streams_and_consumers(nats_server.url)
    await _artifacts(kube_api.kubeconfig)
    flags = [f for f in _flags(nats_server, kube_api, gc, front, _settings(tmp_path))]
    at = flags.index("--kubeconfig")
    del flags[at:at + 2]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "KUBECONFIG": str(kube_api.kubeconfig), "HOME": str(tmp_path)}

    plugins = await _run([KUBECTL, "plugin", "list"], env)
    assert str(BIN / "kubectl-clusterregistry") in plugins[1], plugins

    code, out, err, _ = await _run([KUBECTL, "clusterregistry", "status", *flags], env)
    assert code == 0, out + err
    assert out.startswith("clusterregistry: healthy") and "2 Available" in out

    await nats_server.stop()
    code, out, err, _ = await _run([KUBECTL, "clusterregistry", "status", *flags], env)
    assert code == 1, out + err
    assert f"NATS unreachable ({nats_server.url})" in out

    code, out, err, _ = await _run([KUBECTL, "clusterregistry", "status", "--help"], env)
    assert code == 0 and out.startswith("usage: kubectl clusterregistry status"), out + err


async def test_in_a_cluster_readiness_is_the_workloads_ready_replicas(kube_api: Cluster) -> None:
    """Without probe URLs, readiness is what the kubelets' probes made of the Deployments and
    StatefulSets labelled as clusterregistry's, read through the API server."""
    from clusterregistry.commands.surveying import read_workloads  # noqa: PLC0415

    deployments = kube_api.api.lookup("apps", "v1", "deployments")
    sets = kube_api.api.lookup("apps", "v1", "statefulsets")
    labels = {"app.kubernetes.io/name": "clusterregistry"}

    def workload(kind: str, name: str, replicas: int) -> dict[str, Any]:
        match = {**labels, "app.kubernetes.io/component": name}
        return {"apiVersion": "apps/v1", "kind": kind,
                "metadata": {"name": f"clusterregistry-{name}", "namespace": "clusterregistry",
                             "labels": match},
                "spec": {"replicas": replicas, "selector": {"matchLabels": match},
                         **({"serviceName": "nats"} if kind == "StatefulSet" else {}),
                         "template": {"metadata": {"labels": match}, "spec": {"containers": [
                             {"name": name, "image": "clusterregistry"}]}}}}

    namespaces = kube_api.api.lookup("", "v1", "namespaces")
    await kube_api.api.create(namespaces, {"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": "clusterregistry"}})
    for resource, body, ready in (
        (deployments, workload("Deployment", "mirror", 2), 1),
        (deployments, workload("Deployment", "gc", 1), 1),
        (sets, workload("StatefulSet", "nats", 3), 3),
    ):
        created = await kube_api.api.create(resource, body, namespace="clusterregistry")
        created["status"] = {"replicas": body["spec"]["replicas"], "readyReplicas": ready}
        await kube_api.api.update(resource, created, subresource="status",
                                  namespace="clusterregistry")
    other = workload("Deployment", "unrelated", 1)
    other["metadata"]["labels"] = {"app": "unrelated"}
    await kube_api.api.create(deployments, other, namespace="clusterregistry")

    found = await read_workloads(str(kube_api.kubeconfig), "clusterregistry")
    assert [(r.name, r.ready, r.wanted, r.detail) for r in found] == [
        ("clusterregistry-gc", 1, 1, "Deployment"),
        ("clusterregistry-mirror", 1, 2, "Deployment"),
        ("clusterregistry-nats", 3, 3, "StatefulSet"),
    ]
