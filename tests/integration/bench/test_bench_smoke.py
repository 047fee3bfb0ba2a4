"""The benchmarks still run and measure what they claim (sizes only: speed is never asserted)."""

from __future__ import annotations

import pytest

from bench import kubesim_scale

pytestmark = pytest.mark.integration


async def test_store_bench_creates_and_lists_every_pod() -> None:
    result = await kubesim_scale.store(quick=True)
    assert result["pods"] == 2_000
    # 2,000 pods over 100 app labels and 3 nodes: app-7 on node-2 is every 300th pod or so
    expected = sum(1 for i in range(2_000) if i % 100 == 7 and i % 3 + 1 == 2)
    assert result["selected"] == expected
    assert result["ratio_kubesim_to_baseline"] > 0


async def test_watch_bench_delivers_every_event_to_every_watcher() -> None:
    result = await kubesim_scale.watch(quick=True)
    assert result["all_delivered"] is True
    assert result["watchers"] == 4
    assert result["baseline_events_per_s_per_watcher"] > 0
