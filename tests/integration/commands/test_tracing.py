"""`clusterregistry trace` against a real nats-server with JetStream.

The tests create `CLUSTERREGISTRY_KUBE` themselves and publish what the relay
publishes (KubeEvent and RelistMarker JSON with `Nats-Msg-Id` and trace
headers), then read it back through `follow()`: from the start, live, since
a time, filtered, as JSON, with a limit and an idle timeout; next to mirror
and gc streams or without them; across a deleted consumer and a kill -9 of
the server; and once through the real command in a subprocess.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from nats.js import JetStreamContext

from clusterregistry import schemas, subjects
from clusterregistry.bus.connecting import Bus, connect
from clusterregistry.bus.following import NoStreamError
from clusterregistry.bus.streams import ensure_stream, publish
from clusterregistry.commands import tracing
from clusterregistry.commands.tracing import Filters
from clusterregistry_sandbox.natsservers import NatsServer
from clusterregistry_sandbox.supervising import free_port, wait_for
from tests.world.nats import jetstream

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
WAIT = 20.0
UPF = "edge.local:5000/acr.io/nf/upf:1.2"
UPF_SOURCE = "acr.io/nf/upf:1.2"


def _pod(name: str, uid: str, rv: int, *, event: str = "ADDED", namespace: str = "nf",
         image: str = UPF, original: str = UPF_SOURCE, phase: str = "Pending",
         relist: str = "") -> schemas.KubeEvent:
    return schemas.KubeEvent(
        type=event,  # type: ignore[arg-type]
        kind="pod", namespace=namespace, name=name, uid=uid, resource_version=str(rv),
        relist=relist,
        pod=schemas.PodState(
            containers=[schemas.Container(name="main", image=image, original_image=original)],
            phase=phase, node_name="node-1" if phase != "Pending" else "",
        ),
    )


def _marker(phase: str, rv: int, count: int = 0) -> schemas.RelistMarker:
    return schemas.RelistMarker(kind="pod", phase=phase,  # type: ignore[arg-type]
                                relist="r-1", resource_version=str(rv), count=count)


# What the relay would publish for one small story, in order (stream sequences 1..7).
STORY: list[schemas.KubeEvent | schemas.RelistMarker] = [
    _pod("upf-1", "u-1", 10),
    schemas.KubeEvent(
        type="ADDED", kind="replicaset", namespace="nf", name="upf-7d9c", uid="rs-1",
        resource_version="11",
        template=schemas.TemplateState(
            containers=[schemas.Container(name="main", image=UPF, original_image=UPF_SOURCE)],
            replicas=2),
    ),
    _marker("begin", 12),
    _pod("coredns-1", "u-2", 9, event="SYNC", namespace="kube-system",
         image="registry.k8s.io/coredns:1.11", original="", phase="Running", relist="r-1"),
    _marker("end", 12, count=1),
    _pod("upf-1", "u-1", 13, event="MODIFIED", phase="Running"),
    schemas.KubeEvent(
        type="ADDED", kind="job", namespace="other", name="migrate", uid="j-1",
        resource_version="14",
        template=schemas.TemplateState(
            containers=[schemas.Container(name="m", image="edge.local:5000/r/migrate:3",
                                          original_image="r/migrate:3")]),
    ),
]


async def _publish(bus: Bus, message: schemas.KubeEvent | schemas.RelistMarker,
                   *, trace: str = "") -> int:
    if isinstance(message, schemas.RelistMarker):
        subject = subjects.relist(message.kind)
        msg_id = subjects.relist_msg_id(message.kind, message.relist, message.phase)
    else:
        subject = subjects.kube(message.kind, message.namespace, message.uid)
        msg_id = subjects.msg_id(message.uid, message.resource_version, message.type,
                                 message.relist)
    headers = {subjects.MSG_ID_HEADER: msg_id}
    if trace:
        headers[subjects.TRACE_HEADER] = trace
    return await publish(bus, subject, schemas.encode(message), headers=headers)


async def _publish_story(bus: Bus) -> None:
    for number, message in enumerate(STORY, start=1):
        assert await _publish(bus, message, trace=f"trace{number:04d}abcdef") == number


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    """A connection, and the stream the relay would have created."""
    connection = await connect([nats_server.url], name="test-tracing")
    try:
        await _kube_stream(connection)
        yield connection
    finally:
        await connection.close()


async def _kube_stream(bus: Bus) -> None:
    await ensure_stream(bus, name=subjects.KUBE_STREAM, subjects=[subjects.KUBE_ALL],
                        duplicate_window=120.0)


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    """The test's own client, to see which consumers the trace left on the server."""
    async with jetstream(nats_server.url) as client:
        yield client


