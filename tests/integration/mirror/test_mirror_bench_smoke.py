"""The mirror benchmark still runs and measures what it claims (sizes only: speed is never
asserted)."""

from __future__ import annotations

import pytest

from bench import mirror

pytestmark = pytest.mark.integration


async def test_mirror_bench_copies_both_images_with_every_tool() -> None:
    result = await mirror.mirror(quick=True)
    images = result["images"]
    assert sorted(images) == ["large_4x8MiB", "many_40x0.25MiB"]
    for shape, blobs, size in (("large_4x8MiB", 5, 32 << 20), ("many_40x0.25MiB", 41, 10 << 20)):
        image = images[shape]
        # every layer and the config, all copied (the bench checks digests and counts)
        assert image["blobs"] == blobs and image["bytes"] > size
        for tool in ("clusterregistry", "clusterregistry_registry_verified", "skopeo",
                     "sha256", "source_read"):
            assert image[tool]["seconds"] > 0
        assert image["ratio_vs_skopeo"] > 0 and image["profile"]["top_own_time"]
