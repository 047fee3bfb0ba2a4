"""GC under faults: killed with SIGKILL in the middle of a read-only sweep, and starting while a
mirror copy is in flight."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from clusterregistry import config, references
from clusterregistry.bus.fencing import Fence
from clusterregistry.config import MirrorSettings, RegistryAccess
from clusterregistry.gc.metrics import GcMetrics
from clusterregistry.gc.readonly import follow
from clusterregistry.gc.serving import request_run
from clusterregistry.gc.sweeping import SweepResult
from clusterregistry.mirror.mirroring import Worker
from clusterregistry.oci.clients import RegistryClients
from clusterregistry.oci.registries import RegistryClient
from clusterregistry.schemas import MirrorRequest
from clusterregistry_sandbox.registries import Registry, find_docker_registry
from clusterregistry_sandbox.supervising import Process, free_port, wait_for
from clusterregistry_sandbox.uploading import upload
from tests.integration.gc.conftest import GcWorld, Image

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
TTL = 2.0

# a registry binary whose garbage-collect takes its time: GC is killed in the middle
_SLOW_REGISTRY = textwrap.dedent("""\
    #!{python}
    import os, sys, time
    open({pidfile!r}, "w").write(str(os.getpid()))
    time.sleep(60)
    os.execv({registry!r}, [{registry!r}, *sys.argv[1:]])
