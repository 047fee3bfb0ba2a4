"""The mirror benchmark still runs and measures what it claims (sizes only: speed is never
asserted)."""

from __future__ import annotations

import pytest

from bench import mirror
from clusterregistry import config

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

    # whole processes (issue 16): both tools ran as processes, each a CPU figure of its own
    whole = result["whole_processes"]
    assert whole["rounds"] == 1
    for tool in ("clusterregistry_copy", "skopeo_copy"):
        assert whole[tool]["seconds"] > 0 and whole[tool]["cpu_seconds"] > 0
    assert result["cli_wall_ratio"] == whole["cli_wall_ratio"] > 0
    assert result["cli_cpu_ratio"] == whole["cli_cpu_ratio"] > 0
    assert result["goals"]["cli_wall_ratio"] == ">= 1.2"

    # the flaky link cut every connection a quarter of a layer in: each tool either copied
    # the image (a ratio of at least the whole image's bytes) or failed and says why
    flaky = result["flaky_link"]
    assert flaky["cut_every_bytes"] == (2 << 20) // 4
    for tool, key in (("clusterregistry", "flaky_source_bytes_ratio"),
                      ("skopeo", "skopeo_flaky_source_bytes_ratio")):
        run = flaky[tool]
        assert run["source_bytes"] > 0 and run["cuts"] >= 1
        if run["ok"]:
            assert result[key] == flaky[key] >= 1.0 and f"{key}_reason" not in result
        else:
            assert result[key] is None and "failed through the flaky link" in result[
                f"{key}_reason"]

    # the rate limit is measured once the setting exists, and says so until then
    has_setting = "max_bytes_per_second" in config.MirrorSettings.__struct_fields__
    if has_setting:
        assert result["rate_limit_error"] is not None or result["rate_limit_error_reason"]
    else:
        assert result["rate_limit_error"] is None
        assert "maxBytesPerSecond" in result["rate_limit_error_reason"]
