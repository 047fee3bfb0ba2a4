"""What a node's pull sees of the edge registry, layer by layer, with a real kubelet's back-off.

Pods pull through the registry front (issue 15). A first deploy of a never-seen image with
policy Always is served from the source while the mirror copies: no pull fails, so the
kubelet never backs off, and the artifact store serves each manifest and blob once, however
many pods on however many nodes pull it at once (the front fetches once, the others join,
the mirror reads through the front and skips or mounts what the front stored).

A manifest in the edge registry is not an image: a node needs every blob. A layer lost from
the edge registry's storage behind its back (a disk fault, a hand-made delete) is served from
the source again by the front while the source answers; with the source cut off, a node that
never held the image fails its pull with the front's error, as a real node would, and the
kubelet records it as a Failed event, while the nodes that hold the image keep running.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from clusterregistry import references
from clusterregistry_sandbox.images import ImageFormat
from clusterregistry_sandbox.podstarts import pod_starts
from clusterregistry_sandbox.samples import PushedSample, Sample, fill
from clusterregistry_sandbox.scenarios import NF_NAMESPACE, Scenario
from clusterregistry_sandbox.supervising import wait_for
from clusterregistry_sandbox.systems import System

pytestmark = pytest.mark.e2e

FIRST = "first-deploy"
REPLICAS = 6
# distribution's access log: a request, its status; a 401 challenge before the authorized
# request is not a fetch
_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<uri>/v2/[^ ]*) HTTP/[0-9.]+" (?P<status>\d{3}) ')


def source_gets(log: Path, offset: int = 0) -> Counter[str]:
    """2xx GETs of a manifest or blob on the artifact store, by URI, from `offset` on."""
    counts: Counter[str] = Counter()
    with log.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    for match in _ACCESS.finditer(text):
        uri = match["uri"]
        if (match["method"] == "GET" and match["status"].startswith("2")
                and ("/manifests/" in uri or "/blobs/" in uri)):
            counts[uri] += 1
    return counts


def _deployment(image: str) -> dict[str, Any]:
    # no pull secret: the front fetches with the artifact store credentials configured for
    # clusterregistry (a pull secret would make the mirror read the source directly)
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": FIRST, "namespace": NF_NAMESPACE},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": {"app": FIRST}},
            "template": {
                "metadata": {"labels": {"app": FIRST}},
                "spec": {"containers": [{"name": "app", "image": image,
                                         "imagePullPolicy": "Always"}]},
            },
        },
    }


async def _never_seen_image(system: System) -> PushedSample:
    """A multi-arch image of a few MiB the sandbox never pulled, pushed outside the clock."""
    sample = Sample(repository="nf/first", tag="1.0.0", image_format=ImageFormat.OCI,
                    platforms=("linux/amd64", "linux/arm64"),
                    layer_sizes=(3 * 1024 * 1024, 1024 * 1024, 256 * 1024),
                    description="never-seen multi-arch OCI image")
    [pushed] = await fill(system.artifact_store, system.root / "first-images",
                          samples=[sample], seed=4242)
    return pushed


async def test_a_first_deploy_through_the_front_never_fails_a_pull_and_fetches_once(
        system: System, scenario: Scenario) -> None:
    assert system.front_on and system.local_registry == system.front_host()
    image = await _never_seen_image(system)
    log = system.artifact_store.log_path
    offset = log.stat().st_size
    await scenario.api.apply({"apiVersion": "v1", "kind": "Namespace",
                              "metadata": {"name": NF_NAMESPACE}})
    await scenario.api.create(_deployment(image.reference))
    local = scenario.local_reference(image)

    async def running() -> list[dict[str, Any]] | None:
        pods = await scenario.api.list("Pod", namespace=NF_NAMESPACE, selector=f"app={FIRST}")
        up = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
        return pods if len(pods) == REPLICAS and len(up) == REPLICAS else None

    pods = await wait_for(running, timeout=60, interval=0.2,
                          description=f"{REPLICAS} pods of a never-seen image Running")
    assert len({p["spec"]["nodeName"] for p in pods}) == 3, "the pods span the 3 nodes"
    for pod in pods:
        assert pod["spec"]["containers"][0]["image"] == local
        ids = [cs["imageID"] for cs in pod["status"]["containerStatuses"]]
        assert all(i.startswith(system.local_registry + "/") for i in ids), ids

    # the kubelets recorded no pull failure and no back-off (kubectl get events)
    starts = await pod_starts(scenario.api, pods, namespace=NF_NAMESPACE)
    assert (starts.failed_pulls, starts.backoffs) == (0, 0), starts.line()
    uids = {p["metadata"]["uid"] for p in pods}
    events = [e for e in await scenario.api.list("Event", namespace=NF_NAMESPACE)
              if (e.get("involvedObject") or {}).get("uid") in uids]
    reasons = Counter(e["reason"] for e in events)
    assert reasons["Failed"] == reasons["BackOff"] == 0, reasons
    assert reasons["Pulled"] >= REPLICAS, reasons

    # the Artifact still reaches Available: the mirror read through the front and skipped
    # or mounted what the front stored; distribution holds the whole image
    name = references.artifact_name(references.parse(image.reference))

    async def available() -> bool:
        artifact = await scenario.api.get("Artifact", name)
        status = (artifact or {}).get("status") or {}
        assert status.get("phase") != "Failed", status
        return status.get("phase") == "Available" and status.get("digest") == image.digest

    await wait_for(available, timeout=60, interval=0.2, description=f"Artifact {name} Available")
    edge = references.parse(local)
    info = await system.edge.manifest(edge.path, edge.tag or "latest")
    assert info is not None and info.digest == image.digest

    # the artifact store served each manifest and each blob exactly once
    gets = source_gets(log, offset)
    repo = image.sample.repository
    want = {f"/v2/{repo}/manifests/{image.sample.tag}",
            *(f"/v2/{repo}/manifests/{m.digest}" for m in image.built.manifests),
            *(f"/v2/{repo}/blobs/{blob.digest}" for blob in image.built.blobs)}
    assert want <= set(gets), sorted(want - set(gets))
    assert set(gets.values()) == {1}, {uri: n for uri, n in gets.items() if n != 1}
    fronts = await system.front_counts()
    assert fronts.get("miss_failed", 0) == 0, fronts
    print(f"first deploy: {REPLICAS} pods on 3 nodes, {starts.line()}; artifact store GETs "
          f"{len(gets)} URIs x 1 ({sum(gets.values())} in all); front {fronts}")


async def test_a_layer_lost_from_the_edge_comes_from_the_source_or_fails_a_fresh_node(
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

    # the source answers: the front serves the lost layer from it, and the new node runs
    line = await scenario.new_node("node-4")
    assert "pulled all" in line, line

    # lost again, and the source cut off: a node that never held the image cannot get it
    async def stored_again() -> bool:
        return data.is_file()

    await wait_for(stored_again, timeout=60, interval=0.2,
                   description="the front storing the lost layer back")
    data.unlink()
    await scenario.cut_off()
    await scenario.api.create({"apiVersion": "v1", "kind": "Node",
                               "metadata": {"name": "node-5"}})

    async def failed_pod() -> dict[str, Any] | None:
        for pod in await scenario.api.list("Pod", namespace=NF_NAMESPACE,
                                           selector="app=smf"):
            if pod["spec"].get("nodeName") != "node-5":
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
    assert url in waiting["message"], waiting
    assert waiting["message"].startswith("rpc error: code = "), waiting

    # the kubelet said so in an event on the pod, as `kubectl describe pod` shows it
    pod = seen["pod"]
    events = await scenario.api.list(
        "Event", namespace=NF_NAMESPACE,
        fields=f"involvedObject.name={pod['metadata']['name']}")
    failures = [e for e in events if e["reason"] == "Failed"
                and e["message"].startswith("Failed to pull image")]
    assert failures and url in failures[0]["message"], events
    assert failures[0]["source"] == {"component": "kubelet", "host": "node-5"}

    # the nodes that hold the image never noticed: their pods still run
    for pod_ in await scenario.api.list("Pod", namespace=NF_NAMESPACE, selector="app=smf"):
        if pod_["spec"].get("nodeName") != "node-5":
            assert pod_["status"]["phase"] == "Running"
