"""Per-node pull throughput of the simulated kubelet against a bare GET + sha256 of the same blobs.

Why: issue 14 asks that a node's image pulls never be what limits a
benchmark (or a sandbox scenario): `Puller.pull` must reach at least 0.8 x
the throughput of the least any client can do with the same bytes.

What is measured: images built from random (incompressible) layer bytes,
"large" (4 layers of 64 MiB) and "many" (40 layers of 1 MiB), pushed once to
a real `docker-registry` (distribution, plain HTTP on 127.0.0.1). Each round:

- `ours`: `Puller.pull` of the image by tag into a fresh, empty node content
  store (so every blob is fetched): resolve (HEAD), the manifest, then the
  config and every layer, three at a time, each streamed into an ingest file
  with its sha256 and size checked on the way and committed by rename;
- `bare`: a bare aiohttp GET of the same blobs (config and layers) with
  `hashlib.sha256` over the bytes as they arrive, the bytes then dropped.
  It runs with the same concurrency as the puller (CONCURRENT_DOWNLOADS, 3
  at a time, containerd's max_concurrent_downloads) and one kept-alive
  session, as the puller has, so the two differ only in what a pull adds:
  the resolve and manifest requests, the auth/error handling, and writing
  every byte to the node's store.

The two alternate within each round, the order rotating from round to round,
so a burst of load on the (shared, 2-core) machine hits each in turn; the
median of the rounds counts. Throughput is blob bytes / wall seconds.

`pull_ratio_to_bare` = ours MiB/s / bare MiB/s (= bare seconds / ours
seconds, the bytes being the same): 1.0 means a pull costs no more than
fetching and hashing its blobs, and the goal is >= 0.8 (the figure at the
top is the lowest of the images'). `paired_ratios` are the same ratio within
each round (the two ran seconds apart), steadier while other work on the
machine comes and goes.

Where the time goes: the CPU seconds of this process per pull (HTTP parsing,
hashing, writes; `time.process_time`, every thread) and of the registry
(serving, from /proc), for both; `sha256` is hashlib over the same bytes held
in memory, the floor of verifying them on one core.

What perf showed (2 vCPUs, ext4 without a journal, shared with other work):
a pull of the large image done all on the event loop spent ~45% of its CPU
in sha256, ~10% in the socket reads, ~20% writing to the page cache (a
quarter to a half of that in ext4's per-page delayed allocation) and ~10% in
Python; the bare GET is the same minus the writes, so on one core the pull
could not pass ~0.75-0.8. Hence the store reserves blocks ahead of its
writes (`Ingest.write`), and a large blob is hashed and written in a thread
of its own, a 4 MiB batch at a time, while the loop reads the next batch
(`RegistryClient._fetch_blob`): the pull then uses a second core when there
is one. Handing bytes to another core costs ~5-10% more CPU, so small blobs
stay on the loop, and on a machine with no idle core the ratio falls back
towards the CPU ratio. For the many-layer image both sides wait mostly on
the registry (~3.5 ms of its CPU per request); a pull adds the resolve and
manifest requests and, per blob, creating the ingest file (~0.3 ms of CPU on
this journal-less ext4, which scans past recently deleted inodes) and its
writes, which go in one writev per batch (a write per received piece cost
~0.3 ms more per 1 MiB blob: 0.76-0.81 of bare before, 0.82-0.91 after).

Figures on the quiet 2-core machine, 5 runs after that change: the headline
(the lower image) 0.70-0.83, median 0.79; the large image 0.70-0.85, the
many-layer one 0.82-0.91. The large image is CPU-bound on two cores (the
registry serving, this process reading, hashing and writing): its ratio is
about bare's CPU over ours, and the writes into the page cache are what a
pull must add.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.mirror import _cpu_seconds, _median, _pid
from clusterregistry_sandbox.images import BuiltImage, ImageBuilder, push
from clusterregistry_sandbox.registries import Registry
from kubesim.controllers.pulling import CONCURRENT_DOWNLOADS, Puller, RegistryClient
from kubesim.controllers.references import parse_reference

MiB = 1 << 20
RUNS = 5
GOAL = 0.8
NODE = "node-1"


async def _ours(client: RegistryClient, root: Path, registry: Registry, repo: str,
                image: BuiltImage) -> dict[str, Any]:
    """One pull into an empty node store under `root`, removed afterwards."""
    puller = Puller(client, root)
    ref = parse_reference(f"{registry.host}/{repo}:{image.tag}")
    cpu, serving = time.process_time(), _cpu_seconds(_pid(registry))
    started = time.perf_counter()
    pulled = await puller.pull(NODE, ref)
    seconds = time.perf_counter() - started
    cpu, serving = time.process_time() - cpu, _cpu_seconds(_pid(registry)) - serving
    expected = sum(blob.size for blob in image.blobs)
    if pulled.record.digest != image.digest or pulled.fetched != expected:
        raise RuntimeError(f"pull of {repo} is wrong: {pulled}")
    # deleted at once: its dirty pages are dropped, not written back under the next round
    shutil.rmtree(root, ignore_errors=True)
    return {"seconds": seconds, "cpu_seconds": {"self": cpu, "registry": serving}}


async def _bare(session: aiohttp.ClientSession, registry: Registry, repo: str,
                image: BuiltImage) -> dict[str, Any]:
    """GET every blob, CONCURRENT_DOWNLOADS at a time, sha256 over the bytes, drop them."""
    gate = asyncio.Semaphore(CONCURRENT_DOWNLOADS)

    async def one(digest: str) -> None:
        async with gate, session.get(f"{registry.url}/v2/{repo}/blobs/{digest}") as response:
            response.raise_for_status()
            hasher = hashlib.sha256()
            async for chunk in response.content.iter_any():
                hasher.update(chunk)
        if "sha256:" + hasher.hexdigest() != digest:
            raise RuntimeError(f"blob {digest} of {repo} has the wrong digest")

    cpu, serving = time.process_time(), _cpu_seconds(_pid(registry))
    started = time.perf_counter()
    await asyncio.gather(*(one(blob.digest) for blob in image.blobs))
    seconds = time.perf_counter() - started
    cpu, serving = time.process_time() - cpu, _cpu_seconds(_pid(registry)) - serving
    return {"seconds": seconds, "cpu_seconds": {"self": cpu, "registry": serving}}


def _sha256(blobs: list[bytes]) -> float:
    started = time.perf_counter()
    for data in blobs:
        hashlib.sha256(data).hexdigest()
    return time.perf_counter() - started


def _summary(runs: list[dict[str, Any]], total: int) -> dict[str, Any]:
    seconds = _median(runs, "seconds")
    return {"seconds": round(seconds, 3), "MiB_per_s": round(total / MiB / seconds, 1),
            "runs": [round(r["seconds"], 3) for r in runs],
            "cpu_seconds_per_pull": {k: round(_median(runs, "cpu_seconds", k), 3)
                                     for k in runs[0]["cpu_seconds"]}}


async def _measure_image(repo: str, image: BuiltImage, *, registry: Registry,
                         client: RegistryClient, session: aiohttp.ClientSession, stores: Path,
                         runs: int) -> dict[str, Any]:
    blobs = [image.read_blob(blob.digest) for blob in image.blobs]
    total = sum(len(data) for data in blobs)
    # one untimed pull each: connections opened, the registry's files in the page cache
    await _ours(client, stores / "warm-up", registry, repo, image)
    await _bare(session, registry, repo, image)
    ours: list[dict[str, Any]] = []
    bare: list[dict[str, Any]] = []
    for run in range(runs):
        # the order rotates, so a burst of load on the shared machine hits each in turn
        steps = ["ours", "bare"]
        for step in steps[run % 2:] + steps[:run % 2]:
            if step == "ours":
                ours.append(await _ours(client, stores / f"{repo}-{run}", registry, repo,
                                        image))
            else:
                bare.append(await _bare(session, registry, repo, image))
    hashing = statistics.median(_sha256(blobs) for _ in range(runs))
    ours_s, bare_s = _median(ours, "seconds"), _median(bare, "seconds")
    return {
        "blobs": len(blobs), "bytes": total,
        "ours": _summary(ours, total),
        "bare": _summary(bare, total),
        "sha256": {"seconds": round(hashing, 3), "MiB_per_s": round(total / MiB / hashing, 1)},
        # ours MiB/s over bare MiB/s (= bare seconds / ours seconds): >= GOAL is the goal
        "pull_ratio_to_bare": round(bare_s / ours_s, 3),
        "paired_ratios": sorted(round(b["seconds"] / o["seconds"], 3)
                                for o, b in zip(ours, bare, strict=True)),
    }


async def kubelet(*, quick: bool = False) -> dict[str, Any]:
    shapes = {"large": (4, (1 if quick else 64) * MiB, 21),
              "many": (40 if not quick else 8, MiB if not quick else MiB // 8, 22)}
    runs = 2 if quick else RUNS
    with tempfile.TemporaryDirectory(prefix="bench-kubelet-") as tmp:
        root = Path(tmp)
        builder = ImageBuilder(root / "images", seed=14)
        registry = Registry(root / "registry", name="registry", log_level="warn")
        client = RegistryClient(insecure_registries=[registry.host])
        await registry.start()
        try:
            async with aiohttp.ClientSession(auto_decompress=False) as session:
                results: dict[str, Any] = {}
                for name, (count, size, seed) in shapes.items():
                    repo = f"bench/{name}"
                    image = builder.build(repo, layer_sizes=[size] * count, seed=seed)
                    await push(image, dest_ref=f"{registry.host}/{repo}:{image.tag}",
                               tls_verify=False)
                    results[f"{name}_{count}x{size / MiB:g}MiB"] = await _measure_image(
                        repo, image, registry=registry, client=client, session=session,
                        stores=root / "nodes", runs=runs)
        finally:
            await client.close()
            await registry.stop()
    ratio = min(r["pull_ratio_to_bare"] for r in results.values())
    return {"images": results, "runs": runs, "concurrent_downloads": CONCURRENT_DOWNLOADS,
            "pull_ratio_to_bare": ratio, "goal": GOAL, "meets_goal": ratio >= GOAL}
