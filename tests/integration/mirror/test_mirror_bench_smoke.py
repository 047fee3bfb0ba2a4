"""The mirror benchmark still runs and measures what it claims (sizes only: speed is never
asserted)."""

from __future__ import annotations

import pytest

from bench import mirror

pytestmark = pytest.mark.integration


async def test_mirror_bench_copies_both_images_with_every_tool() -> None:
    result = await mirror.mirror(quick=True)
    images = result["images"]
    assert sorted(images) == ["large_4x2MiB", "many_40x0.0625MiB"]
    for shape, blobs, size in (("large_4x2MiB", 5, 8 << 20), ("many_40x0.0625MiB", 41, 40 << 16)):
        image = images[shape]
        # every layer and the config, all copied (the bench checks digests and counts)
        assert image["blobs"] == blobs and image["bytes"] > size
        for tool in ("clusterregistry", "clusterregistry_registry_verified", "skopeo",
                     "sha256", "source_read"):
            assert image[tool]["seconds"] > 0
        assert image["ratio_vs_skopeo"] > 0 and image["cpu_ratio_vs_skopeo"] > 0
        assert image["profile"]["top_own_time"]
        for tool in ("clusterregistry", "clusterregistry_registry_verified", "skopeo"):
            waits = image[tool]["machine_waits_core_seconds"]
            assert sorted(waits) == ["idle", "iowait"] and min(waits.values()) >= 0
        budget = image["target_budget_core_seconds"]
        # what this process and the waits took is its CPU plus the machine's idle time
        assert budget["copier_and_waits_now"] >= image["clusterregistry"]["cpu_seconds"]["copier"]
        assert budget["sha256_pass_alone"] == image["sha256"]["seconds"]
