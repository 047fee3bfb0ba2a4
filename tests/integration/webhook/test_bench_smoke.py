"""The webhook benchmark still runs and measures what it claims (sizes and answers only: speed
is never asserted). Needs `wrk` (Debian package), like the benchmark itself."""

from __future__ import annotations

import pytest

from bench import webhook

pytestmark = pytest.mark.integration


async def test_webhook_bench_drives_both_servers_and_checks_their_answers() -> None:
    result = await webhook.webhook(quick=True)
    checks = result["checks"]
    # the webhook really rewrote the 5 images of the realistic pod, and annotated it
    assert checks["webhook_rewrites"] == 5 and checks["webhook_images_local"] is True
    assert checks["webhook_patch_ops"] == 6
    assert checks["bare_allowed"] is True
    assert checks["review_bytes"] > 5000
    total = 0
    for scenario in ("new_images", "same_template"):
        measured = result[scenario]
        assert [level["connections"] for level in measured["levels"]] == [1, 8]
        runs = [level[name] for level in measured["levels"] for name in ("bare", "webhook")]
        runs += [measured["at_half_webhook_peak"][name] for name in ("bare", "webhook")]
        for run in runs:
            assert run["requests"] > 0 and run["non_2xx"] == 0 and run["socket_errors"] == 0
            assert 0 < run["p50_ms"] <= run["p99_ms"] <= run["max_ms"]
        assert measured["cpu_us_per_review"]["webhook"] > 0
        total += sum(level["webhook"]["requests"] for level in measured["levels"])
        total += measured["at_half_webhook_peak"]["webhook"]["requests"]
    # every review wrk counted as answered was a patched admission in the webhook's metrics
    assert result["webhook_patched_total"] >= total
