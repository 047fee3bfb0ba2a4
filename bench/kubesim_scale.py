"""Is kubesim ever the bottleneck? 100,000 pods in memory; several watchers at 5,000 events/s.

store: creates pods through the full ApiServer pipeline (defaulting,
validation, admission with no webhooks, storage, history) and lists them;
the baseline is the least any JSON object store must do per pod (decode the
JSON into a dict and keep it).

watch: kubesim serves several HTTP watch streams from a separate client
process while pods are updated through the pipeline; the baseline is a bare
aiohttp server streaming pre-encoded lines of the same size to the same
number of clients, i.e. what the transport alone can carry on this machine.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import time
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from clusterregistry_sandbox.supervising import wait_for
from kubesim.apiserver import ApiServer
from kubesim.serving import Server
from kubesim.storage import Store


def _pod(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"pod-{i:06d}", "namespace": "bench",
                     "labels": {"app": f"app-{i % 100}", "tier": "edge"},
                     "annotations": {"clusterregistry.io/original-images":
                                     '{"main":"registry.example.com/nf/upf:1.2"}'}},
        "spec": {"containers": [{"name": "main", "image": "edge.local:5000/nf/upf:1.2",
                                 "ports": [{"containerPort": 8080}]}],
                 "nodeName": f"node-{i % 3 + 1}"},
    }


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def store(*, quick: bool = False) -> dict[str, Any]:
    count = 2_000 if quick else 100_000
    pods = [_pod(i) for i in range(count)]
    encoded = [msgspec.json.encode(p) for p in pods]

    gc.collect()
    before = _rss_mib()
    started = time.perf_counter()
    baseline: dict[tuple[str, str], Any] = {}
    for raw in encoded:
        obj = msgspec.json.decode(raw)
        baseline[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
    baseline_s = time.perf_counter() - started
    baseline_mib = _rss_mib() - before
    del baseline
    gc.collect()

    api = ApiServer(store=Store(history=count))
    await api.start()
    resource = api.lookup("", "v1", "pods")
    await api.create(api.lookup("", "v1", "namespaces"),
                     {"metadata": {"name": "bench"}})
    before = _rss_mib()
    started = time.perf_counter()
    for raw in encoded:
        await api.create(resource, msgspec.json.decode(raw), namespace="bench")
    create_s = time.perf_counter() - started
    store_mib = _rss_mib() - before
    started = time.perf_counter()
    items, _, _, _ = api.list_stored(resource, namespace="bench")
    list_s = time.perf_counter() - started
    started = time.perf_counter()
    selected, _, _, _ = api.list_stored(resource, namespace="bench", label_selector="app=app-7",
                                        field_selector="spec.nodeName=node-2")
    select_s = time.perf_counter() - started
    await api.stop()
    assert len(items) == count
    return {
        "pods": count,
        "kubesim_creates_per_s": round(count / create_s),
        "baseline_decode_and_keep_per_s": round(count / baseline_s),
        "ratio_kubesim_to_baseline": round((count / create_s) / (count / baseline_s), 3),
        "kubesim_rss_mib": round(store_mib, 1),
        "baseline_rss_mib": round(baseline_mib, 1),
        "list_all_s": round(list_s, 3),
        "list_selected_s": round(select_s, 3),
        "selected": len(selected),
    }


# -- watch ----------------------------------------------------------------------------------


def _watchers(url: str, count: int, expect: int, queue: Any) -> None:
    """Child process: `count` watch streams, each reading until `expect` events arrived."""

    async def one(session: aiohttp.ClientSession) -> tuple[int, float, float]:
        seen = 0
        first = last = 0.0
        async with session.get(url) as response:
            async for _line in response.content:
                seen += 1
                now = time.perf_counter()
                if seen == 1:
                    first = now
                last = now
                if seen >= expect:
                    break
        return seen, first, last

    async def run() -> list[tuple[int, float, float]]:
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            return await asyncio.gather(*(one(session) for _ in range(count)))

    queue.put(asyncio.run(run()))


def _rate(results: list[tuple[int, float, float]]) -> float:
    """Events per second per watcher, over the whole delivery span."""
    first = min(r[1] for r in results)
    last = max(r[2] for r in results)
    per_watcher = min(r[0] for r in results)
    return per_watcher / (last - first) if last > first else 0.0


async def _bare_server(line: bytes, total: int) -> tuple[web.AppRunner, int, asyncio.Event]:
    go = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await go.wait()
        batch = line * 100
        for _ in range(total // 100):
            await response.write(batch)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/watch", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port, go


async def watch(*, quick: bool = False) -> dict[str, Any]:
    watchers = 4
    events = 2_000 if quick else 50_000
    context = multiprocessing.get_context("spawn")

    api = ApiServer(store=Store(history=events * 2))
    await api.start()
    pods = api.lookup("", "v1", "pods")
    await api.create(api.lookup("", "v1", "namespaces"), {"metadata": {"name": "bench"}})
    for i in range(100):
        await api.create(pods, _pod(i), namespace="bench")
    server = Server(api)
    await server.start()
    start_rv = api.store.rv
    url = f"{server.url}/api/v1/namespaces/bench/pods?watch=1&resourceVersion={start_rv}"
    queue = context.Queue()
    child = context.Process(target=_watchers, args=(url, watchers, events, queue))
    child.start()
    # wait until every watcher is connected before writing
    bucket = api.store.bucket(pods)

    async def connected() -> bool:
        return len(bucket.watchers) >= watchers

    await wait_for(connected, timeout=60, description="kubesim watchers connected")
    sample = b""
    started = time.perf_counter()
    for n in range(events):
        obj = await api.patch(pods, namespace="bench", name=f"pod-{n % 100:06d}",
                              patch={"metadata": {"labels": {"n": str(n)}}},
                              patch_type="application/merge-patch+json")
        if n == 0:
            sample = msgspec.json.encode({"type": "MODIFIED", "object": obj}) + b"\n"
        if n % 200 == 0:
            await asyncio.sleep(0)  # let the server write to the sockets
    write_s = time.perf_counter() - started
    results = await asyncio.to_thread(queue.get)
    child.join()
    await server.stop()
    await api.stop()
    kubesim_rate = _rate(results)

    runner, port, go = await _bare_server(sample, events)
    queue = context.Queue()
    child = context.Process(target=_watchers, args=(f"http://127.0.0.1:{port}/watch", watchers,
                                                    events, queue))
    child.start()

    async def baseline_connected() -> bool:
        return len(getattr(runner.server, "connections", ())) >= watchers

    await wait_for(baseline_connected, timeout=60, description="baseline watchers connected")
    go.set()
    baseline = await asyncio.to_thread(queue.get)
    child.join()
    await runner.cleanup()
    baseline_rate = _rate(baseline)
    return {
        "watchers": watchers,
        "events": events,
        "event_bytes": len(sample),
        "kubesim_writes_per_s": round(events / write_s),
        "kubesim_events_per_s_per_watcher": round(kubesim_rate),
        "baseline_events_per_s_per_watcher": round(baseline_rate),
        "ratio_kubesim_to_baseline": round(kubesim_rate / baseline_rate, 3) if baseline_rate
        else None,
        "target_events_per_s_per_watcher": 5000,
        "all_delivered": all(r[0] == events for r in results),
    }
