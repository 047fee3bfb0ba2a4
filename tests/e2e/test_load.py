"""Load, scaled to the test budget: 20 Deployments with 100 pods over 10 images created at once
all run from the edge registry, and each image is pulled from the artifact store once. The
issue's full size (200 Deployments, 1,000 pods, 50 images) is `python -m bench sandbox_load`:
on this 2-core machine it takes minutes, beyond what `make test` may spend."""

from __future__ import annotations

import pytest

from clusterregistry.sandbox.loading import run_load
from clusterregistry.sandbox.systems import System

pytestmark = pytest.mark.e2e


async def test_a_hundred_pods_over_ten_images_at_once(system: System) -> None:
    result = await run_load(system, deployments=20, replicas=5, images=10, timeout=240)
    assert result.pods == 100
    assert result.pods_from_edge == 100
    assert result.artifacts_available == 10
    # the mission's claim on the artifact store's own access log: one pull per image
    assert sorted(result.pulls_per_image.values()) == [1] * 10, result.pulls_per_image
