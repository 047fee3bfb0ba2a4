"""A mirror's world: a real nats-server, the artifact store and the edge registry, workers run
as tasks, requests published the way the reconciler publishes them, results read back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry

from clusterregistry import schemas, subjects
from clusterregistry.bus import ledgers
from clusterregistry.bus.connecting import Bus, connect
from clusterregistry.bus.fencing import Fence
from clusterregistry.bus.pulling import ConsumerSpec, Puller
from clusterregistry.bus.streams import publish
from clusterregistry.config import MirrorSettings, RegistryAccess
from clusterregistry.mirror.metrics import MirrorMetrics
from clusterregistry.mirror.mirroring import SecretReader, Worker
from clusterregistry.oci.clients import RegistryClients
from clusterregistry.oci.registries import RegistryClient
from clusterregistry.schemas import MirrorRequest, MirrorResult, SecretRef
from clusterregistry_sandbox.images import BuiltImage
from clusterregistry_sandbox.natsservers import NatsServer
from clusterregistry_sandbox.registries import Registry
from clusterregistry_sandbox.supervising import wait_for

# short, so a fenced request comes back quickly (nak delay: ttl/3)
FENCE_TTL = 3.0


def settings_for(source: Registry, *, with_credentials: bool = True,
                 **overrides: Any) -> MirrorSettings:
    """Mirror settings that reach the artifact store (its CA, and its user unless told not)."""
    user, password = source.credentials or ("", "")
    access = RegistryAccess(
        host=source.host, plain_http=not source.tls,
        ca_file=str(source.ca_path) if source.ca_path else "",
        username=user if with_credentials else "", password=password if with_credentials else "")
    values: dict[str, Any] = {"registries": [access], "retry_delay_seconds": 0.2,
                              "ack_wait_seconds": 5.0, "retry_attempts": 1, **overrides}
    return MirrorSettings(**values)


@dataclass
class MirrorWorld:
    nats: NatsServer
    local_registry: str
    bus: Bus | None = None
    _client: Client | None = None  # the test's own nats-py client, to look at consumers
    workers: list[tuple[Worker, asyncio.Task[None], asyncio.Event]] = field(default_factory=list)
    _cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _results: Puller | None = None
    results: list[MirrorResult] = field(default_factory=list)

    async def start(self) -> None:
        self.bus = await connect([self.nats.url], name="test-mirror")
        self._client = await nats.connect(self.nats.url)

    @property
    def observer(self) -> JetStreamContext:
        """A bare nats-py JetStream client, to look at consumers as an outside client would."""
        assert self._client is not None
        return self._client.jetstream()

    async def add_worker(self, settings: MirrorSettings, *, name: str = "worker-1",
                         fence: bool = True, secrets: SecretReader | None = None,
                         local_registry: str | None = None) -> Worker:
        bus = await connect([self.nats.url], name=name)
        clients = RegistryClients(settings, local_registry=local_registry or self.local_registry)
        kv = await ledgers.ensure_bucket(bus, ttl_seconds=settings.blob_ledger_ttl_seconds)
        gate = Fence(bus, ttl_seconds=FENCE_TTL, holder=name) if fence else None
        worker = Worker(bus=bus, settings=settings, clients=clients, worker_id=name,
                        ledger=ledgers.KvBlobLedger(kv, holder=name), fence=gate,
                        secrets=secrets, metrics=MirrorMetrics(CollectorRegistry()))
        await worker.prepare()
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop), name=name)
        self.workers.append((worker, task, stop))

        async def cleanup() -> None:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)
            await clients.close()
            await bus.close()

        self._cleanups.append(cleanup)
        return worker

    async def request(self, artifact: str, source: str, destination: str, *,
                      generation: int = 1, pull_secrets: list[SecretRef] | None = None,
                      platforms: list[str] | None = None) -> None:
        assert self.bus is not None
        message = MirrorRequest(artifact=artifact, generation=generation, source=source,
                                destination=destination, pull_secrets=pull_secrets or [],
                                platforms=platforms or [])
        await publish(
            self.bus, subjects.MIRROR_REQUEST, schemas.encode(message),
            headers={subjects.MSG_ID_HEADER: subjects.mirror_msg_id(artifact, generation)})

    async def _pull_results(self) -> None:
        assert self.bus is not None
        if self._results is None:
            # the reconciler's part: the one consumer of the results in the work queue
            results = Puller(self.bus, ConsumerSpec(
                stream=subjects.MIRROR_STREAM, durable="test-results",
                filter_subject=subjects.MIRROR_RESULT_ALL))
            await results.start()
            self._results = results
        for msg in await self._results.fetch(100, timeout=0.2):
            self.results.append(msgspec.json.decode(msg.data, type=MirrorResult))
            await msg.ack()

    async def wait_results(self, count: int, *, timeout: float = 60.0) -> list[MirrorResult]:
        async def enough() -> list[MirrorResult] | None:
            await self._pull_results()
            return self.results if len(self.results) >= count else None

        return await wait_for(enough, timeout=timeout, description=f"{count} mirror results")

    async def stop(self) -> None:
        for cleanup in reversed(self._cleanups):
            await cleanup()
        if self._results is not None:
            await self._results.stop()
        if self.bus is not None:
            # no drain: the test's own subscriptions hold nothing worth delivering
            await self.bus.close(drain_timeout=0)
        if self._client is not None:
            await self._client.close()


@pytest.fixture
async def mirror_world(nats_server: NatsServer, registry: Registry
                       ) -> AsyncIterator[MirrorWorld]:
    world = MirrorWorld(nats=nats_server, local_registry=registry.host)
    await world.start()
    try:
        yield world
    finally:
        await world.stop()


async def upload_image(client: RegistryClient, repository: str, image: BuiltImage) -> None:
    """Put a built image into a registry with plain monolithic uploads (fast test set-up)."""
    for manifest in image.manifests:
        for blob in manifest.blobs:
            if await client.head_blob(repository, blob.digest) is None:
                _, location = await client.start_upload(repository)
                await client.put_blob(location, repository=repository, digest=blob.digest,
                                      size=blob.size, body=image.read_blob(blob.digest))
        await client.put_manifest(repository, manifest.digest, media_type=manifest.media_type,
                                  data=image.read_blob(manifest.digest))
    await client.put_manifest(repository, image.tag, media_type=image.media_type,
                              data=image.read_blob(image.digest))
