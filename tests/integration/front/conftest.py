"""A front's world: the artifact store (TLS, basic auth), the edge registry behind the front,
a real nats-server, and fronts run in-process by their own `serve()` on random ports."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from clusterregistry import config
from clusterregistry.config import Settings
from clusterregistry.front import serving
from clusterregistry_sandbox.natsservers import NatsServer
from clusterregistry_sandbox.registries import Registry
from clusterregistry_sandbox.supervising import free_port

# distribution's access log (combined format): one line per request, with its status
_ACCESS = re.compile(r'"(?P<method>GET|HEAD|PUT|POST|PATCH|DELETE) (?P<uri>/v2/[^ ]*) HTTP/[0-9.]+"'
                     r' (?P<status>[0-9]{3}) ')


def source_requests(store: Registry, method: str = "GET") -> Counter[str]:
    """The artifact store's access log: requests answered 2xx by URI, for one method (a 401
    challenge before the authorized request is no fetch)."""
    counts: Counter[str] = Counter()
    if not store.log_path.exists():
        return counts
    for line in store.log_path.read_text(errors="replace").splitlines():
        match = _ACCESS.search(line)
        if match and match["method"] == method and match["status"].startswith("2"):
            counts[match["uri"]] += 1
    return counts


@dataclass
class Front:
    settings: Settings
    port: int
    probe_port: int
    metrics: CollectorRegistry
    stop: asyncio.Event
    task: asyncio.Task[None]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.get_sample_value(name, labels) or 0.0


@dataclass
class FrontWorld:
    tmp: Path
    store: Registry
    edge: Registry
    nats: NatsServer | None
    local_registry: str = ""
    fronts: list[Front] = field(default_factory=list)

    def settings(self, **overrides: Any) -> Settings:
        user, password = self.store.credentials or ("", "")
        mirror: dict[str, Any] = {
            "registries": [{"host": self.store.host, "plainHttp": not self.store.tls,
                            "caFile": str(self.store.ca_path or ""),
                            "username": user, "password": password}],
            "retryAttempts": 1}
        mirror.update(overrides.pop("mirror", {}))
        # the first front answers at localRegistry; the others on ports of their own
        port = (int(self.local_registry.rsplit(":", 1)[1]) if not self.fronts
                else free_port())
        front: dict[str, Any] = {"host": "127.0.0.1", "port": port,
                                 "spoolDir": str(self.tmp / f"spool-{len(self.fronts)}"),
                                 "sourceTimeoutSeconds": 5}
        front.update(overrides.pop("front", {}))
        tree: dict[str, Any] = {
            "enableClusterRegistry": True,
            "localRegistry": self.local_registry,
            "registryEndpoint": self.edge.host,
            "probeHost": "127.0.0.1",
            "probePort": 0,
            "nats": {"servers": [self.nats.url] if self.nats else ["nats://127.0.0.1:1"]},
            "gc": {"lockTtlSeconds": 3},
            "mirror": mirror,
            "front": front,
            **overrides,
        }
        settings = msgspec.convert(tree, Settings, strict=False)
        config.validate(settings)
        return settings

    async def start_front(self, **overrides: Any) -> Front:
        """A front on its own port; all fronts of a world answer for one localRegistry name."""
        settings = self.settings(**overrides)
        metrics = CollectorRegistry()
        stop = asyncio.Event()
        started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        name = f"front-{len(self.fronts)}"
        task = asyncio.create_task(serving.serve(
            settings, stop, identity=name, probe_host="127.0.0.1", metrics_registry=metrics,
            started=started), name=name)
        done, _ = await asyncio.wait({task, started}, timeout=30,
                                     return_when=asyncio.FIRST_COMPLETED)
        if started not in done:
            stop.set()
            await task  # raises what stopped it
            raise AssertionError("the front did not start within 30s")
        front = Front(settings, started.result(), 0, metrics, stop, task)
        self.fronts.append(front)
        return front

    async def stop_front(self, front: Front) -> None:
        front.stop.set()
        await asyncio.wait_for(front.task, 30)

    async def close(self) -> None:
        for front in self.fronts:
            if not front.task.done():
                front.stop.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(front.task, 30)


@pytest.fixture
async def front_world(tmp_path: Path, secure_registry: Registry, registry: Registry,
                      nats_server: NatsServer) -> AsyncIterator[FrontWorld]:
    """The artifact store (`store`, TLS + auth), the edge registry (`edge`), NATS; fronts
    are started by the test. `local_registry` is the name pods use: the first front's."""
    world = FrontWorld(tmp=tmp_path, store=secure_registry, edge=registry, nats=nats_server,
                       local_registry=f"127.0.0.1:{free_port()}")
    try:
        yield world
    finally:
        await world.close()
