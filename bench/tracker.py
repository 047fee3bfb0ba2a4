"""Tracker throughput and memory: 100,000 pods in 5,000 owners, beside a bare consumer.

What is measured: a real nats-server holds CLUSTERREGISTRY_KUBE with what the
relay would publish for 5,000 ReplicaSets (ADDED, a two-container template)
and their 100,000 pods (ADDED, 20 per owner, the two template images as the
webhook's originals plus an injected sidecar the template does not name), in
the order a relay publishes them: every ReplicaSet, then every pod (the relay
runs one watch per kind). Setup, not measured.

"tracker": a `Tracker` (early loading on, production batch size) in this
process reads the stream from the start through its durable consumer until
it has acked every message: decoding, `owners.handle`, the revision-checked
KV writes (one per owner for its template, one more at its first pod for the
sidecar: 10,000 writes; the other 95,000 pods change nothing) and the acks.
Pod events per second are the pods over that time; its memory is the growth
of this process's resident set over the run (the cache of owner records, the
consumer's buffers), and the records' size as stored.

Baseline, same run, same server: a bare durable pull consumer of the same
stream with the same batch size that decodes every message into a KubeEvent
and acks it, nothing else: the floor of any consumer of this stream in
Python. `ratio` is tracker throughput over baseline throughput.

"two_replicas": the same stream read again from the start (consumer and
bucket deleted) by two tracker processes sharing the one durable consumer,
as two Deployment replicas do; timed from the moment both are started and
warm until the consumer's ack floor reaches the stream's last message. Each
reports what it applied and its own memory growth. `scaling` is their
throughput over the single in-process tracker's (below 2 on a machine whose
two cores also run nats-server and the bench).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from prometheus_client import CollectorRegistry

from clusterregistry import schemas, subjects
from clusterregistry.bus.connecting import connect
from clusterregistry.bus.pulling import ConsumerSpec, Puller
from clusterregistry.bus.streams import ensure_stream
from clusterregistry.config import TrackerSettings
from clusterregistry.schemas import Container, KubeEvent, OwnerRef, PodState, TemplateState
from clusterregistry.tracker.metrics import TrackerMetrics
from clusterregistry.tracker.tracking import Tracker
from clusterregistry_sandbox.natsservers import NatsServer

LOCAL = "clusterregistry.clusterregistry.svc:5000"
SIDECAR = "docker.io/istio/proxyv2:1.20.0"
ROOT = Path(__file__).resolve().parents[1]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _events(owners: int, pods: int) -> list[tuple[str, bytes, str]]:
    """(subject, payload, msg id) in relay order: every owner, then every pod."""
    out: list[tuple[str, bytes, str]] = []
    per_owner = pods // owners
    rv = 1000
    for o in range(owners):
        rv += 1
        app, db = f"acr.example.io/nf/app{o % 500}:{o}", f"acr.example.io/nf/db{o % 50}:1"
        event = KubeEvent(
            type="ADDED", kind="replicaset", namespace=f"ns{o % 50}", name=f"rs-{o}",
            uid=f"rs-uid-{o}", resource_version=str(rv),
            template=TemplateState(containers=[Container(name="app", image=app),
                                               Container(name="db", image=db)],
                                   image_pull_secrets=["acr-pull"], replicas=per_owner))
        out.append((subjects.kube("replicaset", event.namespace, event.uid),
                    schemas.encode(event), f"{event.uid}:{rv}:ADDED"))
    for o in range(owners):
        app, db = f"acr.example.io/nf/app{o % 500}:{o}", f"acr.example.io/nf/db{o % 50}:1"
        owner = OwnerRef(kind="ReplicaSet", name=f"rs-{o}", uid=f"rs-uid-{o}",
                         api_version="apps/v1")
        for p in range(per_owner):
            rv += 1
            uid = f"pod-uid-{o}-{p}"
            event = KubeEvent(
                type="ADDED", kind="pod", namespace=f"ns{o % 50}", name=f"rs-{o}-{p}", uid=uid,
                resource_version=str(rv), owner=owner, pod=PodState(
                    containers=[
                        Container(name="app", image=f"{LOCAL}/{app}", original_image=app),
                        Container(name="db", image=f"{LOCAL}/{db}", original_image=db),
                        Container(name="istio-proxy", image=SIDECAR)],
                    image_pull_secrets=["acr-pull"], phase="Pending", node_name="node-1"))
            out.append((subjects.kube("pod", event.namespace, uid), schemas.encode(event),
                        f"{uid}:{rv}:ADDED"))
    return out


async def _load(url: str, events: list[tuple[str, bytes, str]]) -> None:
    """The stream as the relay makes it, filled by a bare nats-py publisher (fast, and not
    what is measured)."""
    async with await connect([url], name="bench-admin") as bus:
        await ensure_stream(bus, name=subjects.KUBE_STREAM, subjects=[subjects.KUBE_ALL])
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for start in range(0, len(events), 2000):
            acks = [await js.publish_async(subject, payload,
                                           headers={subjects.MSG_ID_HEADER: msg_id})
                    for subject, payload, msg_id in events[start:start + 2000]]
            await asyncio.gather(*acks)
    finally:
        await nc.close()


async def _baseline(url: str, total: int, batch: int) -> float:
    """Seconds for a bare consumer to fetch, decode and ack every message."""
    bus = await connect([url], name="bench-baseline")
    puller = Puller(bus, ConsumerSpec(stream=subjects.KUBE_STREAM, durable="bench-baseline",
                                         filter_subject=subjects.KUBE_ALL,
                                         max_ack_pending=batch))
    try:
        await puller.start()
        started = time.perf_counter()
        done = 0
        while done < total:
            for msg in await puller.fetch(batch, timeout=5.0):
                schemas.kube_event_decoder.decode(msg.data)
                await msg.ack()
                done += 1
        return time.perf_counter() - started
    finally:
        await puller.stop()
        await bus.close()
        nc = await nats.connect(url)
        try:
            await nc.jetstream().delete_consumer(subjects.KUBE_STREAM, "bench-baseline")
        finally:
            await nc.close()


async def _tracker(url: str, total: int, settings: TrackerSettings) -> dict[str, Any]:
    bus = await connect([url], name="bench-tracker")
    registry = CollectorRegistry()
    tracker = Tracker(bus=bus, settings=settings, early_loading=True, local_registry=LOCAL,
                      identity="bench", metrics=TrackerMetrics(registry))
    await tracker.prepare()  # bucket and consumer made, as the replicas below are
    gc.collect()
    rss_before = _rss_bytes()
    stop = asyncio.Event()
    started = time.perf_counter()
    cpu_started = time.process_time()
    task = asyncio.create_task(tracker.run(stop))
    try:
        while tracker.applied < total:
            if task.done():
                task.result()
                raise RuntimeError("the tracker stopped early")
            await asyncio.sleep(0.05)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        rss_after = _rss_bytes()
        owners = len([v for v in tracker._cache.values() if v.value is not None])
        stored = sum(len(schemas.encode(v.value)) for v in tracker._cache.values()
                     if v.value is not None)
        writes = registry.get_sample_value("clusterregistry_tracker_kv_writes_total",
                                           {"operation": "put"}) or 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await bus.close()
    return {"seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "owners": owners,
            "kv_writes": int(writes), "rss_growth_mb": round((rss_after - rss_before) / 2**20, 1),
            "records_stored_mb": round(stored / 2**20, 2)}


async def _replica(url: str) -> None:
    """A tracker replica as its own process (`--replica URL`): warm, say so, wait for "go",
    run until stdin closes, report as JSON."""
    bus = await connect([url], name="bench-replica")
    tracker = Tracker(bus=bus, settings=TrackerSettings(), early_loading=True,
                      local_registry=LOCAL, identity=f"bench-{os.getpid()}",
                      metrics=TrackerMetrics(CollectorRegistry()))
    await tracker.prepare()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    gc.collect()
    rss_before = _rss_bytes()
    print("ready", flush=True)
    await reader.readline()
    cpu_started = time.process_time()
    stop = asyncio.Event()
    task = asyncio.create_task(tracker.run(stop))
    await reader.readline()  # "stop", or EOF
    stop.set()
    await asyncio.wait_for(task, 30)
    print(json.dumps({"applied": tracker.applied,
                      "cpu_seconds": round(time.process_time() - cpu_started, 3),
                      "rss_growth_mb": round((_rss_bytes() - rss_before) / 2**20, 1)}),
          flush=True)
    await bus.close()


async def _two_replicas(url: str, total: int) -> dict[str, Any]:
    nc = await nats.connect(url)  # a bare nats-py client: the bench's own, to reset and watch
    admin = nc.jetstream()
    children: list[asyncio.subprocess.Process] = []
    try:
        # from the start again: no consumer, no records
        await admin.delete_consumer(subjects.KUBE_STREAM, subjects.TRACKER_CONSUMER)
        await admin.delete_key_value(subjects.REFS_BUCKET)
        for _ in range(2):
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.tracker", "--replica", url, cwd=ROOT,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            children.append(child)
        for child in children:
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), 120)
            if line.strip() != b"ready":
                raise RuntimeError(f"a replica did not start: {line!r}")
        started = time.perf_counter()
        for child in children:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            await child.stdin.drain()
        while True:
            info = await admin.consumer_info(subjects.KUBE_STREAM, subjects.TRACKER_CONSUMER)
            if info.ack_floor is not None and info.ack_floor.stream_seq >= total:
                break
            await asyncio.sleep(0.05)
        seconds = time.perf_counter() - started
        reports = []
        for child in children:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(b"stop\n")
            await child.stdin.drain()
            reports.append(json.loads(await asyncio.wait_for(child.stdout.readline(), 60)))
            await child.wait()
        return {"seconds": round(seconds, 3), "replicas": reports}
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()
        await nc.close()


async def tracker(*, quick: bool = False) -> dict[str, Any]:
    owners, pods = (500, 10_000) if quick else (5_000, 100_000)
    settings = TrackerSettings()  # the production batch size
    events = _events(owners, pods)
    total = len(events)
    with tempfile.TemporaryDirectory(prefix="bench-tracker-") as tmp:
        server = NatsServer(Path(tmp) / "nats")
        await server.start()
        try:
            load_started = time.perf_counter()
            await _load(server.url, events)
            load_s = time.perf_counter() - load_started
            del events
            gc.collect()
            baseline_s = await _baseline(server.url, total, settings.batch_size)
            measured = await _tracker(server.url, total, settings)
            two = await _two_replicas(server.url, total)
        finally:
            await server.stop()
    tracker_rate = total / measured["seconds"]
    baseline_rate = total / baseline_s
    return {
        "owners": owners, "pods": pods, "messages": total, "load_seconds": round(load_s, 2),
        "tracker": {**measured, "messages_per_second": round(tracker_rate),
                    "pod_events_per_second": round(pods / measured["seconds"]),
                    "cpu_us_per_message": round(measured["cpu_seconds"] / total * 1e6, 1)},
        "baseline_decode_and_ack": {"seconds": round(baseline_s, 3),
                                    "messages_per_second": round(baseline_rate)},
        "ratio": round(tracker_rate / baseline_rate, 3),
        "two_replicas": {**two, "pod_events_per_second": round(pods / two["seconds"]),
                         "scaling": round(measured["seconds"] / two["seconds"], 3)},
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--replica"]:
        asyncio.run(_replica(sys.argv[2]))
    else:
        print(json.dumps(asyncio.run(tracker(quick=True)), indent=2))
