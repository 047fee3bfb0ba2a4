"""The fault proxy's rates: over the whole transfer, and sustained (after the buffers fill)."""

from __future__ import annotations

from clusterregistry_sandbox.faults import FaultProxy


def test_the_sustained_rate_leaves_out_the_buffers_filling_at_the_start() -> None:
    proxy = FaultProxy("127.0.0.1", 1, timeline=True)
    # 40 bytes at once (buffers filling), then 10 bytes a second for 6 seconds
    proxy._count("down", 40)
    proxy.down_timeline[-1] = (0.0, 40)
    for second in range(1, 7):
        proxy.bytes_down += 10
        proxy.down_timeline.append((float(second), proxy.bytes_down))
    proxy.first_down_at, proxy.last_down_at = 0.0, 6.0
    assert proxy.down_rate() == 100 / 6
    assert proxy.steady_down_rate() == 10.0


def test_without_a_timeline_there_is_no_sustained_rate_and_nothing_is_kept() -> None:
    proxy = FaultProxy("127.0.0.1", 1)
    for _ in range(1000):
        proxy._count("down", 10)
    assert proxy.down_timeline == []
    assert proxy.steady_down_rate() is None
    assert proxy.bytes_down == 10_000