class Trace:
    """One `follow()` running in the background, with what it wrote so far."""

    def __init__(self, bus: Bus, **options: Any) -> None:
        self.out, self.err = io.StringIO(), io.StringIO()
        self.task = asyncio.create_task(tracing.follow(
            bus, out=self.out, err=self.err, tz=UTC, **{"filters": Filters(), **options}))

    @property
    def lines(self) -> list[str]:
        """Timeline lines, without the day separators."""
        return [line for line in self.out.getvalue().splitlines()
                if not line.startswith("---")]

    async def started(self) -> None:
        """Every consumer exists: from now on a live trace sees what is published."""
        await _until(lambda: "tracing " in self.err.getvalue() or self.task.done(),
                     "the trace to create its consumers")
        if self.task.done():
            await self.task

    async def printed(self, count: int) -> None:
        await _until(lambda: len(self.lines) >= count or self.task.done(),
                     f"{count} lines; have {self.lines}")

    async def result(self) -> int:
        async with asyncio.timeout(WAIT):
            return await self.task

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def _until(condition: Callable[[], bool], description: str) -> None:
    async def check() -> bool:
        return condition()

    await wait_for(check, timeout=WAIT, description=description)


async def _follow(bus: Bus, **options: Any) -> tuple[list[str], str]:
    trace = Trace(bus, **options)
    await trace.result()
    return trace.lines, trace.err.getvalue()


def _seqs(lines: list[str]) -> list[int]:
    return [int(line.split()[1].lstrip("#")) for line in lines]


async def _consumers(js: JetStreamContext, stream: str = subjects.KUBE_STREAM) -> list[str]:
    return [info.name for info in await js.consumers_info(stream)]


# -- reading the stream -------------------------------------------------------------------------


async def test_from_start_prints_the_whole_story_in_order_and_leaves_no_consumer(
    bus: Bus, js: JetStreamContext,
) -> None:
    await _publish_story(bus)
    lines, notes = await _follow(bus, from_start=True, limit=len(STORY))
    assert _seqs(lines) == [1, 2, 3, 4, 5, 6, 7]
    first = lines[0].split("  ")
    assert first[1:] == ["#1", "pod", "ADDED", "nf/upf-1", "rv=10", "Pending",
                         f"main={UPF} (from {UPF_SOURCE})", "trace=trace000…"]
    assert "  replicaset  ADDED  nf/upf-7d9c  rv=11  replicas=2  main=" in lines[1]
    assert lines[2].endswith("  #3  pod  RELIST begin  id=r-1  rv=12  trace=trace000…")
    assert "  pod  SYNC  kube-system/coredns-1  rv=9  node-1 Running  " in lines[3]
    assert "relist=r-1" in lines[3]
    assert "  #5  pod  RELIST end  id=r-1  rv=12  count=1  " in lines[4]
    assert "  pod  MODIFIED  nf/upf-1  rv=13  node-1 Running  " in lines[5]
    assert "  job  ADDED  other/migrate  rv=14  m=edge.local:5000/r/migrate:3" in lines[6]
    assert f"tracing {subjects.KUBE_STREAM} [{subjects.KUBE_ALL}], from the start" in notes
    assert "note:" not in notes  # no mirror or gc stream: nothing to say about them
    assert await _consumers(js) == []


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (Filters(kinds=frozenset({"pod"})), [1, 3, 4, 5, 6]),
        (Filters(kinds=frozenset({"pod", "job"})), [1, 3, 4, 5, 6, 7]),
        # markers follow only the kind filter: SYNC events keep their brackets
        (Filters(namespaces=("kube-*",)), [3, 4, 5]),
        (Filters(kinds=frozenset({"pod"}), namespaces=("nf",)), [1, 3, 5, 6]),
        (Filters(names=("upf*",)), [1, 2, 3, 5, 6]),
        (Filters(images=("coredns",)), [3, 4, 5]),
        (Filters(images=("acr.io/*",)), [1, 2, 3, 5, 6]),  # the original image, as a glob
        (Filters(kinds=frozenset({"job"}), images=("r/migrate:3",)), [7]),
        (Filters(kinds=frozenset({"replicaset"}), names=("nothing",)), []),
    ],
)
async def test_filters(bus: Bus, filters: Filters, expected: list[int]) -> None:
    await _publish_story(bus)
    # an idle timeout ends the trace once the stream has nothing more to give
    lines, _ = await _follow(bus, filters=filters, from_start=True, idle_timeout=1.0)
    assert _seqs(lines) == expected


