"""A webhook's world: the webhook served in-process over real HTTPS (`serving.serve`), with a
serving certificate from the session CA, and helpers to register it with kubesim."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry

from clusterregistry import config
from clusterregistry.webhook.serving import WebhookServer, serve
from kubesim.certificates import CertificateAuthority


@dataclass
class RunningWebhook:
    server: WebhookServer
    settings: config.Settings
    registry: CollectorRegistry
    stop: asyncio.Event
    task: asyncio.Task[None]
    cert_file: Path
    key_file: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}/mutate"

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def shutdown(self) -> None:
        self.stop.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self.task, 20)


def webhook_settings(*, local_registry: str, namespace: str = "clusterregistry",
                     nats_servers: list[str] | None = None, **webhook: Any) -> config.Settings:
    tree: dict[str, Any] = {"localRegistry": local_registry, "namespace": namespace,
                            "probePort": 0, "webhook": {"host": "127.0.0.1", "port": 0, **webhook}}
    if nats_servers is not None:
        tree["nats"] = {"servers": nats_servers}
    settings = msgspec.convert(tree, config.Settings)
    config.validate(settings)
    return settings


@contextlib.asynccontextmanager
async def running_webhook(tmp_path: Path, ca: CertificateAuthority, *, local_registry: str,
                          issue: bool = True, nats_servers: list[str] | None = None,
                          **webhook: Any) -> AsyncIterator[RunningWebhook]:
    """The webhook as `serve` runs it; a certificate for 127.0.0.1 unless `issue=False`."""
    folder = tmp_path / "webhook-tls"
    folder.mkdir(exist_ok=True)
    cert_file, key_file = folder / "tls.crt", folder / "tls.key"
    if issue:
        ca.issue(common_name="clusterregistry-webhook", hosts=["127.0.0.1"]).write(folder, "tls")
    settings = webhook_settings(local_registry=local_registry, nats_servers=nats_servers,
                                **{"tlsCertFile": str(cert_file), "tlsKeyFile": str(key_file),
                                   "tlsReloadSeconds": 0.2, **webhook})
    registry = CollectorRegistry()
    stop = asyncio.Event()
    started: asyncio.Future[WebhookServer] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, stop, probe_host="127.0.0.1",
                                     metrics_registry=registry,
                                     started=started, freeze_heap=False))
    done, _ = await asyncio.wait({started, task}, timeout=30,
                                 return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises what stopped it
    if started not in done:
        task.cancel()
        raise AssertionError("the webhook did not start within 30 s")
    running = RunningWebhook(started.result(), settings, registry, stop, task, cert_file,
                             key_file)
    try:
        yield running
    finally:
        await running.shutdown()


def ca_bundle(ca: CertificateAuthority) -> str:
    return base64.b64encode(ca.cert_pem).decode()


Render = Callable[..., dict[str, Any]]
