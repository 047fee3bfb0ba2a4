"""The NATS part of the test world, proven with real nats-server processes.

JetStream must keep acknowledged messages across a kill -9 and a restart on
the same store, and a replicated stream must keep working when one node of
the cluster dies. The process supervision underneath (failure reports with
the log tail, process-group cleanup, condition waits) is checked here too.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

from clusterregistry_sandbox.natsservers import NatsCluster, NatsServer
from clusterregistry_sandbox.supervising import Process, ProcessError, free_port, wait_for

pytestmark = pytest.mark.integration


async def _connect(servers: str | list[str]) -> Client:
    return await nats.connect(
        servers,
        connect_timeout=5,
        reconnect_time_wait=0.2,
        max_reconnect_attempts=-1,
    )


async def test_server_starts_on_loopback_with_jetstream(nats_server: NatsServer) -> None:
    assert nats_server.url == f"nats://127.0.0.1:{nats_server.port}"
    assert await nats_server.healthy()
    jsz = await nats_server.jsz()
    assert jsz["config"]["store_dir"].startswith(str(nats_server.store_dir))
    client = await _connect(nats_server.url)
    try:
        info = await client.jetstream().account_info()
        assert info.streams == 0
    finally:
        await client.close()


async def test_acknowledged_messages_survive_kill_9_and_restart(nats_server: NatsServer) -> None:
    client = await _connect(nats_server.url)
    try:
        js = client.jetstream()
        await js.add_stream(
            StreamConfig(name="EVENTS", subjects=["events.>"], storage=StorageType.FILE)
        )
        for number in range(5):
            ack = await js.publish(f"events.{number}", f"message {number}".encode())
            assert ack.seq == number + 1
    finally:
        await client.close()

    url, pid = nats_server.url, nats_server.process.pid if nats_server.process else None
    await nats_server.kill()
    assert nats_server.process is not None
    assert nats_server.process.returncode == -9
    assert not nats_server.running
    await nats_server.restart()
    assert nats_server.url == url
    assert nats_server.process.pid != pid

    client = await _connect(nats_server.url)
    try:
        js = client.jetstream()
        info = await js.stream_info("EVENTS")
        assert info.state.messages == 5
        subscription = await js.pull_subscribe("events.>", durable="reader")
        messages = await subscription.fetch(5, timeout=10)
        assert [message.data for message in messages] == [
            f"message {number}".encode() for number in range(5)
        ]
        for message in messages:
            await message.ack()
    finally:
        await client.close()


async def test_cluster_replicated_stream_survives_a_node_kill(nats_cluster: NatsCluster) -> None:
    assert len(nats_cluster.servers) == 3
    assert len(set(nats_cluster.servers)) == 3
    assert await nats_cluster.meta_leader() is not None
    client = await _connect(nats_cluster.servers)
    try:
        js = client.jetstream()
        await js.add_stream(
            StreamConfig(
                name="REPLICATED",
                subjects=["replicated.>"],
                storage=StorageType.FILE,
                num_replicas=3,
            )
        )
        for number in range(3):
            await js.publish("replicated.before", f"before {number}".encode())
        info = await js.stream_info("REPLICATED")
        assert info.cluster is not None and info.cluster.leader is not None
        victim = nats_cluster.index_of(info.cluster.leader)
        # created before the kill: a replicated durable consumer elects its new
        # leader alongside the stream's, instead of waiting for it afterwards
        subscription = await js.pull_subscribe("replicated.>", durable="reader")

        await nats_cluster.kill(victim)

        async def publish_after(number: int) -> bool:
            # a timed-out publish may still have been stored: the id makes the retry harmless
            await js.publish(
                "replicated.after",
                f"after {number}".encode(),
                timeout=2,
                headers={"Nats-Msg-Id": f"after-{number}"},
            )
            return True

        for number in range(3):
            await wait_for(
                functools.partial(publish_after, number),
                timeout=30,
                interval=0.2,
                description="a publish to the surviving stream leader",
                retry_on=(NatsTimeoutError, NoRespondersError, NoStreamResponseError),
            )

        bodies: list[str] = []

        async def read_all() -> bool:
            for message in await subscription.fetch(6 - len(bodies), timeout=2):
                bodies.append(message.data.decode())
                await message.ack()
            return len(bodies) == 6

        await wait_for(
            read_all,
            timeout=30,
            description="all six messages from the new consumer leader",
            retry_on=(NatsTimeoutError, ServiceUnavailableError),
        )
        assert bodies[:3] == ["before 0", "before 1", "before 2"]
        assert bodies[3:] == ["after 0", "after 1", "after 2"]
        assert (await js.stream_info("REPLICATED")).state.messages == 6

        await nats_cluster.restart(victim)

        async def all_replicas_current() -> bool:
            state = await js.stream_info("REPLICATED")
            if state.cluster is None or state.cluster.leader is None:
                return False
            replicas = state.cluster.replicas or []
            return len(replicas) == 2 and all(r.current for r in replicas)

        await wait_for(
            all_replicas_current,
            timeout=30,
            interval=0.2,
            description="the restarted node to catch up",
            retry_on=(NatsTimeoutError, ServiceUnavailableError),
        )
    finally:
        await client.close()


async def test_start_failure_reports_the_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = NatsServer(tmp_path / "nats", port=taken.getsockname()[1])
        with pytest.raises(ProcessError, match="address already in use"):
            await server.start(timeout=30)
    assert not server.running


async def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    """A child that spawned a grandchild: stopping it leaves neither behind."""
    pid_file = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(600)\n"
    )
    process = Process([sys.executable, "-c", script], name="parent", log_path=tmp_path / "log")
    await process.start()
    try:

        async def grandchild() -> int | None:
            text = pid_file.read_text() if pid_file.exists() else ""
            return int(text) if text else None

        grandchild_pid = await wait_for(grandchild, timeout=30, description="the grandchild")
        await process.wait_ready(_always_ready, timeout=30)
        status = await process.stop(grace=10)
        assert status == -15  # SIGTERM
    finally:
        await process.stop(grace=1)

    async def grandchild_gone() -> bool:
        return not _alive(grandchild_pid)

    await wait_for(grandchild_gone, timeout=30, description="the grandchild to die")
    assert "start #1" in process.tail_log()


async def test_wait_ready_fails_fast_when_the_process_exits(tmp_path: Path) -> None:
    process = Process(
        [sys.executable, "-c", "import sys; print('boom: bad config'); sys.exit(3)"],
        name="failing",
        log_path=tmp_path / "failing.log",
    )
    await process.start()
    with pytest.raises(ProcessError, match=r"(?s)status 3.*boom: bad config"):
        await process.wait_ready(_never_ready, timeout=30)


async def test_wait_for_returns_the_value_or_times_out() -> None:
    calls = 0

    async def third_time() -> int | None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionRefusedError("not yet")
        return calls

    assert await wait_for(third_time, timeout=10, interval=0.01, retry_on=(OSError,)) == 3

    async def never() -> bool:
        return False

    with pytest.raises(TimeoutError, match="the impossible"):
        await wait_for(never, timeout=0.2, interval=0.01, description="the impossible")

    async def broken() -> bool:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await wait_for(broken, timeout=10, retry_on=(OSError,))


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == 20
    for port in ports:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))


async def _always_ready() -> bool:
    return True


async def _never_ready() -> bool:
    return False


def _alive(pid: int) -> bool:
    """True while pid runs (a zombie awaiting its reaper counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status
