"""Events on Artifacts (issue 19), end to end: the real relay, tracker, reconciler and mirror
worker copy one image and fail on another, then a GC run collects the first; what they
recorded is read back with the venv's kubectl 1.37, as an operator would: `kubectl describe
artifact NAME` (its generic describer selects events on involvedObject name, namespace, kind
and uid) and `kubectl get events -A` (kube-apiserver's Event table)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from clusterregistry import references
from clusterregistry.bus.connecting import connect
from clusterregistry.bus.fencing import Fence
from clusterregistry.config import GcSettings, MirrorSettings, RegistryAccess
from clusterregistry.gc.collecting import Collector
from clusterregistry.gc.metrics import GcMetrics
from clusterregistry.gc.scheduling import Schedule
from clusterregistry.gc.sweeping import SubprocessSweeper
from clusterregistry.kube.artifacts import Artifacts
from clusterregistry.kube.clients import api_client
from clusterregistry.kube.events import EventRecorder, ObjectRef, source_for
from clusterregistry.mirror.metrics import MirrorMetrics
from clusterregistry.mirror.mirroring import Worker
from clusterregistry.oci.clients import RegistryClients
from clusterregistry.oci.registries import RegistryClient
from clusterregistry_sandbox.registries import Registry, find_docker_registry
from tests.integration.tracker.worlds import NAMESPACE, Services
from tests.world.images import BuildImage, PushImage
from tests.world.kube import Kubectl

pytestmark = pytest.mark.integration

GC_POD = ObjectRef(api_version="v1", kind="Pod", name="clusterregistry-gc-0",
                   namespace=NAMESPACE)


@pytest.fixture
async def mirror_worker(world: Services, secure_registry: Registry, registry: Registry
                        ) -> AsyncIterator[Worker]:
    """The real mirror worker, recording its Events into kubesim."""
    user, password = secure_registry.credentials or ("", "")
    settings = MirrorSettings(registries=[RegistryAccess(
        host=secure_registry.host, ca_file=str(secure_registry.ca_path), username=user,
        password=password)], ack_wait_seconds=10.0, retry_delay_seconds=0.2)
    bus = await connect([world.nats.url], name="mirror-1")
    api = await api_client(str(world.cluster.kubeconfig))
    clients = RegistryClients(settings, local_registry=registry.host)
    worker = Worker(bus=bus, settings=settings, clients=clients, worker_id="mirror-1",
                    metrics=MirrorMetrics(CollectorRegistry()),
                    recorder=EventRecorder(api, source_for("mirror", "mirror-1")))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        await clients.close()
        await bus.close()
        await api.close()


def stored_events(world: Services) -> list[dict[str, Any]]:
    api = world.cluster.api
    return list(api.list(api.lookup("", "v1", "events"))["items"])


def reasons_on(world: Services, name: str) -> set[str]:
    return {e["reason"] for e in stored_events(world)
            if e["involvedObject"].get("name") == name}


def events_section(describe: str) -> list[list[str]]:
    """The rows of `kubectl describe`'s Events table: Type, Reason, Age, From, Message."""
    _, _, section = describe.partition("\nEvents:\n")
    lines = section.splitlines()[2:]  # the header and its underline
    return [re.split(r"\s{2,}", line.strip(), maxsplit=4) for line in lines if line.strip()]


