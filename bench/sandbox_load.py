"""The issue's load at full size: 200 Deployments, 1,000 pods over 50 images, created at once.

What is measured, on two fresh sandboxes in the same run (same machine, same
kubesim with ten nodes, since a node takes at most 110 pods as a kubelet's
default maxPods, same artifact store with TLS and basic auth, same 50 images
pushed outside the clock):

- `with`: every clusterregistry process running. The webhook rewrites every
  pod, the relay, tracker, reconciler and two mirror workers copy each image
  once, and the kubelets pull from the edge registry.
- `baseline`: no clusterregistry process at all: the pods pull straight from
  the artifact store, as a cluster without clusterregistry does.

The clock runs from the first Deployment created to the last pod Running.
Reported: both times and their ratio (the cost of going through the edge
registry, first copy included), and the artifact store's pulls (successful
GETs of a manifest by tag or digest, from its own access log): one per pod
start in the baseline, one per image with clusterregistry, the mission's claim.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from clusterregistry_sandbox.loading import run_load
from clusterregistry_sandbox.systems import System, SystemOptions


async def _one(root: Path, *, services: list[str] | None, size: tuple[int, int, int]) -> dict[
    str, Any
]:
    deployments, replicas, images = size
    nodes = max(3, -(-deployments * replicas // 100))  # below 110 pods per node
    system = System(root, SystemOptions(services=services, nodes=nodes))
    await system.start()
    try:
        result = await run_load(system, deployments=deployments, replicas=replicas,
                                images=images, timeout=1800, expect_edge=services is None)
        return result.as_dict()
    finally:
        await system.stop()


async def sandbox_load(*, quick: bool = False) -> dict[str, Any]:
    size = (10, 2, 4) if quick else (200, 5, 50)
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
        baseline = await _one(Path(tmp) / "baseline", services=[], size=size)
        loaded = await _one(Path(tmp) / "with", services=None, size=size)
    return {
        "deployments": size[0], "pods": size[0] * size[1], "images": size[2],
        "nodes": max(3, -(-size[0] * size[1] // 100)),
        "with_clusterregistry": loaded,
        "baseline_direct_pulls": baseline,
        "time_ratio": round(loaded["seconds_to_running"] / baseline["seconds_to_running"], 2),
        "artifact_store_pulls_ratio": round(
            loaded["artifact_store_pulls"] / max(1, baseline["artifact_store_pulls"]), 4),
    }
