"""The simulated kubelet against the real distribution registry, seen through kubectl.

Images are built and pushed with skopeo into Debian's `docker-registry`; pods are created
with the venv's kubectl against kubesim over HTTPS; what the kubelet asked the registry for
is read from the registry's own access log. This is the path a node takes: per-policy
requests, a second pod on the same node fetching no blob, a layer missing or corrupt in the
registry's storage failing the pull with containerd's words, and the kubelet's events as
`kubectl get events` and `kubectl describe pod` show them.

Speed-up, named: the image pull back-off is 0.2 s doubling to 1 s (10 s to 300 s on a node)
so the failure cases retry within the test; its real timing is tested with an injected
clock in test_kubelet.py.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from clusterregistry_sandbox.images import BuiltImage
from clusterregistry_sandbox.registries import Registry
from clusterregistry_sandbox.supervising import wait_for
from kubesim.running import Cluster, ClusterSettings
from tests.world.images import BuildImage, PushImage
from tests.world.kube import Kubectl, fast_kubelet, running_cluster

pytestmark = pytest.mark.integration

_REQUEST = re.compile(r'"(?P<method>GET|HEAD) (?P<path>/v2/[^ "]+) HTTP/[0-9.]+" (?P<status>\d{3})')


@pytest.fixture
async def cluster(tmp_path: Path, registry: Registry) -> AsyncIterator[Cluster]:
    settings = ClusterSettings(
        nodes=("node-1", "node-2"),
        kubelet=fast_kubelet(insecure_registries=(registry.host,)))
    async for cluster in running_cluster(tmp_path, settings):
        yield cluster


class Log:
    """The registry's access log from a mark on: which requests reached it."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.registry.log_path.stat().st_size

    def requests(self) -> list[tuple[str, str]]:
        with self.registry.log_path.open("rb") as log:
            log.seek(self.offset)
            text = log.read().decode(errors="replace")
        return [(m["method"], m["path"]) for m in _REQUEST.finditer(text)]

    def blob_gets(self) -> list[str]:
        return [p.rsplit("/", 1)[1] for m, p in self.requests()
                if m == "GET" and "/blobs/" in p]


def pod(name: str, image: str, *, node: str, policy: str) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [
            {"name": "app", "image": image, "imagePullPolicy": policy}]}})


async def pod_json(kubectl: Kubectl, name: str) -> dict[str, Any]:
    result = await kubectl.run("get", "pod", name, "-o", "json")
    document: dict[str, Any] = result.json()
    return document


