"""The kubelet pull benchmark still runs and measures what it claims (sizes only: speed is
never asserted)."""

from __future__ import annotations

import pytest

from bench import kubelet

pytestmark = pytest.mark.integration


async def test_kubelet_bench_pulls_both_images_and_measures_the_bare_baseline() -> None:
    result = await kubelet.kubelet(quick=True)
    assert result["concurrent_downloads"] == 3
    assert result["runs"] >= 2
    assert set(result["images"]) == {"large_4x1MiB", "many_8x0.125MiB"}
    # the config and every layer, fetched by both
    assert result["images"]["large_4x1MiB"]["blobs"] == 5
    assert result["images"]["many_8x0.125MiB"]["blobs"] == 9
    assert result["images"]["large_4x1MiB"]["bytes"] > 4 << 20
    for image in result["images"].values():
        for side in ("ours", "bare"):
            assert len(image[side]["runs"]) == result["runs"]
            assert all(seconds > 0 for seconds in image[side]["runs"])
            assert image[side]["MiB_per_s"] > 0
            assert image[side]["cpu_seconds_per_pull"]["self"] > 0
        assert image["sha256"]["MiB_per_s"] > 0
        assert image["pull_ratio_to_bare"] > 0
        assert len(image["paired_ratios"]) == result["runs"]
    assert result["pull_ratio_to_bare"] == min(
        image["pull_ratio_to_bare"] for image in result["images"].values())
    assert result["goal"] == 0.8
    assert result["meets_goal"] is (result["pull_ratio_to_bare"] >= 0.8)