async def test_json_prints_the_messages_themselves(bus: Bus) -> None:
    await _publish_story(bus)
    trace = Trace(bus, from_start=True, limit=3, as_json=True, filters=Filters(
        kinds=frozenset({"pod"})))
    await trace.result()
    documents = [json.loads(line) for line in trace.out.getvalue().splitlines()]
    assert [d["seq"] for d in documents] == [1, 3, 4]
    first = documents[0]
    assert set(first) == {"time", "stream", "seq", "subject", "headers", "payload"}
    assert first["stream"] == subjects.KUBE_STREAM
    assert first["subject"] == subjects.kube("pod", "nf", "u-1")
    assert first["headers"] == {subjects.MSG_ID_HEADER: "u-1:10:ADDED",
                                subjects.TRACE_HEADER: "trace0001abcdef"}
    assert first["payload"] == json.loads(schemas.encode(STORY[0]))
    assert datetime.fromisoformat(first["time"]).tzinfo is not None
    assert documents[1]["subject"] == subjects.relist("pod")
    assert documents[1]["payload"]["phase"] == "begin"


async def test_live_shows_only_what_is_published_after_it_started(bus: Bus) -> None:
    await _publish_story(bus)
    trace = Trace(bus, limit=2)
    await trace.started()
    assert f"{subjects.KUBE_ALL}], new messages only" in trace.err.getvalue()
    await _publish(bus, _pod("upf-2", "u-3", 20))
    await _publish(bus, _pod("upf-2", "u-3", 21, event="DELETED"))
    assert await trace.result() == 2
    assert _seqs(trace.lines) == [8, 9]
    assert "  pod  DELETED  nf/upf-2  rv=21  " in trace.lines[1]


async def test_since_starts_at_a_time(bus: Bus) -> None:
    await _publish_story(bus)
    # every message of the story was stored before its ack came back, so before `cut`
    cut = datetime.now(UTC)
    await _publish(bus, _pod("late", "u-9", 30))
    lines, notes = await _follow(bus, since=cut, idle_timeout=1.0)
    assert _seqs(lines) == [8]
    assert f"since {cut.isoformat(timespec='microseconds').replace('+00:00', 'Z')}" in notes


async def test_idle_timeout_ends_a_quiet_trace(bus: Bus, js: JetStreamContext) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    lines, _ = await _follow(bus, idle_timeout=0.5)
    assert lines == []
    assert 0.5 <= loop.time() - began < WAIT
    assert await _consumers(js) == []


async def test_limit_counts_printed_records_not_received_ones(bus: Bus) -> None:
    await _publish_story(bus)
    lines, _ = await _follow(bus, from_start=True, limit=1,
                             filters=Filters(kinds=frozenset({"job"})))
    assert _seqs(lines) == [7]


# -- other streams ------------------------------------------------------------------------------


async def test_mirror_work_queue_and_gc_streams_are_followed_too(
    bus: Bus, js: JetStreamContext
) -> None:
    await ensure_stream(bus, name=subjects.MIRROR_STREAM, subjects=[subjects.MIRROR_REQUEST],
                        work_queue=True)
    await ensure_stream(bus, name="CLUSTERREGISTRY_GC", subjects=[subjects.GC_ALL])
    trace = Trace(bus, limit=3)
    await trace.started()
    notes = trace.err.getvalue()
    assert f"{subjects.MIRROR_STREAM} [{subjects.MIRROR_REQUEST}] is a work queue" in notes
    assert f"tracing CLUSTERREGISTRY_GC [{subjects.GC_ALL}]" in notes

    await _publish(bus, STORY[0])
    await _until(lambda: len(trace.lines) == 1, "the pod event")
    await publish(bus, subjects.MIRROR_REQUEST, b'{"artifact":"a1","source":"acr.io/x:1"}',
                  headers={subjects.TRACE_HEADER: "mirrortrace1"})
    await _until(lambda: len(trace.lines) == 2, "the mirror request")
    await publish(bus, subjects.gc("started"), b'{"usage":91}')
    await trace.result()

    assert "  #1  pod  ADDED  nf/upf-1  " in trace.lines[0]
    assert trace.lines[1].endswith(
        '  #-  mirror  request  {"artifact":"a1","source":"acr.io/x:1"}  trace=mirrortr…')
    assert trace.lines[2].endswith('  #1  gc  started  {"usage":91}')
    # the work queue kept its work: the trace took nothing from the mirror
    mirror = await js.stream_info(subjects.MIRROR_STREAM)
    assert (mirror.state.messages, mirror.state.consumer_count) == (1, 0)


async def test_kind_filter_leaves_the_other_streams_alone(bus: Bus, js: JetStreamContext) -> None:
    await ensure_stream(bus, name="CLUSTERREGISTRY_GC", subjects=[subjects.GC_ALL])
    trace = Trace(bus, limit=1, filters=Filters(kinds=frozenset({"gc"})))
    await trace.started()
    assert subjects.KUBE_STREAM not in trace.err.getvalue()
    assert await _consumers(js) == []
    await _publish(bus, STORY[0])
    await publish(bus, subjects.gc("done"), b"{}")
    await trace.result()
    assert trace.lines[0].endswith("  #1  gc  done  {}")


