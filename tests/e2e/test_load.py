"""Load at the issue's size: 200 Deployments with 1,000 pods over 50 images, created at once,
all Running from the edge registry, each image pulled from the artifact store once (counted in
its own access log). About 40 s on this 2-core machine; `python -m bench sandbox_load` measures
the same load beside a baseline where the pods pull from the artifact store directly."""

from __future__ import annotations

import pytest

from clusterregistry_sandbox.loading import run_load
from tests.e2e.conftest import SystemFactory

pytestmark = pytest.mark.e2e


async def test_a_thousand_pods_over_fifty_images_at_once(make_system: SystemFactory) -> None:
    # ten nodes: a kubelet takes at most 110 pods (maxPods), as kubesim's nodes do
    system = await make_system(nodes=10)
    result = await run_load(system, deployments=200, replicas=5, images=50, timeout=240)
    assert result.pods == 1000
    assert result.pods_from_edge == 1000
    assert result.artifacts_available == 50
    # the mission's claim, on the artifact store's own access log: one pull per image
    assert sorted(result.pulls_per_image.values()) == [1] * 50, result.pulls_per_image
