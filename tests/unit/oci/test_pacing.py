"""The token bucket and the pacer on a fake clock: the rate holds over a long copy."""

from __future__ import annotations

import asyncio

import pytest

from clusterregistry.oci.pacing import Pacer, TokenBucket

MiB = 1 << 20


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_bucket_allows_its_burst_then_the_rate() -> None:
    bucket = TokenBucket(10 * MiB, now=0.0)
    assert bucket.burst == MiB
    assert bucket.reserve(MiB, 0.0) == 0.0  # within the burst
    assert bucket.reserve(MiB, 0.0) == pytest.approx(0.1)
    # idle time does not pile up tokens beyond the burst
    assert bucket.reserve(MiB, 100.0) == 0.0
    assert bucket.reserve(2 * MiB, 100.0) == pytest.approx(0.2)


async def test_four_concurrent_64_mib_reads_hold_the_rate_within_ten_percent() -> None:
    clock = FakeClock()
    waits: list[float] = []
    rate = 20 * MiB
    pacer = Pacer(rate, clock=clock, sleep=clock.sleep, on_wait=waits.append)
    start = clock.now

    async def read(size: int, piece: int) -> None:
        done = 0
        while done < size:
            await pacer.take("store.example", piece)
            done += piece
            await asyncio.sleep(0)  # the readers interleave as the event loop runs them

    await asyncio.gather(*(read(64 * MiB, piece) for piece in (64 * 1024, 256 * 1024,
                                                                1024 * 1024, 16 * 1024)))
    elapsed = clock.now - start
    observed = 4 * 64 * MiB / elapsed
    assert abs(observed - rate) / rate <= 0.1
    assert sum(waits) == pytest.approx(pacer.waited) and pacer.waited > 0


async def test_a_host_limit_applies_within_the_worker_limit_and_zero_is_unlimited() -> None:
    clock = FakeClock()
    pacer = Pacer(100 * MiB, {"slow.example": 10 * MiB, "free.example": 0},
                  clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(64):
        await pacer.take("slow.example", MiB)
    assert (clock.now - start) == pytest.approx(6.3, rel=0.02)  # 64 MiB at 10 MiB/s, 1 burst
    assert pacer.reserve("free.example", MiB) < 1.0  # only the worker's 100 MiB/s
    unlimited = Pacer(0, clock=clock, sleep=clock.sleep)
    assert not unlimited.limited and unlimited.reserve("any", 1 << 30) == 0.0


def test_the_settings_give_the_worker_and_host_limits_and_refuse_nonsense() -> None:
    from clusterregistry.config import (  # noqa: PLC0415
        MirrorSettings,
        RegistryAccess,
        Settings,
        validate,
    )
    from clusterregistry.errors import ConfigError  # noqa: PLC0415
    from clusterregistry.oci.clients import pacer  # noqa: PLC0415

    settings = MirrorSettings(max_bytes_per_second="10Mi", registries=[
        RegistryAccess(host="store.example", max_bytes_per_second=1_000_000)])
    paced = pacer(settings)
    assert paced.rate == 10 * MiB and paced.limited
    assert not pacer(MirrorSettings()).limited  # 0: unlimited
    for wrong in ("fast", -1):
        with pytest.raises(ConfigError, match="maxBytesPerSecond"):
            validate(Settings(mirror=MirrorSettings(max_bytes_per_second=wrong)))
