"""What a node's pull sees of the edge registry, layer by layer, with a real kubelet's back-off.

A manifest in the edge registry is not an image: a node needs every blob. A layer lost from
the edge registry's storage behind its back (a disk fault, a hand-made delete) leaves the
nodes that hold the image running, and makes a node that never held it fail its pull with
containerd's blob error, as a real node would; the kubelet records it as a Failed event.
"""

from __future__ import annotations

from typing import Any

import pytest

from clusterregistry import references
from clusterregistry_sandbox.scenarios import NF_NAMESPACE, Scenario
from clusterregistry_sandbox.supervising import wait_for
from clusterregistry_sandbox.systems import System

pytestmark = pytest.mark.e2e


async def test_a_layer_lost_from_the_edge_fails_a_fresh_node_with_the_blob_error(
        system: System, scenario: Scenario) -> None:
    await scenario.establish()
    sample = scenario.samples[1]  # the DaemonSet's image
    local = references.parse(scenario.local_reference(sample))
    blobs = await scenario.image_blobs(local.path, sample.digest)
    lost = blobs[-1][0]  # a layer
    hexpart = lost.removeprefix("sha256:")
    data = (system.edge.root_dir / "docker" / "registry" / "v2" / "blobs" / "sha256"
            / hexpart[:2] / hexpart / "data")
    data.unlink()

    await scenario.api.create({"apiVersion": "v1", "kind": "Node",
                               "metadata": {"name": "node-4"}})

    async def failed_pod() -> dict[str, Any] | None:
        for pod in await scenario.api.list("Pod", namespace=NF_NAMESPACE,
                                           selector="app=smf"):
            if pod["spec"].get("nodeName") != "node-4":
                continue
            for status in pod.get("status", {}).get("containerStatuses") or []:
                waiting = (status.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff"):
                    return {"pod": pod, "waiting": waiting}
        return None

    seen = await wait_for(failed_pod, timeout=60, interval=0.2,
                          description="the new node's smf pod failing its pull")
    waiting = seen["waiting"]
    url = f"http://{system.local_registry}/v2/{local.path}/blobs/{lost}"
    assert (f"failed to copy: httpReadSeeker: failed open: content at {url} not found: "
            "not found") in waiting["message"]
    assert waiting["message"].startswith("rpc error: code = NotFound desc = failed to pull "
                                         "and unpack image")

    # the kubelet said so in an event on the pod, as `kubectl describe pod` shows it
    pod = seen["pod"]
    events = await scenario.api.list(
        "Event", namespace=NF_NAMESPACE,
        fields=f"involvedObject.name={pod['metadata']['name']}")
    failures = [e for e in events if e["reason"] == "Failed"
                and e["message"].startswith("Failed to pull image")]
    assert failures and url in failures[0]["message"], events
    assert failures[0]["source"] == {"component": "kubelet", "host": "node-4"}

    # the nodes that hold the image never noticed: their pods still run
    for pod_ in await scenario.api.list("Pod", namespace=NF_NAMESPACE, selector="app=smf"):
        if pod_["spec"].get("nodeName") != "node-4":
            assert pod_["status"]["phase"] == "Running"