async def test_a_missing_stream_is_an_error_not_a_hang(bus: Bus) -> None:
    with pytest.raises(NoStreamError, match=r"clusterregistry\.gc\.>"):
        await tracing.follow(bus, filters=Filters(kinds=frozenset({"gc"})), out=io.StringIO(),
                             err=io.StringIO(), idle_timeout=1.0)


# -- faults -------------------------------------------------------------------------------------


async def _keeps_every_message_once_across(
    bus: Bus, fault: Callable[[], Awaitable[None]], publisher: Callable[[], Awaitable[Bus]]
) -> Trace:
    trace = Trace(bus)
    await trace.started()
    for number in range(3):
        await _publish(bus, _pod(f"p{number}", f"u{number}", number + 1))
    await trace.printed(3)
    await fault()
    sender = await publisher()
    for number in range(3, 6):
        await _publish(sender, _pod(f"p{number}", f"u{number}", number + 1))
    await trace.printed(6)
    assert _seqs(trace.lines) == [1, 2, 3, 4, 5, 6]
    return trace


async def test_a_consumer_deleted_under_the_trace_is_recreated_after_the_last_message(
    bus: Bus, js: JetStreamContext,
) -> None:
    gone: list[str] = []

    async def delete() -> None:
        [name] = await _consumers(js)
        gone.append(name)
        await js.delete_consumer(subjects.KUBE_STREAM, name)

    async def same() -> Bus:
        return bus

    trace = await _keeps_every_message_once_across(bus, delete, same)
    try:
        new = await _consumers(js)
        assert len(new) == 1
        assert new != gone
    finally:
        await trace.stop()
    assert await _consumers(js) == []


async def test_kill_9_and_restart_of_nats_loses_and_repeats_nothing(
    bus: Bus, nats_server: NatsServer
) -> None:
    async def crash() -> None:
        await nats_server.kill()
        await nats_server.restart()

    async def reconnected() -> Bus:
        async def ready() -> Bus:
            await _kube_stream(bus)  # JetStream answers again, and has kept the stream
            return bus

        return await wait_for(ready, timeout=WAIT, description="the stream after restart",
                              retry_on=(Exception,))

    trace = await _keeps_every_message_once_across(bus, crash, reconnected)
    await trace.stop()


# -- the command --------------------------------------------------------------------------------


async def _command(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clusterregistry.commands.tracing", *argv,
        cwd=ROOT, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_the_command_in_a_subprocess(bus: Bus, nats_server: NatsServer) -> None:
    await _publish_story(bus)
    code, out, err = await _command(
        "--server", nats_server.url, "--from-start", "--kind", "pod", "--namespace", "nf",
        "--utc", "--limit", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("--- ") and lines[0].endswith(" UTC ---")
    assert _seqs(lines[1:]) == [1, 3, 5]
    assert f"tracing {subjects.KUBE_STREAM} [clusterregistry.kube.pod.>]" in err

    # the server from the settings' environment variable, JSON out, ended by --timeout
    code, out, err = await _command(
        "--from-start", "--json", "--image", "coredns", "--timeout", "1",
        env={"CLUSTERREGISTRY_NATS_SERVERS": nats_server.url})
    assert code == 0, err
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [3, 4, 5]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def test_ctrl_c_ends_a_live_trace_quietly_and_removes_its_consumer(
    bus: Bus, nats_server: NatsServer, js: JetStreamContext
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clusterregistry.commands.tracing", "--server", nats_server.url,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        # as from a terminal: a suite run in the background (`make test &`) inherits an
        # ignored SIGINT, and Python keeps it ignored, so Ctrl-C could not be tested
        preexec_fn=_default_sigint,
    )
    try:
        assert process.stderr is not None
        async with asyncio.timeout(60):
            started = await process.stderr.readline()
            assert started.startswith(b"tracing CLUSTERREGISTRY_KUBE"), started
            assert len(await _consumers(js)) == 1
            process.send_signal(signal.SIGINT)
            _, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 130
    assert b"Traceback" not in stderr
    assert await _consumers(js) == []


async def test_the_command_without_streams_or_nats_exits_1(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    parser = argparse.ArgumentParser()
    tracing.add_arguments(parser)
    err = io.StringIO()
    code = await tracing.run(parser.parse_args(["--server", nats_server.url, "--timeout", "1"]),
                             out=io.StringIO(), err=err)
    assert code == 1
    assert "no JetStream stream holds clusterregistry.kube.>" in err.getvalue()

    monkeypatch.setattr(tracing, "_CONNECT_DEADLINE", 1.0)
    nobody = f"nats://127.0.0.1:{free_port()}"
    err = io.StringIO()
    code = await tracing.run(parser.parse_args(["--server", nobody]), out=io.StringIO(), err=err)
    assert code == 1
    assert f"cannot connect to NATS at {nobody}" in err.getvalue()
