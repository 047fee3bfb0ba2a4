"""The probe server answers real HTTP: liveness, readiness that flips, metrics, a clean stop."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter

from clusterregistry.runtime.probes import ProbeServer

pytestmark = pytest.mark.integration


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def probes(registry: CollectorRegistry) -> AsyncIterator[ProbeServer]:
    async with ProbeServer("127.0.0.1", 0, registry=registry) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def url(server: ProbeServer, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


async def test_healthz_is_ok(probes: ProbeServer, http: aiohttp.ClientSession) -> None:
    assert probes.port > 0
    async with http.get(url(probes, "/healthz")) as response:
        assert response.status == 200
        assert await response.text() == "ok"


async def test_readyz_flips_from_503_to_200(
    probes: ProbeServer, http: aiohttp.ClientSession
) -> None:
    state = {"nats": False, "kube": True}
    probes.add_check("nats", lambda: state["nats"])
    probes.add_check("kube", lambda: state["kube"])

    async with http.get(url(probes, "/readyz")) as response:
        assert response.status == 503
        assert await response.text() == "not ready: nats"

    state["nats"] = True
    async with http.get(url(probes, "/readyz")) as response:
        assert response.status == 200
        assert await response.text() == "ok"


async def test_a_check_that_raises_is_failing(
    probes: ProbeServer, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> bool:
        raise OSError("socket closed")

    probes.add_check("registry", broken)
    probes.add_check("kube", lambda: False)
    async with http.get(url(probes, "/readyz")) as response:
        assert response.status == 503
        assert await response.text() == "not ready: registry, kube"
    assert any(r.exc_info and "registry" in r.getMessage() for r in caplog.records)


def test_a_check_name_is_registered_once() -> None:
    server = ProbeServer("127.0.0.1", 0)
    server.add_check("nats", lambda: True)
    with pytest.raises(ValueError, match="nats"):
        server.add_check("nats", lambda: True)


async def test_metrics_expose_the_given_registry(
    probes: ProbeServer, registry: CollectorRegistry, http: aiohttp.ClientSession
) -> None:
    Counter("test_relay_events", "Events relayed.", ["kind"], registry=registry).labels(
        kind="pod"
    ).inc(3)
    async with http.get(url(probes, "/metrics")) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
        body = await response.text()
    # the exposition format 0.0.4 names the family without _total, 1.0.0 with it
    assert re.search(r"^# TYPE test_relay_events(_total)? counter$", body, re.MULTILINE)
    assert 'test_relay_events_total{kind="pod"} 3.0' in body


async def test_no_access_log(
    probes: ProbeServer, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with http.get(url(probes, "/healthz")) as response:
        assert response.status == 200
    assert not [r for r in caplog.records if r.name.startswith("aiohttp.access")]


async def test_stop_closes_the_port(http: aiohttp.ClientSession) -> None:
    server = ProbeServer("127.0.0.1", 0)
    await server.start()
    port = server.port
    await server.stop()
    await server.stop()
    with pytest.raises(RuntimeError):
        _ = server.port
    with pytest.raises(aiohttp.ClientConnectorError):
        await http.get(f"http://127.0.0.1:{port}/healthz")
