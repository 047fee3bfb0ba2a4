"""The registry front benchmark still runs and measures what it claims (sizes only: speed is
never asserted). What it asserts of the front is behaviour: one fetch from the source per
manifest and per blob, however many clients pull at once."""

from __future__ import annotations

from typing import Any

import pytest

from bench import front

pytestmark = pytest.mark.integration

FIGURES = ("hit_ratio_to_direct", "miss_source_bytes_ratio", "miss_time_ratio",
           "first_deploy_ratio", "miss_time_ratio_over_link", "first_deploy_ratio_over_link")


async def test_front_bench_reports_every_figure_beside_its_baseline_and_goal() -> None:
    result = await front.front(quick=True)
    assert set(FIGURES) <= set(result)
    assert set(result["goals"]) == set(FIGURES) == set(result["meets_goals"])
    assert result["cpus"] >= 1
    assert result["concurrent_pulls"] == 6
    assert "aiohttp" in result["client"] and "sha256" in result["client"]
    image = result["image"]
    assert image["layers"] == 4 and image["blobs"] == 5
    assert image["bytes"] > 4 * image["layer_payload_bytes"]

    hit = result["hit"]
    for side in ("front", "direct"):
        assert len(hit[side]["runs"]) == result["rounds"]["hit"]
        assert all(seconds > 0 for seconds in hit[side]["runs"])
    assert hit["front"]["cpu_seconds"]["front"] > 0  # the bytes went through the front
    assert result["hit_ratio_to_direct"] == hit["ratio"] > 0

    miss = result["miss"]
    for side in ("front_6", "front_1", "source_direct_1", "source_direct_6"):
        assert len(miss[side]["runs"]) == result["rounds"]["miss"]
    # six clients, one fetch: the store served the manifest and each blob exactly once, and
    # its access log and the front's own counter say the same
    assert result["miss_source_bytes_ratio"] == 1.0
    assert miss["access_log_and_metric_agree"] is True
    for counted in miss["rounds"]:
        assert counted["source_gets"] == 1 + image["blobs"]
        assert counted["most_gets_of_one_uri"] == 1
        requests = counted["front_blob_requests"]
        assert requests["miss_streamed"] == image["blobs"]
        assert requests["miss_streamed"] + requests["joined"] + requests["hit"] == (
            6 * image["blobs"])
        assert requests["miss_failed"] == 0
        assert counted["single_pull"]["source_bytes_access_log"] == (
            counted["single_pull"]["image_bytes"])
    assert result["miss_time_ratio"] == miss["time_ratio"] > 0

    # behind the link (its own process): still one fetch per manifest and blob, and a direct
    # pull over the same link as the baseline
    over_link = result["miss_over_link"]
    assert over_link["link_bytes_per_second"] > 0
    assert len(over_link["front_6"]["runs"]) == len(over_link["source_direct_1"]["runs"]) == (
        result["rounds"]["miss"])
    assert over_link["source_bytes_ratio"] == 1.0
    for counted in over_link["rounds"]:
        assert counted["source_gets"] == 1 + image["blobs"]
        assert counted["front_blob_requests"]["miss_failed"] == 0
    assert result["miss_time_ratio_over_link"] == over_link["time_ratio"] > 0

    for figure, key, rounds in (("first_deploy_ratio", "first_deploy", "deploy"),
                                ("first_deploy_ratio_over_link", "first_deploy_over_link",
                                 "deploy_over_link")):
        _check_deploys(result[key], ratio=result[figure], rounds=result["rounds"][rounds])


def _check_deploys(deployed: dict[str, Any], *, ratio: float | None,
                   rounds: int) -> None:
    if ratio is None:
        assert deployed["reason"]  # never a number it did not measure
    else:
        assert len(deployed["through_front"]) == len(deployed["direct_from_source"]) == (
            rounds) >= 1
        for through, direct in zip(deployed["through_front"], deployed["direct_from_source"],
                                   strict=True):
            assert through["pod_starts"]["pods"] == direct["pod_starts"]["pods"] == 6
            assert len(through["nodes"]) == 3
            # through the front: every pod pulled from it, with no failed pull, and the store
            # served the image once for three nodes (and the mirror)
            assert all(name.startswith("127.0.0.1:") and "/127.0.0.1_" in name
                       for name in through["images"])
            assert through["pod_starts"]["failed_pulls"] == 0
            assert through["source_bytes_ratio"] == 1.0
            assert direct["source_bytes_ratio"] >= 1.0
        assert ratio == deployed["ratio"] > 0
