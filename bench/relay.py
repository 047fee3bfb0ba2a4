"""Relay throughput: watch events to acknowledged JetStream publishes, beside raw nats-py.

What is measured: kubesim (its own process, so it does not share the relay's
interpreter; on 2 cores it still shares the machine with it and nats-server)
holds 100,000 realistic pods (two containers, the original-images annotation,
labels, a controller ownerReference to a real ReplicaSet). The
relay's pod checkpoint is set to the resourceVersion from before the pods
were created, so a `Relay(kinds=("pod",))` started in this process resumes
its watch there and kubesim replays the 100,000 ADDED events from its
history: path "watch-replay", the relay's steady state at full load (a
relay catching up after a restart or a burst). The clock runs from
`Relay.run` until the relay's own counter
`clusterregistry_relay_events_published_total` (a fresh CollectorRegistry)
says every event is acknowledged by JetStream; it therefore includes the
Lease, the checkpoint read, the watch request, decoding, translating,
encoding, the queue, the acked batches and the checkpoint writes.

Baseline, in the same run against the same nats-server: the stream is
deleted and recreated with the same settings, and a bare nats-py client
publishes the very same messages (same subjects, payloads and headers,
including Nats-Msg-Id; the stream's byte total, and its first, middle and
last message field for field, are checked against what the relay stored)
with `js.publish_async` and the library's default in-flight window (4,000;
the relay's own window is `queueSize`, 2,000), then awaits every ack
(`publish_async_completed`). That is what nats-py's own pipelined publishing
does on this machine with these messages and nothing else to do, so `ratio`
is the share of it the relay keeps while also reading, translating and
checkpointing; the target is at least 0.7.

The relay run and the baseline run alternate, three pairs, each into a fresh
stream: the machine is shared, and a baseline measured a minute after the
relay can see a very different load. `ratio` is the median of the three
pairs' own ratios (`ratio_runs`); the rates are medians too, and their
quotient is kept as `ratio_of_medians`, which a load spike during one
side's runs only can drag far from every pair's ratio. Both sides' CPU time
per event is reported too (`cpu_us_per_event`: the relay or publisher process,
kubesim, nats-server), which the load moves much less than the rates.

Also reported, to tell where the relay's time goes: kubesim's serving of the
same watch replay read by a bare HTTP client (the floor of the relay's input
side), the relay's per-event CPU stages timed in isolation on those same
lines, the relist path (no checkpoint: a paginated list of 100,000 pods
published as SYNC events between relist markers) and a bare paginated list.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import nats
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry

from clusterregistry import schemas, subjects
from clusterregistry.bus.connecting import Bus, connect
from clusterregistry.bus.keyvalues import Records
from clusterregistry.bus.publishing import Outgoing
from clusterregistry.bus.streams import ensure_bucket, ensure_stream
from clusterregistry.config import RelaySettings
from clusterregistry.kinds import ORIGINAL_IMAGES_ANNOTATION
from clusterregistry.kube.clients import api_client
from clusterregistry.kube.objects import Pod, TypedWatchEvent
from clusterregistry.relay import translating
from clusterregistry.relay.metrics import RelayMetrics
from clusterregistry.relay.relaying import Relay
from clusterregistry_sandbox.natsservers import NatsServer
from clusterregistry_sandbox.supervising import Process, free_port, wait_for

NAMESPACE = "bench"
LEASE_NAMESPACE = "clusterregistry"
IN_FLIGHT = 64  # concurrent creates while loading kubesim (setup, not measured)
REPLICASETS = 100
PUBLISHED = "clusterregistry_relay_events_published_total"
TARGET_RATIO = 0.7
RUNS = 3  # relay and baseline runs, in pairs

_json_headers = {"Content-Type": "application/json", "Accept": "application/json"}


# -- objects --------------------------------------------------------------------------------


def _containers(app: int) -> list[dict[str, Any]]:
    return [
        {"name": "upf", "image": f"edge.local:5000/registry.example.com/nf/upf:1.{app % 7}",
         "ports": [{"containerPort": 8805, "protocol": "UDP"}],
         "env": [{"name": "NF_ROLE", "value": "upf"}, {"name": "NF_SLICE", "value": str(app)}],
         "resources": {"requests": {"cpu": "500m", "memory": "512Mi"},
                       "limits": {"cpu": "2", "memory": "2Gi"}}},
        {"name": "envoy", "image": "edge.local:5000/registry.example.com/mesh/envoy:1.30.2",
         "ports": [{"containerPort": 15001}],
         "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
    ]


def _labels(app: int) -> dict[str, str]:
    return {"app": f"upf-{app:02d}", "pod-template-hash": f"{app:05d}abc", "tier": "edge"}


def _replicaset(app: int) -> dict[str, Any]:
    labels = _labels(app)
    return {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": f"upf-{app:02d}-{labels['pod-template-hash']}",
                     "namespace": NAMESPACE, "labels": labels},
        "spec": {"replicas": 1000, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": _containers(app)}}},
    }


def _pod(i: int, owner: dict[str, Any]) -> dict[str, Any]:
    app = i % REPLICASETS
    originals = {"upf": f"registry.example.com/nf/upf:1.{app % 7}",
                 "envoy": "registry.example.com/mesh/envoy:1.30.2"}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": f"{owner['metadata']['name']}-{i:06d}", "namespace": NAMESPACE,
            "labels": _labels(app),
            "annotations": {ORIGINAL_IMAGES_ANNOTATION: json.dumps(originals)},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                 "name": owner["metadata"]["name"],
                                 "uid": owner["metadata"]["uid"],
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {"containers": _containers(app), "imagePullSecrets": [{"name": "edge-pull"}],
                 "nodeName": f"node-{i % 3 + 1}"},
    }


# -- kubesim as a process -------------------------------------------------------------------


class _Kubesim:
    """`python -m kubesim serve` over plain HTTP, API only, with a history of `history`."""

    def __init__(self, root: Path, *, history: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.kubeconfig = root / "kubeconfig"
        self.process = Process(
            [sys.executable, "-m", "kubesim", "serve", "--http", "--no-controllers",
             "--port", str(self.port), "--kubeconfig", str(self.kubeconfig),
             "--state-dir", str(root / "state"), "--history", str(history),
             "--log-level", "WARNING"],
            name="kubesim", log_path=root / "kubesim.log")

    async def start(self) -> None:
        await self.process.start()

        async def written() -> bool:
            # the kubeconfig is written (in one write) once the server is up
            return self.kubeconfig.exists() and self.kubeconfig.stat().st_size > 0

        await self.process.wait_ready(written, timeout=60)

    async def stop(self) -> None:
        await self.process.stop()


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> bytes:
    async with session.post(url, data=msgspec.json.encode(body),
                            headers=_json_headers) as response:
        data = await response.read()
        if response.status >= 300:
            raise RuntimeError(f"POST {url}: {response.status} {data[:300]!r}")
        return data


async def _load(session: aiohttp.ClientSession, base: str, count: int) -> tuple[str, list[bytes]]:
    """Namespaces, ReplicaSets, then `count` pods; returns the resourceVersion from before the
    first pod and every created pod as the API server returned it."""
    for name in (NAMESPACE, LEASE_NAMESPACE):
        await _post(session, f"{base}/api/v1/namespaces", {"metadata": {"name": name}})
    owners = [msgspec.json.decode(await _post(
        session, f"{base}/apis/apps/v1/namespaces/{NAMESPACE}/replicasets", _replicaset(app)))
        for app in range(REPLICASETS)]
    async with session.get(f"{base}/api/v1/pods", params={"limit": "1"}) as response:
        response.raise_for_status()
        before: str = (await response.json())["metadata"]["resourceVersion"]
    created: list[bytes] = [b""] * count
    indexes: Iterator[int] = iter(range(count))
    url = f"{base}/api/v1/namespaces/{NAMESPACE}/pods"

    async def worker() -> None:
        for i in indexes:
            created[i] = await _post(session, url, _pod(i, owners[i % REPLICASETS]))

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return before, created


# -- the relay ------------------------------------------------------------------------------


@dataclass
class _RelayRun:
    seconds: float
    cpu_seconds: float  # this process's CPU time meanwhile: the relay, and the cheap poll
    published: float


async def _run_relay(
    nats_url: str, kubeconfig: Path, settings: RelaySettings, *, want: int, label: str,
    checkpoint: str | None, timeout: float,
) -> _RelayRun:
    """Start a pod-only Relay and time it until `want` messages are acknowledged."""
    registry = CollectorRegistry()
    bus = await connect([nats_url], name=f"bench-{label}")
    api = await api_client(str(kubeconfig))
    try:
        relay = Relay(api=api, bus=bus, settings=settings, namespace=LEASE_NAMESPACE,
                      identity=f"bench-{label}", metrics=RelayMetrics(registry), kinds=("pod",))
        await relay.prepare()
        checkpoints = Records(await ensure_bucket(bus, name=subjects.RELAY_BUCKET),
                              schemas.checkpoint_decoder.decode)
        if checkpoint is None:
            current = await checkpoints.read("pod")
            if current.value is not None:  # a delete marker: the relay finds no checkpoint
                await checkpoints.delete("pod", revision=current.revision)
        else:
            await checkpoints.put("pod", schemas.Checkpoint(
                kind="pod", resource_version=checkpoint, updated=time.time()))
        stop = asyncio.Event()

        counter = relay.metrics.published

        def published() -> float:
            # this one counter's samples only: a whole-registry collect at every poll would
            # take a noticeable share of the relay's CPU
            return sum(sample.value for metric in counter.collect() for sample in metric.samples
                       if sample.name == PUBLISHED)

        started = time.perf_counter()
        cpu_started = time.process_time()
        task = asyncio.create_task(relay.run(stop), name=f"bench-{label}")

        async def done() -> bool:
            if task.done():
                task.result()
                raise RuntimeError("the relay stopped before publishing everything")
            return published() >= want

        try:
            await wait_for(done, timeout=timeout, interval=0.01,
                           description=f"{want} messages published by the relay ({label})")
            seconds = time.perf_counter() - started
            cpu_seconds = time.process_time() - cpu_started
            count = published()
        finally:
            stop.set()
            try:
                await asyncio.wait_for(task, 30)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return _RelayRun(seconds, cpu_seconds, count)
    finally:
        await api.close()
        await bus.close()


async def _stream_state(js: JetStreamContext) -> tuple[int, int]:
    info = await js.stream_info(subjects.KUBE_STREAM)
    return int(info.state.messages), int(info.state.bytes)


async def _fresh_stream(admin: Bus, js: JetStreamContext, settings: RelaySettings) -> None:
    """Delete CLUSTERREGISTRY_KUBE and create it again with the relay's own settings."""
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(subjects.KUBE_STREAM)
    await ensure_stream(admin, name=subjects.KUBE_STREAM, subjects=[subjects.KUBE_ALL],
                        replicas=1, max_age=settings.stream_max_age_seconds,
                        duplicate_window=settings.duplicate_window_seconds)


