"""The relay benchmark still runs and measures what it claims (sizes only: speed is never
asserted)."""

from __future__ import annotations

import pytest

from bench import relay

pytestmark = pytest.mark.integration


async def test_relay_bench_delivers_every_pod_on_both_paths_and_the_baseline() -> None:
    result = await relay.relay(quick=True)
    assert result["pods"] == 2_000
    assert result["path"] == "watch-replay"
    assert result["all_delivered"] is True
    # the replay and the baseline stored the very same messages
    assert result["same_messages"] is True
    assert result["relay_stream_messages"] == result["raw_stream_messages"] == 2_000
    # the relist path adds its begin and end markers
    assert result["relist_stream_messages"] == 2_002
    assert result["batch_size"] > 0
    assert result["relay_events_per_s"] > 0
    assert result["raw_publish_async_per_s"] > 0
    assert result["ratio"] > 0