async def running(kubectl: Kubectl, name: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        current = await pod_json(kubectl, name)
        return current if current["status"].get("phase") == "Running" else None

    return await wait_for(check, timeout=30, interval=0.1, description=f"{name} Running")


async def waiting(kubectl: Kubectl, name: str, *reasons: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        current = await pod_json(kubectl, name)
        for status in current["status"].get("containerStatuses") or []:
            state = (status.get("state") or {}).get("waiting") or {}
            if state.get("reason") in reasons:
                return dict(state)
        return None

    return await wait_for(check, timeout=30, interval=0.1, description=f"{name} {reasons}")


def blob_file(registry: Registry, digest: str) -> Path:
    hexpart = digest.removeprefix("sha256:")
    return (registry.root_dir / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexpart[:2]
            / hexpart / "data")


async def pushed(build_image: BuildImage, push_image: PushImage, registry: Registry,
                 name: str) -> tuple[BuiltImage, str]:
    image = build_image(name, tag="1.0", layer_sizes=(64 * 1024, 32 * 1024))
    return image, await push_image(image, registry, f"nf/{name}")


async def test_each_policy_asks_the_registry_what_a_node_asks(
    cluster: Cluster, registry: Registry, build_image: BuildImage, push_image: PushImage,
) -> None:
    kubectl = Kubectl(cluster.kubeconfig)
    image, ref = await pushed(build_image, push_image, registry, "upf")
    blobs = sorted(b.digest for b in image.manifests[0].blobs)
    log = Log(registry)

    log.mark()
    await kubectl.run("create", "-f", "-", stdin=pod("first", ref, node="node-1",
                                                     policy="IfNotPresent"))
    await running(kubectl, "first")
    assert sorted(log.blob_gets()) == blobs
    assert ("HEAD", "/v2/nf/upf/manifests/1.0") in log.requests()

    # IfNotPresent, image whole on the node: not a single request
    log.mark()
    await kubectl.run("create", "-f", "-", stdin=pod("second", ref, node="node-1",
                                                     policy="IfNotPresent"))
    await running(kubectl, "second")
    assert log.requests() == []

    # Always: the tag is resolved again; the node holds every blob, so nothing is fetched
    log.mark()
    await kubectl.run("create", "-f", "-", stdin=pod("third", ref, node="node-1",
                                                     policy="Always"))
    await running(kubectl, "third")
    assert log.requests() == [("HEAD", "/v2/nf/upf/manifests/1.0")]

    # Never, on a node that never pulled it: ErrImageNeverPull, no request
    log.mark()
    await kubectl.run("create", "-f", "-", stdin=pod("fourth", ref, node="node-2",
                                                     policy="Never"))
    state = await waiting(kubectl, "fourth", "ErrImageNeverPull")
    assert state["message"] == f'Container image "{ref}" is not present with pull policy of Never'
    assert log.requests() == []

    # the nodes report what they hold in Node status.images (every 10 s on a node)
    async def listed() -> list[dict[str, Any]] | None:
        node = (await kubectl.run("get", "node", "node-1", "-o", "json")).json()
        images: list[dict[str, Any]] = node["status"].get("images") or []
        return images or None

    images = await wait_for(listed, timeout=30, interval=0.2, description="node-1 images")
    assert images[0]["names"] == [f"{registry.host}/nf/upf@{image.digest}", ref]
    assert images[0]["sizeBytes"] == image.manifests[0].size + sum(
        b.size for b in image.manifests[0].blobs)


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
async def test_a_damaged_layer_in_the_registry_fails_the_pull(
    damage: str, cluster: Cluster, registry: Registry, build_image: BuildImage,
    push_image: PushImage,
) -> None:
    kubectl = Kubectl(cluster.kubeconfig)
    image, ref = await pushed(build_image, push_image, registry, f"smf-{damage}")
    layer = image.manifests[0].layers[-1].digest
    data = blob_file(registry, layer)
    original = data.read_bytes()
    if damage == "missing":
        data.unlink()
    else:
        data.write_bytes(bytes([original[0] ^ 0xFF]) + original[1:])
    await kubectl.run("create", "-f", "-", stdin=pod("victim", ref, node="node-1",
                                                     policy="IfNotPresent"))
    state = await waiting(kubectl, "victim", "ErrImagePull", "ImagePullBackOff")
    prefix = f'failed to pull and unpack image "{ref}": '
    if damage == "missing":
        url = f"http://{registry.host}/v2/nf/smf-{damage}/blobs/{layer}"
        assert (f"rpc error: code = NotFound desc = {prefix}failed to copy: httpReadSeeker: "
                f"failed open: content at {url} not found: not found") in state["message"]
    else:
        assert (f'rpc error: code = FailedPrecondition desc = {prefix}failed commit on ref '
                f'"layer-{layer}": unexpected commit digest sha256:') in state["message"]
        assert f"expected {layer}: failed precondition" in state["message"]
    # nothing unverified reached the node, and the image is not present there
    kubelet = cluster.controllers.kubelet if cluster.controllers else None
    assert kubelet is not None
    store = kubelet.puller.store("node-1")
    assert not store.has(layer)
    assert store.present(ref) is None

    # the layer restored, the next attempt after the back-off completes the pull
    data.write_bytes(original)
    await running(kubectl, "victim")
    assert store.blob_path(layer).read_bytes() == original


async def test_the_kubelets_events_through_kubectl(
    cluster: Cluster, registry: Registry, build_image: BuildImage, push_image: PushImage,
) -> None:
    kubectl = Kubectl(cluster.kubeconfig)
    _, ref = await pushed(build_image, push_image, registry, "amf")
    missing = f"{registry.host}/nf/absent:9"
    watcher = await kubectl.start("get", "events", "-A", "-w")
    try:
        await kubectl.run("create", "-f", "-", stdin=pod("good", ref, node="node-1",
                                                         policy="IfNotPresent"))
        await kubectl.run("create", "-f", "-", stdin=pod("bad", missing, node="node-2",
                                                         policy="IfNotPresent"))
        await running(kubectl, "good")
        await waiting(kubectl, "bad", "ImagePullBackOff")

        # kubectl get events -w saw the pull as it happened
        assert watcher.stdout is not None
        seen = ""
        async with asyncio.timeout(30):
            while f'Successfully pulled image "{ref}"' not in seen:
                line = await watcher.stdout.readline()
                assert line, "kubectl get events -w ended"
                seen += line.decode()
        assert "Pulling" in seen
    finally:
        watcher.kill()
        await watcher.wait()

    listed = (await kubectl.run("get", "events", "-A")).stdout
    assert re.search(r"default\s+\S+\s+Normal\s+Pulled\s+pod/good\s+Successfully pulled image "
                     + re.escape(f'"{ref}" in '), listed), listed
    assert re.search(r"Normal\s+Scheduled|Normal\s+Pulling\s+pod/good", listed), listed

    selected = (await kubectl.run(
        "get", "events", "--field-selector", "involvedObject.name=bad", "-o", "json")).json()
    reasons = {e["reason"] for e in selected["items"]}
    assert {"Pulling", "Failed", "BackOff"} <= reasons, reasons
    assert {e["involvedObject"]["name"] for e in selected["items"]} == {"bad"}
    failed = [e for e in selected["items"] if e["message"].startswith("Failed to pull image")]
    assert failed[0]["type"] == "Warning"
    assert failed[0]["source"] == {"component": "kubelet", "host": "node-2"}
    assert failed[0]["involvedObject"]["fieldPath"] == "spec.containers{app}"

    # kubectl describe prints each event's fieldPath before its message
    described = (await kubectl.run("describe", "pod", "bad")).stdout
    events = described[described.index("Events:"):]
    kubelet = r"\s+.*kubelet\s+spec\.containers\{app\}: "
    assert re.search(r"Normal\s+Pulling" + kubelet + "Pulling image " + re.escape(f'"{missing}"'),
                     events), events
    assert re.search(r"Warning\s+Failed" + kubelet + "Failed to pull image "
                     + re.escape(f'"{missing}": rpc error: code = NotFound'), events), events
    assert re.search(r"Warning\s+Failed" + kubelet + "Error: ErrImagePull", events), events
    assert re.search(r"Normal\s+BackOff" + kubelet + "Back-off pulling image "
                     + re.escape(f'"{missing}"'), events), events