async def test_a_mirror_a_failed_mirror_and_a_gc_run_show_in_kubectl(
        world: Services, secure_registry: Registry, registry: Registry,
        build_image: BuildImage, push_image: PushImage, mirror_worker: Worker,
        kubectl: Kubectl) -> None:
    image = build_image("upf", tag="1.0")
    copied = await push_image(image, secure_registry, "nf/upf")
    missing = f"{secure_registry.host}/nf/absent:1.0"  # never pushed: the copy fails
    names = {s: references.artifact_name(references.parse(s)) for s in (copied, missing)}
    await world.start_relay()
    await world.relisted()
    await world.start_tracker(early_loading=True, local_registry=registry.host)
    await world.start_reconciler(local_registry=registry.host, retry_max_seconds=60.0)
    api = world.cluster.api
    deployments = api.lookup("apps", "v1", "deployments")
    await api.create(deployments, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "nf"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "nf"}},
                 "template": {"metadata": {"labels": {"app": "nf"}}, "spec": {"containers": [
                     {"name": "upf", "image": copied}, {"name": "absent", "image": missing}]}}}},
        namespace="nf")

    def phases() -> dict[str, str]:
        return {s: (a.get("status") or {}).get("phase", "") for s, a in
                world.artifacts().items()}

    await world.until(lambda: phases() == {copied: "Available", missing: "Failed"},
                      what="one copy done, one failed", timeout=120)
    await world.until(lambda: {"MirrorStarted", "Mirrored"} <= reasons_on(world, names[copied])
                      and {"MirrorStarted", "MirrorFailed"} <= reasons_on(world, names[missing]),
                      what="the mirror's and the reconciler's events", timeout=30)

    # kubectl describe: spec, status, and the events about this very Artifact (by uid)
    described = (await kubectl.run("describe", "artifact", names[copied])).stdout
    print(described)
    assert f"Name:         {names[copied]}" in described
    assert f"Source Artifact:  {copied}" in described
    assert "Phase:" in described and "Available" in described
    rows = events_section(described)
    by_reason = {row[1]: row for row in rows}
    assert set(by_reason) == {"MirrorStarted", "Mirrored"}, rows
    assert by_reason["Mirrored"][0] == "Normal"
    assert by_reason["Mirrored"][3] == "clusterregistry-reconciler"
    assert image.digest in by_reason["Mirrored"][4]
    assert by_reason["MirrorStarted"][3] == "clusterregistry-mirror"
    assert f"copying {copied} to " in by_reason["MirrorStarted"][4]

    failed = (await kubectl.run("describe", "artifact", names[missing])).stdout
    print(failed)
    rows = events_section(failed)
    warnings = [row for row in rows if row[1] == "MirrorFailed"]
    assert warnings and warnings[0][0] == "Warning", rows
    assert "manifest_unknown" in warnings[0][4] and "next attempt in" in warnings[0][4]
    # the other Artifact's events are not this one's
    assert "Mirrored" not in {row[1] for row in rows}

    # the owner goes; GC collects what nothing references any longer
    await api.delete(deployments, namespace="nf", name="nf")
    await world.until(lambda: all(
        (world.artifacts()[s].get("status") or {}).get("unreferencedSince")
        for s in (copied, missing)), what="both Artifacts unreferenced", timeout=60)

    async def recorded() -> bool:
        records = await world.artifact_records()
        record = records.get(names[copied])
        return record is not None and record.unreferenced_since > 0

    await world.until(recorded, what="the KV record unreferenced", timeout=30)
    gc_bus = await connect([world.nats.url], name="gc")
    gc_api = await api_client(str(world.cluster.kubeconfig))
    edge = RegistryClient(registry.host, plain_http=True, actions="*")
    recorder = EventRecorder(gc_api, source_for("gc", "clusterregistry-gc-0"))
    try:
        settings = GcSettings(grace_period_seconds=0.0, lock_ttl_seconds=5.0,
                              writer_wait_seconds=20.0, storage_path=str(registry.root_dir),
                              registry_config_path=str(registry.config_path),
                              usage_source="blobs")
        collector = Collector(
            bus=gc_bus, fence=Fence(gc_bus, ttl_seconds=5.0, holder="gc-0", poll_interval=0.05),
            registry=edge, settings=settings, schedule=Schedule("0 0 * * *", 0.0),
            storage_bytes=1 << 30,
            sweeper=SubprocessSweeper(binary=find_docker_registry(),
                                      config_path=str(registry.config_path), timeout=120),
            artifacts=Artifacts(gc_api), metrics=GcMetrics(CollectorRegistry()), holder="gc-0",
            recorder=recorder, run_object=GC_POD)
        await collector.ensure()
        result = await collector.run(force=True)
        assert result.event == "finished", result
        await recorder.flush(timeout=30)
    finally:
        await recorder.stop()
        await edge.close()
        await gc_bus.close()
        await gc_api.close()
    assert "Collected" in reasons_on(world, names[copied])
    assert {"ReadOnlyWindow", "Collected"} <= reasons_on(world, GC_POD.name)

    listed = (await kubectl.run("get", "events", "-A")).stdout
    print(listed)
    header, *lines = listed.splitlines()
    assert header.split() == ["NAMESPACE", "LAST", "SEEN", "TYPE", "REASON", "OBJECT",
                              "MESSAGE"]
    seen = {(line.split()[0], line.split()[2], line.split()[3], line.split()[4])
            for line in lines}
    for row in [("default", "Normal", "MirrorStarted", f"artifact/{names[copied]}"),
                ("default", "Normal", "Mirrored", f"artifact/{names[copied]}"),
                ("default", "Warning", "MirrorFailed", f"artifact/{names[missing]}"),
                ("default", "Normal", "Collected", f"artifact/{names[copied]}"),
                (NAMESPACE, "Normal", "ReadOnlyWindow", f"pod/{GC_POD.name}"),
                (NAMESPACE, "Normal", "Collected", f"pod/{GC_POD.name}")]:
        assert row in seen, (row, listed)
