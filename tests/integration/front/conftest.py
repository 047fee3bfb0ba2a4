"""A front's world: the artifact store (TLS, basic auth), the edge registry behind the front,
a real nats-server, and fronts run in-process by their own `serve()` on random ports."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from prometheus_client import CollectorRegistry

from clusterregistry import config, subjects
from clusterregistry.bus.connecting import Bus, connect
from clusterregistry.bus.fencing import Fence
from clusterregistry.config import Settings
from clusterregistry.front import serving
from clusterregistry_sandbox.images import BuiltImage, skopeo_copy
from clusterregistry_sandbox.natsservers import NatsServer
from clusterregistry_sandbox.registries import MANIFEST_MEDIA_TYPES, Registry
from clusterregistry_sandbox.supervising import free_port, wait_for

pytestmark = pytest.mark.integration

ACCEPT_ALL = ", ".join(MANIFEST_MEDIA_TYPES)
LOCK_TTL = 3.0  # gc.lockTtlSeconds of every front: the fence bucket's TTL

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
    name: str

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def spool_dir(self) -> Path:
        return Path(self.settings.front.spool_dir)

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.get_sample_value(name, labels) or 0.0

    def requests(self, kind: str, result: str) -> float:
        return self.metric("clusterregistry_front_requests_total", kind=kind, result=result)

    def spool_files(self) -> list[Path]:
        return sorted(self.spool_dir.glob("*")) if self.spool_dir.exists() else []

    async def spool_empty(self) -> bool:
        """The spool directory holds no file and the spool_bytes gauge is back to 0."""
        return not self.spool_files() and self.metric("clusterregistry_front_spool_bytes") == 0


@dataclass
class FrontWorld:
    tmp: Path
    store: Registry
    edge: Registry
    nats: NatsServer | None
    local_registry: str = ""
    fronts: list[Front] = field(default_factory=list)
    # more names of the artifact store (links to it: `SlowLink`), configured like it
    store_aliases: list[str] = field(default_factory=list)
    # more mirror.registries entries (sources that are not the store)
    extra_registries: list[dict[str, Any]] = field(default_factory=list)
    _bus: Bus | None = None
    _fence: Fence | None = None

    async def fence(self) -> Fence:
        """The registry fence as GC sees it (holder `gc`, the world's lock TTL of 3 s)."""
        if self._fence is None:
            assert self.nats is not None
            self._bus = await connect([self.nats.url], name="test-gc")
            self._fence = Fence(self._bus, ttl_seconds=LOCK_TTL, holder="gc",
                                poll_interval=0.05)
            await self._fence.ensure()
        return self._fence

    def settings(self, **overrides: Any) -> Settings:
        user, password = self.store.credentials or ("", "")
        mirror: dict[str, Any] = {
            "registries": [{"host": host, "plainHttp": not self.store.tls,
                            "caFile": str(self.store.ca_path or ""),
                            "username": user, "password": password}
                           for host in [self.store.host, *self.store_aliases]]
            + self.extra_registries,
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
            "gc": {"lockTtlSeconds": LOCK_TTL},
            "mirror": mirror,
            "front": front,
            **overrides,
        }
        settings = msgspec.convert(tree, Settings, strict=False)
        config.validate(settings)
        return settings

    async def start_front(self, *, wait_for_nats: bool = True, **overrides: Any) -> Front:
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
        front = Front(settings, started.result(), 0, metrics, stop, task, name)
        self.fronts.append(front)
        if self.nats is not None and wait_for_nats:
            # serving starts before NATS is joined (a front must not stop pulls for want of
            # NATS); wait until it takes part in flights and read-only windows, whose
            # presence key it writes once both are set up
            fence = await self.fence()

            async def present() -> bool:
                return subjects.fence_front(name) in await fence.fronts()

            await wait_for(present, timeout=30, description=f"{name} joined NATS")
        return front

    def path(self, repository: str, *, source: str | None = None) -> str:
        """The local repository (in the edge registry, and through the front) of a source
        repository, of the artifact store unless `source` (a host:port) says otherwise."""
        return f"{(source or self.store.host).replace(':', '_')}/{repository}"

    def ref(self, repository: str, reference: str, *, front: Front | None = None,
            source: str | None = None) -> str:
        """`front/path:tag` or `front/path@digest`, for skopeo."""
        host = front.host if front is not None else self.local_registry
        separator = "@" if reference.startswith("sha256:") else ":"
        return f"{host}/{self.path(repository, source=source)}{separator}{reference}"

    async def edge_has_blobs(self, repository: str, digests: list[str], *,
                             source: str | None = None) -> bool:
        """Every blob is in the edge registry (asked directly, not through the front)."""
        path = self.path(repository, source=source)
        for digest in digests:
            if not await self.edge.blob_exists(path, digest):
                return False
        return True

    async def wait_stored(self, repository: str, digests: list[str], *,
                          source: str | None = None, timeout: float = 20.0) -> None:
        async def stored() -> bool:
            return await self.edge_has_blobs(repository, digests, source=source)

        await wait_for(stored, timeout=timeout,
                       description=f"{len(digests)} blobs stored in the edge registry")

    @staticmethod
    async def wait(predicate: Callable[[], Awaitable[Any]], description: str, *,
                   timeout: float = 20.0) -> Any:
        return await wait_for(predicate, timeout=timeout, description=description)

    async def wait_spool_empty(self, front: Front, *, timeout: float = 20.0) -> None:
        await wait_for(front.spool_empty, timeout=timeout,
                       description=f"{front.spool_dir} empty and spool_bytes 0")

    async def stop_front(self, front: Front) -> None:
        front.stop.set()
        await asyncio.wait_for(front.task, 30)

    async def close(self) -> None:
        for front in self.fronts:
            if not front.task.done():
                front.stop.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(front.task, 30)
        if self._bus is not None:
            await self._bus.close()


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


def image_digests(image: BuiltImage) -> list[str]:
    """Every blob (configs and layers) of an image, each once."""
    return [blob.digest for blob in image.blobs]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def pull(reference: str, destination: Path, *, timeout: float = 60.0) -> Path:
    """`skopeo copy --all docker://<front ref> dir:<destination>` over plain HTTP: a real
    client that verifies every digest and size it reads."""
    await skopeo_copy(reference, f"dir:{destination}", src_tls_verify=False,
                      preserve_digests=False, timeout=timeout)
    return destination


def assert_pulled(image: BuiltImage, directory: Path) -> None:
    """A skopeo `dir:` copy holds the image byte for byte: the top manifest (index or
    manifest), every platform's manifest and every blob."""
    assert (directory / "manifest.json").read_bytes() == image.read_blob(image.digest)
    if image.is_index:
        for manifest in image.manifests:
            hexdigest = manifest.digest.split(":", 1)[1]
            assert (directory / f"{hexdigest}.manifest.json").read_bytes() == \
                image.read_blob(manifest.digest)
    for digest in image_digests(image):
        assert (directory / digest.split(":", 1)[1]).read_bytes() == image.read_blob(digest), \
            f"blob {digest} differs"


def http_session(**kwargs: Any) -> aiohttp.ClientSession:
    """A plain client for precise HTTP checks: bytes as sent (no decompression)."""
    return aiohttp.ClientSession(auto_decompress=False,
                                 timeout=aiohttp.ClientTimeout(total=60), **kwargs)


def store_blob_file(store: Registry, digest: str) -> Path:
    """Where distribution's filesystem driver keeps a blob's bytes."""
    hexdigest = digest.split(":", 1)[1]
    return (store.root_dir / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexdigest[:2]
            / hexdigest / "data")


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never says a word."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()


class SlowLink:
    """A TCP link to a registry on 127.0.0.1 whose answers flow at `rate` bytes/s, and stop
    flowing while `flowing` is clear: a far-away source, so that fetches take long enough
    for every client to arrive while they are under way. Requests pass unchanged (TLS
    included: the store's certificate names 127.0.0.1 whatever the port)."""

    def __init__(self, target_port: int, *, rate: float, chunk: int = 64 * 1024) -> None:
        self.target_port = target_port
        self.rate = rate
        self.chunk = chunk
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.connections = 0  # accepted so far

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers += [writer, up_writer]
        for pipe in (self._pipe(reader, up_writer, slow=False),
                     self._pipe(up_reader, writer, slow=True)):
            task = asyncio.create_task(pipe)
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                    slow: bool) -> None:
        try:
            while data := await reader.read(self.chunk):
                if slow:
                    await self.flowing.wait()
                writer.write(data)
                await writer.drain()
                if slow:
                    await asyncio.sleep(len(data) / self.rate)  # the link's pace, not a wait
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


@pytest.fixture
async def slow_link(front_world: FrontWorld) -> AsyncIterator[SlowLink]:
    """The artifact store behind a 16 MiB/s link, known to the fronts as a source of its own
    (images under `world.path(repository, source=slow_link.host)`)."""
    link = SlowLink(front_world.store.port, rate=16 * 1024 * 1024)
    await link.start()
    front_world.store_aliases.append(link.host)
    try:
        yield link
    finally:
        await link.close()