""")


async def _accepts_writes(world: GcWorld) -> bool:
    """An upload session opens (202); False while it is refused or restarting."""
    try:
        async with aiohttp.ClientSession() as session, session.post(
                f"{world.registry.url}/v2/probe/write/blobs/uploads/") as response:
            return response.status == 202
    except aiohttp.ClientError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): look at its state
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False


async def test_gc_killed_while_sweeping_read_only_leaves_nothing_behind(
    gc_world: GcWorld, tmp_path: Path,
) -> None:
    world = gc_world
    live = await world.add("src.example.io/app/live:1")
    await world.add("src.example.io/app/dead:1", referenced=False)
    pidfile = tmp_path / "sweep.pid"
    slow = tmp_path / "slow-registry"
    slow.write_text(_SLOW_REGISTRY.format(python=sys.executable, pidfile=str(pidfile),
                                          registry=find_docker_registry()))
    slow.chmod(0o755)

    # the registry's supervisor: read-only exactly while GC's lock says it sweeps
    fence = Fence(world.bus, ttl_seconds=TTL, holder="supervisor", poll_interval=0.05)
    await fence.ensure()
    windows: list[float] = []

    async def switch(read_only: bool) -> None:
        await world.registry.restart(read_only=read_only)

    stop_following = asyncio.Event()
    following = asyncio.create_task(follow(fence, switch, stop_following, name="edge",
                                           poll_interval=0.05, on_window=windows.append))
    probe_port = free_port()
    env = {
        "CLUSTERREGISTRY_ENABLECLUSTERREGISTRY": "true",
        "CLUSTERREGISTRY_NATS_SERVERS": world.nats.url,
        "CLUSTERREGISTRY_LOCALREGISTRY": world.registry.host,
        "CLUSTERREGISTRY_PROBEPORT": str(probe_port),
        "CLUSTERREGISTRY_PROBEHOST": "127.0.0.1",
        "CLUSTERREGISTRY_CLUSTERREGISTRY_CLUSTERREGISTRYGCCADENCE": "",
        "CLUSTERREGISTRY_GC_GRACEPERIODSECONDS": "0",
        "CLUSTERREGISTRY_GC_LOCKTTLSECONDS": str(TTL),
        "CLUSTERREGISTRY_GC_READONLYMODE": "follower",
        "CLUSTERREGISTRY_GC_REGISTRYBINARY": str(slow),
        "CLUSTERREGISTRY_GC_REGISTRYCONFIGPATH": str(world.registry.config_path),
        "CLUSTERREGISTRY_GC_STORAGEPATH": str(world.registry.root_dir),
        "CLUSTERREGISTRY_GC_USAGESOURCE": "blobs",
        "KUBECONFIG": "", "KUBERNETES_SERVICE_HOST": "",
    }
    gc = Process([sys.executable, str(REPO / "cmd" / "gc.py")], name="gc",
                 log_path=tmp_path / "gc.log", env=env, cwd=REPO)
    requesting: asyncio.Task[object] | None = None
    try:
        await gc.start()

        async def ready() -> bool:
            async with aiohttp.ClientSession() as session, session.get(
                    f"http://127.0.0.1:{probe_port}/readyz") as response:
                return response.status == 200

        await gc.wait_ready(ready, timeout=30)
        settings = config.load(env={"CLUSTERREGISTRY_NATS_SERVERS": world.nats.url})

        async def run_requested() -> object:
            return await request_run(settings, dry_run=False, force=False, timeout=120)

        requesting = asyncio.create_task(run_requested())
        await wait_for(lambda: asyncio.to_thread(pidfile.exists), timeout=60,
                       description="the sweep to start")
        sweep_pid = int(pidfile.read_text())
        assert world.registry.read_only and not await _accepts_writes(world)
        holder = await fence.lock_holder()
        assert holder is not None and holder.purpose.startswith("sweep")

        # SIGKILL the GC process alone (not its group): nothing of it may run on
        assert gc.pid is not None
        os.kill(gc.pid, signal.SIGKILL)
        killed = time.monotonic()
        await gc.wait(timeout=30)
        await wait_for(lambda: _none(fence.lock_holder), timeout=TTL * 4, interval=0.05,
                       description="the dead GC's lock to expire")
        expired_after = time.monotonic() - killed
        assert expired_after < TTL + 1.5, expired_after
        # the supervisor switched back as soon as the lock went: the registry takes writes
        await wait_for(lambda: _accepts_writes(world), timeout=30,
                       description="the registry to accept writes again")
        await wait_for(lambda: _async(len(windows) == 1), timeout=10,
                       description="the supervisor to record the read-only window")
        assert not world.registry.read_only
        # the half-started sweep died with its GC (PR_SET_PDEATHSIG), not 60 s later
        await wait_for(lambda: _async(not _alive(sweep_pid)), timeout=10,
                       description="the orphaned sweep to die")
        # mirrors resume: a fenced copy goes through
        built = world.builder.build("after", seed=99)
        async with fence.writing("mirror after gc died"):
            await upload(world.client, built, "src.example.io/app/after", "1")
        assert await world.client.head_manifest("src.example.io/app/after", "1") == built.digest
        assert await world.pullable(live)
    finally:
        if requesting is not None:
            requesting.cancel()
            with contextlib.suppress(BaseException):
                await requesting
        await gc.stop(grace=2)
        stop_following.set()
        await asyncio.wait_for(following, 60)
    assert not world.registry.read_only


async def _none(read: object) -> bool:
    assert callable(read)
    return await read() is None


async def _async(value: bool) -> bool:
    return value


async def test_gc_waits_for_a_mirror_copy_in_flight_and_sweeps_none_of_it(
    gc_world: GcWorld, tmp_path: Path,
) -> None:
    """The real mirror worker copies from an artifact store (a second registry) while GC
    starts: GC waits for the copy, and the sweep takes nothing of it."""
    world = gc_world
    dead = await world.add("src.example.io/app/dead:1", referenced=False, layer_sizes=(50_000,))
    arriving = world.builder.build("arriving", seed=42, layer_sizes=(30_000, 40_000, 50_000))

    # the control: a sweep between a copy's blob uploads and its manifest push destroys the
    # blobs (why the fence exists), so the checks below can fail
    repository = "src.example.io/app/control"
    control = world.builder.build("control", seed=43, layer_sizes=(10_000,))
    for blob in control.blobs:
        _, location = await world.client.start_upload(repository)
        await world.client.put_blob(location, repository=repository, digest=blob.digest,
                                    size=blob.size, body=control.read_blob(blob.digest))
    await world.registry.garbage_collect()
    assert not any([await world.blob_exists(b.digest) for b in control.blobs])

    store = Registry(tmp_path / "store", name="artifact-store")
    await store.start()
    settings = MirrorSettings(blob_concurrency=1,
                              registries=[RegistryAccess(host=store.host, plain_http=True)])
    clients = RegistryClients(settings, local_registry=world.registry.host)
    try:
        async with RegistryClient(store.host, plain_http=True, actions="*") as pusher:
            await upload(pusher, arriving, "app/arriving", "1")
        fence = Fence(world.bus, ttl_seconds=TTL, holder="mirror-0", poll_interval=0.05)
        await fence.ensure()
        worker = Worker(bus=world.bus, settings=settings, clients=clients,
                        worker_id="mirror-0", fence=fence)
        # a slow artifact store: each blob takes 0.4 s to start arriving
        source = clients.source(store.host)
        fetching = asyncio.Event()
        real_open = source.open_blob

        async def slow_open(repository: str, digest: str, *,
                            start: int = 0) -> aiohttp.ClientResponse:
            fetching.set()
            await asyncio.sleep(0.4)
            return await real_open(repository, digest, start=start)

        source.open_blob = slow_open  # type: ignore[method-assign]
        local = references.to_local(references.parse(f"{store.host}/app/arriving:1"),
                                    world.registry.host)
        copied_at: list[float] = []

        async def mirror_copy() -> None:
            await worker.mirror(MirrorRequest(
                artifact="arriving", generation=1, source=f"{store.host}/app/arriving:1",
                destination=str(local)))
            copied_at.append(time.monotonic())

        collector = world.collector(metrics=GcMetrics(CollectorRegistry()))
        await collector.ensure()
        assert collector.sweeper is not None
        real_sweep = collector.sweeper.sweep
        swept_at: list[float] = []

        async def timed_sweep(*, run: str) -> SweepResult:
            swept_at.append(time.monotonic())
            return await real_sweep(run=run)

        collector.sweeper.sweep = timed_sweep  # type: ignore[method-assign]
        copying = asyncio.create_task(mirror_copy())
        await fetching.wait()
        assert await fence.writers(), "the copy runs inside its fence entry"
        gc_started = time.monotonic()
        result = await collector.run()
        await copying
        assert result.event == "finished" and result.deleted == 1, result.message
        # GC started while the copy was in flight, and swept only after it was complete
        assert gc_started < copied_at[0] < swept_at[0]
        for blob in arriving.blobs:
            assert await world.blob_exists(blob.digest)
        assert await world.client.head_manifest(local.path, "1") == arriving.digest
        assert await world.pullable(Image(source="", name="arriving", local=local,
                                          digest=arriving.digest, children=(), blobs=()))
        for digest in dead.blobs:
            assert not await world.blob_exists(digest)
    finally:
        await clients.close()
        await store.stop()
