"""GC's world: a real nats-server, a real edge registry, the tracker's and reconciler's KV
records written as they would write them, and checks with independent tools (skopeo, du)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from prometheus_client import CollectorRegistry

from clusterregistry import references, subjects
from clusterregistry.bus.connecting import Bus, connect
from clusterregistry.bus.fencing import Fence
from clusterregistry.bus.streams import ensure_bucket
from clusterregistry.config import GcSettings
from clusterregistry.gc.collecting import Collector
from clusterregistry.gc.metrics import GcMetrics
from clusterregistry.gc.scheduling import Schedule
from clusterregistry.gc.sweeping import SubprocessSweeper
from clusterregistry.kube.artifacts import Artifacts
from clusterregistry.oci.registries import RegistryClient
from clusterregistry.schemas import ArtifactRecord, OwnerRecord, encode
from clusterregistry_sandbox.images import ImageBuilder, SkopeoError, skopeo_copy
from clusterregistry_sandbox.natsservers import NatsServer
from clusterregistry_sandbox.registries import Registry, find_docker_registry
from clusterregistry_sandbox.supervising import run_command
from clusterregistry_sandbox.uploading import upload

SOURCE_REGISTRY = "src.example.io"


@dataclass
class Image:
    source: str  # canonical
    name: str  # artifact name
    local: references.Reference
    digest: str
    children: tuple[str, ...]
    blobs: tuple[str, ...]

    @property
    def repository(self) -> str:
        return self.local.path


@dataclass
class GcWorld:
    nats: NatsServer
    registry: Registry
    bus: Bus
    observer: JetStreamContext  # the test's own nats-py client: it reads the GC's events
    # raw buckets, written as the tracker (refs) and the reconciler (records) would
    refs: KeyValue
    records: KeyValue
    client: RegistryClient
    builder: ImageBuilder
    tmp: Path
    images: dict[str, Image] = field(default_factory=dict)
    owners: dict[str, set[str]] = field(default_factory=dict)  # source -> owner uids

    def settings(self, **overrides: Any) -> GcSettings:
        values: dict[str, Any] = {
            "grace_period_seconds": 0.0,
            "lock_ttl_seconds": 2.0,
            "writer_wait_seconds": 20.0,
            "storage_path": str(self.registry.root_dir),
            "registry_config_path": str(self.registry.config_path),
            "usage_source": "blobs",
        }
        values.update(overrides)
        return GcSettings(**values)

    def collector(self, *, threshold: float = 0.0, storage_bytes: int = 1 << 30,
                  artifacts: Artifacts | None = None, metrics: GcMetrics | None = None,
                  holder: str = "gc-test", **overrides: Any) -> Collector:
        settings = self.settings(**overrides)
        return Collector(
            bus=self.bus,
            fence=Fence(self.bus, ttl_seconds=settings.lock_ttl_seconds, holder=holder,
                        poll_interval=0.05),
            registry=self.client, settings=settings,
            schedule=Schedule("0 0 * * *", threshold), storage_bytes=storage_bytes,
            sweeper=SubprocessSweeper(binary=find_docker_registry(),
                                      config_path=str(self.registry.config_path),
                                      timeout=120),
            artifacts=artifacts, metrics=metrics or GcMetrics(CollectorRegistry()),
            holder=holder)

    async def add(self, source: str, *, platforms: Sequence[str] = ("linux/amd64",),
                  referenced: bool = True, unreferenced_for: float = 3600.0,
                  layer_sizes: Sequence[int] = (4096,), seed: int | None = None,
                  phase: str = "Available", same_as: str | None = None) -> Image:
        """Mirror `source` into the edge registry as the mirror would, and write its records
        as the tracker (an owner using it, when `referenced`) and the reconciler would.

        Images differ by `seed` (default: a new one each) and by `same_as` or not."""
        ref = references.parse(source).with_default_tag()
        canonical = str(ref)
        local = references.to_local(ref, self.registry.host)
        # `same_as`: the very same image content as another source (same manifests)
        built = self.builder.build((same_as or canonical).replace("/", "_"),
                                   tag=ref.tag or "latest",
                                   platforms=platforms, layer_sizes=layer_sizes,
                                   seed=seed if seed is not None else len(self.images) + 1,
                                   index=len(platforms) > 1)
        await upload(self.client, built, local.path, ref.tag)
        image = Image(source=canonical, name=references.artifact_name(ref), local=local,
                      digest=built.digest,
                      children=tuple(m.digest for m in built.manifests) if built.is_index
                      else (), blobs=tuple(b.digest for b in built.blobs))
        self.images[canonical] = image
        await self.write_record(image, phase=phase,
                                unreferenced_since=0.0 if referenced
                                else time.time() - unreferenced_for)
        if referenced:
            await self.reference(canonical)
        return image

    async def write_record(self, image: Image, *, phase: str = "Available",
                           unreferenced_since: float = 0.0) -> None:
        record = ArtifactRecord(name=image.name, source=image.source, local=str(image.local),
                                phase=phase, digest=image.digest,  # type: ignore[arg-type]
                                unreferenced_since=unreferenced_since, updated=time.time())
        await self.records.put(image.name, encode(record))

    async def reference(self, source: str, owner: str | None = None) -> str:
        name = references.artifact_name(references.parse(source))
        uid = owner or f"owner-{sum(map(len, self.owners.values()))}-{name}"
        self.owners.setdefault(source, set()).add(uid)
        await self.refs.put(uid, encode(OwnerRecord(
            uid=uid, kind="ReplicaSet", namespace="default", name=uid, images=[source])))
        return uid

    async def unreference(self, source: str, *, unreferenced_for: float = 3600.0) -> None:
        """The owners go (tracker) and the reconciler marks the artifact unreferenced."""
        for uid in self.owners.pop(source, set()):
            await self.refs.delete(uid)
        image = self.images[source]
        record = await self.record(image.name)
        if record is not None:
            await self.records.put(image.name, encode(msgspec.structs.replace(
                record, unreferenced_since=time.time() - unreferenced_for)))

    async def record(self, name: str) -> ArtifactRecord | None:
        try:
            entry = await self.records.get(name)
        except Exception:
            return None
        return msgspec.json.decode(entry.value or b"", type=ArtifactRecord)

    async def pullable(self, image: Image) -> bool:
        """skopeo copies every platform of it, verifying every blob's digest."""
        target = self.tmp / "pulled" / f"{image.name}-{time.monotonic_ns()}"
        target.parent.mkdir(exist_ok=True)
        try:
            await skopeo_copy(str(image.local), f"oci:{target}:x", src_tls_verify=False,
                              timeout=60)
        except SkopeoError:
            return False
        return True

    async def manifest_exists(self, repository: str, digest: str) -> bool:
        return await self.client.head_manifest(repository, digest) is not None

    async def blob_exists(self, digest: str) -> bool:
        path = (self.registry.root_dir / "docker" / "registry" / "v2" / "blobs" / "sha256"
                / digest[7:9] / digest[7:] / "data")
        return await asyncio.to_thread(path.exists)

    async def du(self) -> int:
        """`du -sb` of the registry's storage: the independent measure of space."""
        result = await run_command(["du", "-sb", str(self.registry.root_dir)], timeout=60)
        assert result.ok, result.output
        return int(result.output.split()[0])

    async def events(self) -> list[dict[str, Any]]:
        info = await self.observer.stream_info(subjects.GC_STREAM)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await self.observer.get_msg(subjects.GC_STREAM, seq)
            out.append(msgspec.json.decode(msg.data or b"{}"))
        return out


@pytest.fixture
async def gc_world(nats_server: NatsServer, registry: Registry, tmp_path: Path
                   ) -> AsyncIterator[GcWorld]:
    bus = await connect([nats_server.url], name="gc-test")
    observer = await nats.connect(nats_server.url)
    client = RegistryClient(registry.host, plain_http=True, actions="*")
    try:
        # the buckets as the services make them, then opened as a plain KV client
        await ensure_bucket(bus, name=subjects.REFS_BUCKET)
        await ensure_bucket(bus, name=subjects.ARTIFACTS_BUCKET)
        js = observer.jetstream()
        yield GcWorld(nats=nats_server, registry=registry, bus=bus, observer=js,
                      refs=await js.key_value(subjects.REFS_BUCKET),
                      records=await js.key_value(subjects.ARTIFACTS_BUCKET), client=client,
                      builder=ImageBuilder(tmp_path / "images", seed=0), tmp=tmp_path)
    finally:
        await client.close()
        await observer.close()
        await bus.close()
