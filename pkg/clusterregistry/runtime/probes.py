"""The HTTP endpoints the kubelet and Prometheus poll: /healthz, /readyz, /metrics.

Liveness and readiness mean different things: a process whose loop answers
is alive, and restarting it would not help; it is ready only when what it
depends on (NATS, the API server, the registry) is usable, so traffic and
work are held back until then. Each service registers the readiness checks
it knows about; this module only answers for them. The server runs on the
process's own event loop, so a blocked loop fails the liveness probe too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

__all__ = ["Check", "ProbeServer"]

log = logging.getLogger(__name__)

Check = Callable[[], bool]


class ProbeServer:
    """An aiohttp server for the probes and metrics; `port=0` binds a free port (see `.port`)."""

    def __init__(self, host: str, port: int, *, registry: CollectorRegistry = REGISTRY) -> None:
        self.host = host
        self._requested_port = port
        self._registry = registry
        self._checks: dict[str, Check] = {}
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    def add_check(self, name: str, fn: Check) -> None:
        """Register a readiness check; /readyz answers 200 only while every check returns True."""
        if name in self._checks:
            raise ValueError(f"readiness check {name!r} is already registered")
        self._checks[name] = fn

    @property
    def port(self) -> int:
        """The bound port; only known once started."""
        if self._port is None:
            raise RuntimeError("ProbeServer is not started")
        return self._port

    def failing_checks(self) -> list[str]:
        """Names of the checks that return False or raise, in registration order."""
        failing = []
        for name, fn in self._checks.items():
            try:
                ok = fn()
            except Exception:
                log.warning("readiness check %s raised", name, exc_info=True)
                ok = False
            if not ok:
                failing.append(name)
        return failing

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("ProbeServer is already started")
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self._requested_port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        log.info("probes listening on %s:%d", self.host, self._port)

    async def stop(self) -> None:
        """Close the listener; safe to call twice or before `start`."""
        runner, self._runner, self._port = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> ProbeServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, _: web.Request) -> web.Response:
        failing = self.failing_checks()
        if failing:
            return web.Response(status=503, text="not ready: " + ", ".join(failing))
        return web.Response(text="ok")

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
