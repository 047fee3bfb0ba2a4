"""Starting a service: its command line, identity, settings, logs, metrics registry, signals.

Every clusterregistry process starts the same way, so the way lives here once and
`cmd/<name>.py` is a docstring and `sys.exit(run(SERVICE))`. What differs between
services is declared once, next to their `serve`, as a `Service`: its name, whether it
talks to Kubernetes (then it takes `--kubeconfig`) and what its identity names (then it
takes `--identity`).

The command line is the same for every process (`--config`, `--kubeconfig`,
`--identity`; a Deployment or the sandbox passes all three), but `--help` shows only
the flags the service uses; one it does not use is accepted and ignored, so one
launcher starts every process.

The order of a start: logs configured (JSON unless a terminal), settings loaded and
validated (a `ConfigError` ends the process with exit code 2 and one line naming the
key: restarting cannot help), then `enableClusterRegistry`, as AOSM's key: false, and
nothing starts. The process says so once, and which key turns it on, serves its probes
(ready, so a rollout completes) and idles until stopped; a service whose absence would
hurt others declares what it does instead (the webhook answers every admission request,
allowing the pod unchanged, so a failurePolicy Fail configuration never blocks a pod).
True, and the service's `serve(settings, stop, *, metrics_registry, ...)` runs with the
process's one metrics registry (prometheus_client's default, which also carries the
process and platform collectors), until SIGTERM or SIGINT (`lifecycle.run`: exit codes).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from clusterregistry import config
from clusterregistry.config import Settings
from clusterregistry.runtime import lifecycle, logs
from clusterregistry.runtime.probes import ProbeServer

__all__ = ["ENABLE_KEY", "Serve", "Service", "identity", "idle", "parser", "run"]

log = logging.getLogger(__name__)

ENABLE_KEY = "enableClusterRegistry"

# serve(settings, stop, *, metrics_registry, [kubeconfig], [identity]) -> None
Serve = Callable[..., Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class Service:
    """What the runner needs to know about one service, declared once in its serving module."""

    name: str
    summary: str  # one line, the `--help` description
    serve: Serve
    # the service talks to Kubernetes: what for (the --kubeconfig help); None: it does not
    kubeconfig_help: str | None = None
    # the service names itself: what the name is for (the --identity help); None: it does not
    identity_help: str | None = None
    # what runs while enableClusterRegistry is false, called like `serve`; None: `idle`
    disabled: Serve | None = None


def identity() -> str:
    """This process's name: the pod's (POD_NAME, from the downward API), else host-pid."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def parser(service: Service) -> argparse.ArgumentParser:
    """The command line every process accepts; `--help` lists what `service` uses."""
    parser = argparse.ArgumentParser(prog=service.name, description=service.summary)
    parser.add_argument("--config", default=None,
                        help="settings YAML (the ConfigMap); environment variables override it")
    parser.add_argument(
        "--kubeconfig", default=None,
        help=(argparse.SUPPRESS if service.kubeconfig_help is None
              else f"{service.kubeconfig_help}; default: $KUBECONFIG or in-cluster"))
    parser.add_argument(
        "--identity", default=None,
        help=(argparse.SUPPRESS if service.identity_help is None
              else f"{service.identity_help}; default: $POD_NAME, else host-pid"))
    return parser


def run(service: Service, argv: Sequence[str] | None = None) -> int:
    """Start `service` as its process; the exit code (see `lifecycle.run`)."""
    args = parser(service).parse_args(argv)
    options: dict[str, Any] = {}
    if service.kubeconfig_help is not None:
        options["kubeconfig"] = args.kubeconfig
    if service.identity_help is not None:
        options["identity"] = args.identity
    ignored = [flag for flag, value in (("--kubeconfig", args.kubeconfig),
                                        ("--identity", args.identity))
               if value is not None and flag.removeprefix("--") not in options]

    async def main(stop: asyncio.Event) -> None:
        logs.configure()
        settings = config.load(args.config)
        for flag in ignored:
            log.debug("%s: %s ignored: %s does not use it", service.name, flag, service.name)
        serve = service.serve
        if not settings.enable_cluster_registry:
            log.warning("%s: the cluster registry is disabled (%s: false), so nothing starts; "
                        "set %s: true in the settings (or CLUSTERREGISTRY_%s=true) to run it",
                        service.name, ENABLE_KEY, ENABLE_KEY, ENABLE_KEY.upper(),
                        extra=logs.fields(disabled=True))
            serve = service.disabled or idle
        await serve(settings, stop, metrics_registry=REGISTRY, **options)

    return lifecycle.run(main, name=service.name)


async def idle(settings: Settings, stop: asyncio.Event, *,
               metrics_registry: CollectorRegistry = REGISTRY, **_: Any) -> None:
    """A disabled service: its probes (ready: there is nothing to wait for), until `stop`."""
    async with ProbeServer(settings.probe_host, settings.probe_port,
                           registry=metrics_registry):
        await stop.wait()
