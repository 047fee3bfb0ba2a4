"""Fixtures: a TCP fault proxy (cuts, latency, a bandwidth cap) in front of any server.

The proxy itself lives in the sandbox's distribution (`clusterregistry_sandbox.faults`),
since `sandbox up --flaky-link` runs it and a sandbox wheel cannot import tests/; this
module re-exports it and gives tests a factory that stops every proxy it started.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from clusterregistry_sandbox.faults import FaultProxy, Faults, TokenBucket, parse_faults

__all__ = ["FaultProxy", "Faults", "StartProxy", "TokenBucket", "fault_proxy", "parse_faults"]

StartProxy = Callable[..., Awaitable[FaultProxy]]


@pytest.fixture
async def fault_proxy() -> AsyncIterator[StartProxy]:
    """`await fault_proxy(target_port, Faults(...), target_host="127.0.0.1")`: a started proxy
    on a random 127.0.0.1 port; every one is stopped at teardown."""
    started: list[FaultProxy] = []

    async def start(target_port: int, faults: Faults | None = None, *,
                    target_host: str = "127.0.0.1") -> FaultProxy:
        proxy = FaultProxy(target_host, target_port, faults)
        await proxy.start()
        started.append(proxy)
        return proxy

    try:
        yield start
    finally:
        for proxy in started:
            await proxy.stop()