async def _same_as_stored(js: JetStreamContext, outgoing: list[Outgoing]) -> bool:
    """First, middle and last stored messages equal the baseline's, header for header."""
    first = (await js.stream_info(subjects.KUBE_STREAM)).state.first_seq
    for index in sorted({0, len(outgoing) // 2, len(outgoing) - 1}):
        msg = await js.get_msg(subjects.KUBE_STREAM, first + index)
        want = outgoing[index]
        headers = msg.headers or {}
        if (msg.subject, msg.data, headers.get(subjects.MSG_ID_HEADER),
                headers.get(subjects.TRACE_HEADER)) != (
                want.subject, want.payload, want.msg_id, want.headers[subjects.TRACE_HEADER]):
            return False
    return True


# -- the baseline ---------------------------------------------------------------------------


async def _raw_publish(nats_url: str, outgoing: list[Outgoing]) -> tuple[float, float, int]:
    """Bare nats-py: publish_async every message, then await every ack.

    Returns (wall seconds, this process's CPU seconds, messages newly stored)."""
    nc = await nats.connect(nats_url, name="bench-raw")
    try:
        js = nc.jetstream()  # nats-py's default window: 4,000 in flight, as the relay's bus
        prepared = [(o.subject, o.payload, {subjects.MSG_ID_HEADER: o.msg_id, **o.headers})
                    for o in outgoing]
        futures = []
        started = time.perf_counter()
        cpu_started = time.process_time()
        for subject, payload, headers in prepared:
            futures.append(await js.publish_async(subject, payload, headers=headers))
        await js.publish_async_completed()
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        acks = await asyncio.gather(*futures)
        return seconds, cpu_seconds, sum(1 for ack in acks if not ack.duplicate)
    finally:
        await nc.drain()


# -- kubesim alone, and the relay's CPU stages ------------------------------------------------


async def _bare_watch(session: aiohttp.ClientSession, base: str, rv: str,
                      count: int) -> tuple[float, float, list[bytes]]:
    """The same replay the relay gets, read as kube.watching reads it: whatever has arrived,
    cut at the last newline.

    Returns (wall seconds, this process's CPU seconds, the event lines): the wall time is
    kubesim's serving (its own process), the CPU time the reading (and, here only, the
    splitting into lines)."""
    params = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true",
              "timeoutSeconds": "300"}
    lines: list[bytes] = []
    rest = b""
    started = time.perf_counter()
    cpu_started = time.process_time()
    async with session.get(f"{base}/api/v1/pods", params=params) as response:
        response.raise_for_status()
        while len(lines) < count:
            chunk = await response.content.readany()
            if not chunk:
                break
            *complete, rest = (rest + chunk).split(b"\n")
            lines.extend(line + b"\n" for line in complete
                         if line and b'"BOOKMARK"' not in line[:40])
    return time.perf_counter() - started, time.process_time() - cpu_started, lines[:count]


async def _bare_list(session: aiohttp.ClientSession, base: str, limit: int) -> tuple[float, int]:
    """A paginated list of every pod, as a relist reads it."""
    items = 0
    token = ""
    started = time.perf_counter()
    while True:
        params = {"limit": str(limit), **({"continue": token} if token else {})}
        async with session.get(f"{base}/api/v1/pods", params=params) as response:
            response.raise_for_status()
            page = msgspec.json.decode(await response.read())
        items += len(page["items"])
        token = page["metadata"].get("continue") or ""
        if not token:
            return time.perf_counter() - started, items


def _stages(lines: list[bytes], max_payload: int) -> dict[str, float]:
    """Microseconds per event for each pure step of Relay._enqueue_watched, on the real
    lines: a batch of watch lines decoded in one call into the pod view (as kube.watching
    does), translated, encoded into a message.

    In batches of 40 lines (about what one read of the socket brings) and chunks of 1,000
    whose results are dropped, as the relay drops them: keeping 100,000 decoded objects
    alive would time the garbage collector instead."""
    typed = msgspec.json.Decoder(TypedWatchEvent[Pod])
    spent = dict.fromkeys(("watch_decode", "translate", "message_encode"), 0.0)
    for start in range(0, len(lines), 1_000):
        blobs = [b"".join(lines[at:at + 40]) for at in range(start, start + 1_000, 40)]
        t0 = time.perf_counter()
        decoded = [event for blob in blobs for event in typed.decode_lines(blob)]
        t1 = time.perf_counter()
        events = [translating.translate("pod", "ADDED", typed_event.object)
                  for typed_event in decoded if typed_event.object is not None]
        t2 = time.perf_counter()
        for event in events:
            translating.message(event, max_payload=max_payload)
        t3 = time.perf_counter()
        for name, seconds in zip(spent, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            spent[name] += seconds
    out = {name: round(seconds / len(lines) * 1e6, 2) for name, seconds in spent.items()}
    out["total"] = round(sum(spent.values()) / len(lines) * 1e6, 2)
    return out


def _outgoing(created: list[bytes], max_payload: int) -> list[Outgoing]:
    """The messages the relay must publish for these pods, built by its own translator, in
    resourceVersion order: the order of the watch replay (creates ran concurrently)."""
    events = sorted((translating.translate("pod", "ADDED", translating.decode("pod", raw))
                     for raw in created), key=lambda event: int(event.resource_version))
    return [translating.message(event, max_payload=max_payload).outgoing for event in events]


def _settle_heap() -> None:
    """Collect, then exempt what is alive from later collections: every measured phase runs
    with the small heap a relay process has, not with the bench's 100,000-item lists."""
    gc.collect()
    gc.freeze()


# -- the benchmark --------------------------------------------------------------------------


async def relay(*, quick: bool = False) -> dict[str, Any]:
    count = 2_000 if quick else 100_000
    settings = RelaySettings()  # the production batch and queue sizes
    timeout = 120 + count / 500
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp:
        root = Path(tmp)
        nats_server = NatsServer(root / "nats")
        kubesim = _Kubesim(root / "kube", history=count + 10_000)
        try:
            await nats_server.start()
            await kubesim.start()
            assert nats_server.process is not None
            return await _measure(nats_server.url, kubesim, settings, count, timeout,
                                  nats_pid=nats_server.process.pid)
        finally:
            await kubesim.stop()
            await nats_server.stop()
            gc.unfreeze()


def _proc_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) another process has used so far, from /proc."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(nats_url: str, kubesim: _Kubesim, settings: RelaySettings, count: int,
                   timeout: float, *, nats_pid: int | None) -> dict[str, Any]:
    kubesim_pid = kubesim.process.pid
    http_timeout = aiohttp.ClientTimeout(total=timeout)
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    async with aiohttp.ClientSession(timeout=http_timeout, connector=connector) as session:
        started = time.perf_counter()
        before, created = await _load(session, kubesim.url, count)
        load_s = time.perf_counter() - started

        admin: Bus = await connect([nats_url], name="bench-admin")
        # a bare nats-py client too: the bench looks at the stream from outside
        observer = await nats.connect(nats_url, name="bench-observer")
        js = observer.jetstream()
        try:
            outgoing = _outgoing(created, admin.max_payload)
            payload_bytes = statistics.fmean(len(o.payload) for o in outgoing)
            del created
            _settle_heap()

            # 1. and 2., in pairs, so that both see the shared machine's load of the moment:
            # the relay, resuming its pod watch from before the pods (kubesim replays them
            # all) into a fresh stream; then the baseline, the same messages published by
            # bare nats-py into a fresh stream with the same settings. Medians count.
            replays: list[_RelayRun] = []
            raw_runs: list[float] = []
            raw_cpu: list[float] = []
            identical = True
            relay_messages = raw_messages = raw_stored = 0
            relay_bytes = raw_bytes = -1
            # CPU seconds of kubesim and nats-server during each run: (relay's, raw's)
            kubesim_cpu: list[float] = []
            nats_cpu: list[tuple[float, float]] = []
            for run in range(RUNS):
                await _fresh_stream(admin, js, settings)
                kubesim_before, nats_before = _proc_cpu(kubesim_pid), _proc_cpu(nats_pid)
                replays.append(await _run_relay(
                    nats_url, kubesim.kubeconfig, settings, want=count, label=f"replay-{run}",
                    checkpoint=before, timeout=timeout))
                kubesim_cpu.append(_proc_cpu(kubesim_pid) - kubesim_before)
                nats_relay = _proc_cpu(nats_pid) - nats_before
                relay_messages, relay_bytes = await _stream_state(js)
                identical = identical and await _same_as_stored(js, outgoing)

                await _fresh_stream(admin, js, settings)
                nats_before = _proc_cpu(nats_pid)
                seconds, cpu_seconds, raw_stored = await _raw_publish(nats_url, outgoing)
                nats_cpu.append((nats_relay, _proc_cpu(nats_pid) - nats_before))
                raw_runs.append(seconds)
                raw_cpu.append(cpu_seconds)
                raw_messages, raw_bytes = await _stream_state(js)
                if (relay_messages, raw_stored, raw_messages) != (count, count, count):
                    break
            replay = sorted(replays, key=lambda r: r.seconds)[len(replays) // 2]  # the median
            raw_s = statistics.median(raw_runs)
            del outgoing
            _settle_heap()

            # 3. the relist path: no checkpoint, a fresh stream, a relist of every pod
            await _fresh_stream(admin, js, settings)
            relist = await _run_relay(nats_url, kubesim.kubeconfig, settings, want=count + 2,
                                      label="relist", checkpoint=None, timeout=timeout)
            relist_messages, _ = await _stream_state(js)
            max_payload = admin.max_payload
        finally:
            await observer.close()
            await admin.close()

        # 4. kubesim alone: the same replay and the same list, read by bare clients
        watch_s, watch_cpu_s, lines = await _bare_watch(session, kubesim.url, before, count)
        list_s, listed = await _bare_list(session, kubesim.url, settings.batch_size)
    _settle_heap()
    stages = _stages(lines, max_payload)

    relay_rate = count / replay.seconds
    raw_rate = count / raw_s
    ratio_runs = [raw / run.seconds for run, raw in zip(replays, raw_runs, strict=True)]
    return {
        "pods": count,
        "path": "watch-replay",
        "setup": "kubesim in its own process; relay, raw publisher and nats-server share the "
                 "machine's cores with it",
        "batch_size": settings.batch_size,
        "queue_size": settings.queue_size,
        "relay_seconds": round(replay.seconds, 3),
        "relay_cpu_share": round(replay.cpu_seconds / replay.seconds, 3),
        "relay_events_per_s": round(relay_rate),
        "relay_events_per_s_runs": [round(count / r.seconds) for r in replays],
        "raw_publish_async_seconds": round(raw_s, 3),
        "raw_publish_async_per_s_runs": [round(count / seconds) for seconds in raw_runs],
        "raw_publish_async_per_s": round(raw_rate),
        # each pair's ratio compares the same moment of the shared machine; their median
        # is the figure that counts (the ratio of the two medians can pair a relay run
        # slowed by a load spike with a baseline run that missed it, and is kept beside it)
        "ratio": round(statistics.median(ratio_runs), 3),
        "ratio_runs": [round(ratio, 3) for ratio in ratio_runs],
        "ratio_of_medians": round(relay_rate / raw_rate, 3),
        "target_ratio": TARGET_RATIO,
        "relist_seconds": round(relist.seconds, 3),
        "relist_events_per_s": round(count / relist.seconds),
        "kubesim_watch_replay_seconds": round(watch_s, 3),
        "kubesim_watch_events_per_s": round(len(lines) / watch_s),
        "kubesim_list_seconds": round(list_s, 3),
        # per event, in this process: reading the watch (aiohttp readany), then the pure
        # steps of Relay._enqueue_watched; beside them the whole relay's and the raw
        # publisher's
        "watch_read_cpu_us_per_event": round(watch_cpu_s / len(lines) * 1e6, 2),
        "enqueue_steps_us_per_event": stages,
        "relay_total_cpu_us_per_event": round(replay.cpu_seconds / count * 1e6, 1),
        "raw_publish_wall_us_per_event": round(raw_s / count * 1e6, 1),
        "raw_publish_cpu_us_per_event": round(statistics.median(raw_cpu) / count * 1e6, 1),
        # where each side's work is done, per event (medians over the runs): on 2 cores the
        # relay's path needs three processes to run, the baseline's two
        "cpu_us_per_event": {
            "relay_path": {
                "relay": round(replay.cpu_seconds / count * 1e6, 1),
                "kubesim": round(statistics.median(kubesim_cpu) / count * 1e6, 1),
                "nats_server": round(statistics.median(n for n, _ in nats_cpu) / count * 1e6,
                                     1)},
            "raw_path": {
                "publisher": round(statistics.median(raw_cpu) / count * 1e6, 1),
                "nats_server": round(statistics.median(n for _, n in nats_cpu) / count * 1e6,
                                     1)}},
        "payload_bytes_mean": round(payload_bytes),
        "watch_line_bytes_mean": round(statistics.fmean(len(line) for line in lines)),
        "load_pods_seconds": round(load_s, 3),
        "relay_stream_messages": relay_messages,
        "raw_stream_messages": raw_messages,
        "relist_stream_messages": relist_messages,
        "same_messages": identical and relay_bytes == raw_bytes,
        "all_delivered": (relay_messages == raw_messages == raw_stored == count
                          and all(r.published == count for r in replays)
                          and relist.published == count + 2
                          and relist_messages == count + 2 and len(lines) == listed == count),
    }

