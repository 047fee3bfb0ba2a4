"""Mirror throughput: the copy engine against `skopeo copy`, registry A to a fresh registry.

What is measured: two images built from random (incompressible) layer bytes,
"large" (4 layers of 64 MiB) and "many" (40 layers of 1 MiB), pushed once to
registry A (a real `docker-registry`, plain HTTP on 127.0.0.1). Each run
copies one image from A into a registry that was just started empty:

- `clusterregistry`: `Copier.copy` in this process, with the default
  CopyOptions (6 blobs in flight, streamed, sha256 and size checked here, inline);
- `skopeo`: `skopeo copy --all --preserve-digests` from A into another fresh
  registry (its own digest checks, its default parallelism), in the same run,
  alternating with ours so machine noise hits both alike;
- `clusterregistry_registry_verified`: the same with `verify_locally=False`
  (the destination registry alone checks each sha256 before committing), to
  show what this process's own hash pass costs;
- `sha256`: `hashlib.sha256` over the same blob bytes held in memory: the
  physical floor of verifying them on one core.

Each is timed wall-clock from the first request to the tag pushed (skopeo:
process start to exit); the median of `RUNS` runs counts, the order of the
three copies rotating from run to run. Throughput is blob bytes / seconds.
The goal is a ratio (skopeo's time / ours, default options) of at least 1.5
on both images.

Where the time goes: for our copies, the CPU seconds of this process (the
copier: HTTP, hashing), of registry A (serving) and of the destination
registry (receiving, its own hashing, writing), read from /proc; the same
for skopeo and its registries. Plus floors measured in isolation: reading
every blob from A without uploading it (`source_read`), and a cProfile of one
copy of each image (top functions by own time). `cpu_bound_ceiling_vs_skopeo`
is the ratio a copier whose only cost is its sha256 pass would reach on a
CPU-bound machine (skopeo's CPU over the registries' plus that floor).

What perf shows (2 cores, Debian's distribution 2.8 and skopeo 1.9, both
built with a Go whose sha256 has no SHA-NI path): crypto/sha256.block is
91-95% of the user CPU of the destination registry (~0.8 of its ~1.0 CPU-s
per 256 MiB, whoever uploads, in one PUT or in PATCHes) and of skopeo's
(~0.77 CPU-s); this process hashes with OpenSSL's SHA-NI code (~0.19 s).
Skopeo's process start is ~15 ms of its time.

Where the rest goes (`machine_waits_core_seconds`, from /proc/stat): distribution's
filesystem driver fsyncs an upload when it commits it (and at the end of every
PATCH). Blobs copied side by side finish together, so every copy, skopeo's too,
ends with one fsync of all their bytes while the cores idle: strace shows four
concurrent 64 MiB fsyncs of 0.13-0.17 s, about 0.2 core-seconds of iowait per
copy of the large image. Uploading large blobs in PATCH chunks whose ends are
staggered across blobs removes that tail (no fsync over 35 ms, iowait 0.19 ->
0.07) but pauses each stream at every chunk end; measured over 12 interleaved
rounds it gained 1.5% on 4 x 64 MiB and lost 17% on a one-layer 240 MiB image,
so blobs up to `chunked_threshold` (256 MiB) still go in one PUT.

`target_budget_core_seconds` is the arithmetic of the goal: cores x wall =
the CPU of the three processes + idle + iowait, and the registries' CPU is the
same whoever copies. At the target the wall is skopeo's / 1.5, which leaves
`available_for_copier_and_waits`; `copier_and_waits_now` is what they take.

Whole processes, as a user runs them (issue 16), on the large image:

- `cli_wall_ratio`: skopeo's wall time over `clusterregistry copy`'s, each a
  whole process from exec to exit into a fresh registry, median of 3 rounds
  (the order alternating): how many times skopeo's speed ours is, so higher is
  better (goal >= 1.2).
- `cli_cpu_ratio`: the `clusterregistry copy` process's own CPU-seconds over
  skopeo's (each read from the rusage of the reaped child; the registries'
  excluded), medians of the same rounds; lower is better (goal <= 0.5).
- `flaky_source_bytes_ratio`: through a fault proxy in front of registry A
  that cuts every connection each 16 MiB (quick: a quarter of a layer), the
  bytes the proxy forwarded from A over the image's bytes (goal <= 1.1),
  and beside it `skopeo_flaky_source_bytes_ratio` (`--retry-times 5`). A copy
  that fails has no ratio: null, with the reason (its error).
- `rate_limit_error`: `clusterregistry copy --config` with
  `mirror.maxBytesPerSecond` set to a quarter of what the link carries
  unlimited (at most 64 MiB/s), the rate measured at a proxy in front of A,
  |measured - limit| / limit (goal <= 0.1). The rate is the sustained one,
  between 25 % and 90 % of the bytes: before that the socket buffers between
  the proxy and the copier (the proxy's send buffer, the copier's receive
  window) fill at loopback speed whatever the copier reads, which a real WAN
  link would not do at the sender's side. The first-to-last-byte rate, its
  error and the bytes that went ahead of the limit are reported beside it.
  Null, with the reason, while the setting does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import hashlib
import io
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from clusterregistry import config
from clusterregistry.oci.copying import Copier, CopyOptions
from clusterregistry.oci.registries import RegistryClient
from clusterregistry_sandbox.faults import FaultProxy, Faults
from clusterregistry_sandbox.images import BuiltImage, ImageBuilder, find_skopeo, push
from clusterregistry_sandbox.registries import Registry
from clusterregistry_sandbox.supervising import run_command

MiB = 1 << 20
RUNS = 5
TARGET_RATIO = 1.5
CLI_ROUNDS = 3
CLI_WALL_GOAL = 1.2  # ours at least 1.2 x skopeo's speed, whole processes
CLI_CPU_GOAL = 0.5  # ours at most half skopeo's CPU-seconds
FLAKY_BYTES_GOAL = 1.1
RATE_ERROR_GOAL = 0.1
FLAKY_CUT = 16 * MiB
CLI = str(Path(sys.executable).parent / "clusterregistry")
_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU of a process (and its waited-for children), from /proc."""
    if pid is None:
        return 0.0
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(v) for v in fields[11:15]) / _TICKS
    return 0.0


def _pid(registry: Registry) -> int | None:
    process = registry.process
    return process.pid if process is not None else None


def _machine_waits() -> tuple[float, float]:
    """Core-seconds the whole machine spent idle and in iowait so far, from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[4]) / _TICKS, int(fields[5]) / _TICKS


def _waits_since(before: tuple[float, float]) -> dict[str, float]:
    idle, iowait = _machine_waits()
    return {"idle": idle - before[0], "iowait": iowait - before[1]}


def _children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


class _Registries:
    """Fresh destination registries, each started empty and stopped after one copy."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0

    @contextlib.asynccontextmanager
    async def fresh(self, name: str) -> Any:
        self.count += 1
        registry = Registry(self.root / f"{name}-{self.count}", name=f"{name}-{self.count}",
                            log_level="warn")
        await registry.start()
        try:
            yield registry
        finally:
            await registry.stop()
            # deleted at once: its dirty pages are dropped, not written back under the next
            # copy (hundreds of MiB per copy would otherwise slow whichever tool runs next)
            shutil.rmtree(registry.state_dir, ignore_errors=True)


async def _ours(source: Registry, destination: Registry, repo: str, image: BuiltImage,
                *, options: CopyOptions | None = None,
                profile: cProfile.Profile | None = None) -> dict[str, Any]:
    src = RegistryClient(source.host, plain_http=True)
    dst = RegistryClient(destination.host, plain_http=True, actions="pull,push")
    cpu = {"self": time.process_time(), "source": _cpu_seconds(_pid(source)),
           "destination": _cpu_seconds(_pid(destination))}
    async with src, dst:
        if profile is not None:
            profile.enable()
        waits = _machine_waits()
        started = time.perf_counter()
        report = await Copier(options or CopyOptions()).copy(src, repo, image.tag, dst, repo,
                                                             tag=image.tag)
        seconds = time.perf_counter() - started
        idle = _waits_since(waits)
        if profile is not None:
            profile.disable()
    if report.digest != image.digest or report.blobs_copied != len(image.blobs):
        raise RuntimeError(f"copy of {repo} is wrong: {report}")
    return {"seconds": seconds, "requests": src.requests + dst.requests, "waits": idle,
            "cpu_seconds": {"copier": time.process_time() - cpu["self"],
                            "source_registry": _cpu_seconds(_pid(source)) - cpu["source"],
                            "destination_registry":
                                _cpu_seconds(_pid(destination)) - cpu["destination"]}}


async def _skopeo(source: Registry, destination: Registry, repo: str,
                  image: BuiltImage) -> dict[str, Any]:
    argv = [find_skopeo(), "--insecure-policy", "copy", "--all", "--preserve-digests",
            "--src-tls-verify=false", "--dest-tls-verify=false",
            f"docker://{source.host}/{repo}:{image.tag}",
            f"docker://{destination.host}/{repo}:{image.tag}"]
    cpu = {"children": _children_cpu(), "source": _cpu_seconds(_pid(source)),
           "destination": _cpu_seconds(_pid(destination))}
    waits = _machine_waits()
    started = time.perf_counter()
    result = await run_command(argv, timeout=600)
    seconds = time.perf_counter() - started
    idle = _waits_since(waits)
    if not result.ok:
        raise RuntimeError(f"skopeo failed: {result.output[-2000:]}")
    found = await destination.manifest(repo, image.tag)
    if found is None or found.digest != image.digest:
        raise RuntimeError(f"skopeo's copy of {repo} has the wrong digest: {found}")
    return {"seconds": seconds, "waits": idle,
            "cpu_seconds": {"skopeo": _children_cpu() - cpu["children"],
                            "source_registry": _cpu_seconds(_pid(source)) - cpu["source"],
                            "destination_registry":
                                _cpu_seconds(_pid(destination)) - cpu["destination"]}}


def _sha256(blobs: list[bytes]) -> float:
    started = time.perf_counter()
    for data in blobs:
        hashlib.sha256(data).hexdigest()
    return time.perf_counter() - started


async def _source_read(source: Registry, repo: str, image: BuiltImage) -> float:
    """Every blob read from A and dropped, 6 at a time: the input floor of a copy."""
    async with RegistryClient(source.host, plain_http=True) as client:
        slots = asyncio.Semaphore(6)

        async def read(digest: str) -> None:
            async with slots:
                response = await client.open_blob(repo, digest)
                async with response:
                    # the pieces as received, unjoined, as the copier reads them
                    async for _ in response.content.iter_chunks():
                        pass

        started = time.perf_counter()
        await asyncio.gather(*(read(blob.digest) for blob in image.blobs))
        return time.perf_counter() - started


def _top(profile: cProfile.Profile, count: int = 12) -> list[dict[str, Any]]:
    stats = pstats.Stats(profile, stream=io.StringIO())
    rows = []
    for (filename, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(filename).name}:{line}:{name}", "calls": calls,
                     "own_seconds": round(own, 3), "cumulative_seconds": round(cumulative, 3)})
    rows.sort(key=lambda row: row["own_seconds"], reverse=True)
    return rows[:count]


def _median(runs: list[dict[str, Any]], *path: str) -> float:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value[key]
        values.append(float(value))
    return statistics.median(values)


def _waits(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {k: round(_median(runs, "waits", k), 3) for k in ("idle", "iowait")}


def _budget(ours: list[dict[str, Any]], skopeo_s: float, hashing: float) -> dict[str, float]:
    """What reaching the target would take, in core-seconds of this machine per copy.

    Every core is busy or waiting for the whole copy, so cores x wall = the CPU of
    the three processes + the machine's idle and iowait. At TARGET_RATIO the wall is
    skopeo's / TARGET_RATIO; the registries' CPU is the same whoever copies, which
    leaves `available` for this process and every wait together."""
    cores = os.cpu_count() or 1
    registries = (_median(ours, "cpu_seconds", "source_registry")
                  + _median(ours, "cpu_seconds", "destination_registry"))
    spent = _median(ours, "cpu_seconds", "copier") + sum(
        _median(ours, "waits", k) for k in ("idle", "iowait"))
    return {"available_for_copier_and_waits": round(cores * skopeo_s / TARGET_RATIO
                                                    - registries, 3),
            "copier_and_waits_now": round(spent, 3),
            "sha256_pass_alone": round(hashing, 3)}


async def _measure_image(source: Registry, registries: _Registries, repo: str,
                         image: BuiltImage, runs: int) -> dict[str, Any]:
    blobs = [image.read_blob(blob.digest) for blob in image.blobs]
    total = sum(len(data) for data in blobs)
    ours: list[dict[str, Any]] = []
    trusting: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    for run in range(runs):
        # the order rotates, so a burst of load on the shared machine hits each tool in turn
        steps = ["ours", "skopeo", "trusting"]
        for step in steps[run % 3:] + steps[:run % 3]:
            async with registries.fresh(step) as destination:
                if step == "ours":
                    ours.append(await _ours(source, destination, repo, image))
                elif step == "skopeo":
                    theirs.append(await _skopeo(source, destination, repo, image))
                else:
                    trusting.append(await _ours(source, destination, repo, image,
                                                options=CopyOptions(verify_locally=False)))
    profile = cProfile.Profile()
    async with registries.fresh("profiled") as destination:
        profiled = await _ours(source, destination, repo, image, profile=profile)
    hashing = statistics.median(_sha256(blobs) for _ in range(runs))
    reading = statistics.median([await _source_read(source, repo, image) for _ in range(runs)])
    ours_s, skopeo_s = _median(ours, "seconds"), _median(theirs, "seconds")
    trusting_s = _median(trusting, "seconds")
    return {
        "blobs": len(blobs), "bytes": total,
        "clusterregistry": {"seconds": round(ours_s, 3),
                            "MiB_per_s": round(total / MiB / ours_s, 1),
                            "runs": [round(r["seconds"], 3) for r in ours],
                            "requests": ours[0]["requests"],
                            "cpu_seconds": {k: round(_median(ours, "cpu_seconds", k), 3)
                                            for k in ours[0]["cpu_seconds"]},
                            "machine_waits_core_seconds": _waits(ours)},
        "skopeo": {"seconds": round(skopeo_s, 3), "MiB_per_s": round(total / MiB / skopeo_s, 1),
                   "runs": [round(r["seconds"], 3) for r in theirs],
                   "cpu_seconds": {k: round(_median(theirs, "cpu_seconds", k), 3)
                                   for k in theirs[0]["cpu_seconds"]},
                   "machine_waits_core_seconds": _waits(theirs)},
        "clusterregistry_registry_verified": {
            "note": "verify_locally=False: the destination registry alone checks the sha256",
            "seconds": round(trusting_s, 3), "MiB_per_s": round(total / MiB / trusting_s, 1),
            "runs": [round(r["seconds"], 3) for r in trusting],
            "cpu_seconds": {k: round(_median(trusting, "cpu_seconds", k), 3)
                            for k in trusting[0]["cpu_seconds"]},
            "machine_waits_core_seconds": _waits(trusting),
            "ratio_vs_skopeo": round(skopeo_s / trusting_s, 2)},
        "sha256": {"seconds": round(hashing, 3), "MiB_per_s": round(total / MiB / hashing, 1)},
        "source_read": {"seconds": round(reading, 3),
                        "MiB_per_s": round(total / MiB / reading, 1)},
        "ratio_vs_skopeo": round(skopeo_s / ours_s, 2),
        # skopeo's time over ours within each round (the two ran seconds apart): steadier
        # than the ratio of medians while other work on the machine comes and goes
        "paired_ratios_vs_skopeo": sorted(round(t["seconds"] / o["seconds"], 2)
                                          for o, t in zip(ours, theirs, strict=True)),
        # CPU seconds of all three processes per copy, skopeo's over ours: what the copies
        # cost the machine, steadier than wall time on a machine shared with other work
        "cpu_ratio_vs_skopeo": round(
            sum(_median(theirs, "cpu_seconds", k) for k in theirs[0]["cpu_seconds"])
            / sum(_median(ours, "cpu_seconds", k) for k in ours[0]["cpu_seconds"]), 2),
        # When the machine is CPU-bound (2 cores shared with other work), wall time follows the
        # CPU of all three processes. The registries' share is fixed (the destination hashes
        # every byte with Go's sha256, the source serves it); even a copier costing nothing
        # but its own sha256 pass could then be at most this many times faster than skopeo.
        "cpu_bound_ceiling_vs_skopeo": round(
            sum(_median(theirs, "cpu_seconds", k) for k in theirs[0]["cpu_seconds"])
            / (_median(ours, "cpu_seconds", "source_registry")
               + _median(ours, "cpu_seconds", "destination_registry") + hashing), 2),
        "share_of_sha256_floor": round(hashing / ours_s, 2),
        "target_budget_core_seconds": _budget(ours, skopeo_s, hashing),
        "profile": {"seconds_under_cprofile": round(profiled["seconds"], 3),
                    "top_own_time": _top(profile)},
    }


def _image_bytes(image: BuiltImage) -> int:
    """Every byte a copy reads from the source: the blobs and the manifest(s)."""
    return sum(blob.size for blob in image.blobs) + sum(m.size for m in image.manifests)


async def _cli_copy(source_host: str, destination: Registry, repo: str, image: BuiltImage,
                    *, settings: Path | None = None) -> dict[str, Any]:
    """`clusterregistry copy` as a whole process: wall from exec to exit, its own CPU."""
    argv = [CLI, "copy", f"{source_host}/{repo}:{image.tag}",
            f"{destination.host}/{repo}:{image.tag}", "--src-plain-http", "--dest-plain-http",
            "--progress", "none"]
    if settings is not None:
        argv += ["--config", str(settings)]
    children = _children_cpu()
    started = time.perf_counter()
    result = await run_command(argv, timeout=900)
    seconds = time.perf_counter() - started
    # the copy is this process's only child reaped in between: its rusage alone
    cpu = _children_cpu() - children
    digest = ""
    if result.ok:
        found = await destination.manifest(repo, image.tag)
        digest = found.digest if found is not None else ""
    return {"ok": result.ok and digest == image.digest, "seconds": seconds, "cpu_seconds": cpu,
            "error": "" if result.ok else _last_line(result.output),
            "digest_ok": digest == image.digest}


async def _skopeo_copy(source_host: str, destination: Registry, repo: str, image: BuiltImage,
                       *, retry_times: int | None = None) -> dict[str, Any]:
    argv = [find_skopeo(), "--insecure-policy", "copy", "--all", "--preserve-digests",
            "--src-tls-verify=false", "--dest-tls-verify=false",
            *(["--retry-times", str(retry_times)] if retry_times is not None else []),
            f"docker://{source_host}/{repo}:{image.tag}",
            f"docker://{destination.host}/{repo}:{image.tag}"]
    children = _children_cpu()
    started = time.perf_counter()
    result = await run_command(argv, timeout=900)
    seconds = time.perf_counter() - started
    cpu = _children_cpu() - children
    found = await destination.manifest(repo, image.tag) if result.ok else None
    ok = found is not None and found.digest == image.digest
    return {"ok": ok, "seconds": seconds, "cpu_seconds": cpu,
            "error": "" if result.ok else _last_line(result.output)}


def _last_line(output: str) -> str:
    """A failed tool's reason: its last line (skopeo's fatal message, our `failed: ...`)."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1][-500:] if lines else "(no output)"


async def _whole_processes(source: Registry, registries: _Registries, repo: str,
                           image: BuiltImage, rounds: int) -> dict[str, Any]:
    """`cli_wall_ratio` and `cli_cpu_ratio`: both tools as whole processes, fresh registries."""
    ours: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    for run in range(rounds):
        for step in (["ours", "skopeo"] if run % 2 == 0 else ["skopeo", "ours"]):
            async with registries.fresh(f"cli-{step}") as destination:
                if step == "ours":
                    outcome = await _cli_copy(source.host, destination, repo, image)
                    if not outcome["ok"]:
                        raise RuntimeError(f"clusterregistry copy failed: {outcome['error']}")
                    ours.append(outcome)
                else:
                    outcome = await _skopeo_copy(source.host, destination, repo, image)
                    if not outcome["ok"]:
                        raise RuntimeError(f"skopeo failed: {outcome['error']}")
                    theirs.append(outcome)
    ours_s, skopeo_s = _median(ours, "seconds"), _median(theirs, "seconds")
    ours_cpu, skopeo_cpu = _median(ours, "cpu_seconds"), _median(theirs, "cpu_seconds")
    return {
        "rounds": rounds,
        "clusterregistry_copy": {"seconds": round(ours_s, 3),
                                 "runs": [round(r["seconds"], 3) for r in ours],
                                 "cpu_seconds": round(ours_cpu, 3)},
        "skopeo_copy": {"seconds": round(skopeo_s, 3),
                        "runs": [round(r["seconds"], 3) for r in theirs],
                        "cpu_seconds": round(skopeo_cpu, 3)},
        # skopeo's wall over ours: ours is this many times skopeo's speed (higher is better)
        "cli_wall_ratio": round(skopeo_s / ours_s, 2),
        # our process's CPU-seconds over skopeo's (lower is better)
        "cli_cpu_ratio": round(ours_cpu / skopeo_cpu, 2) if skopeo_cpu > 0 else None,
    }


async def _flaky(source: Registry, registries: _Registries, repo: str, image: BuiltImage,
                 cut: int) -> dict[str, Any]:
    """Both tools through a proxy in front of A that cuts every connection each `cut` bytes."""
    total = _image_bytes(image)
    out: dict[str, Any] = {"cut_every_bytes": cut, "image_bytes": total}
    for tool in ("clusterregistry", "skopeo"):
        async with FaultProxy("127.0.0.1", source.port, Faults(cut_after=cut),
                              name=f"flaky-{tool}") as proxy, \
                registries.fresh(f"flaky-{tool}") as destination:
            if tool == "clusterregistry":
                outcome = await _cli_copy(proxy.host, destination, repo, image)
            else:
                outcome = await _skopeo_copy(proxy.host, destination, repo, image,
                                             retry_times=5)
            ratio = round(proxy.bytes_down / total, 3)
            out[tool] = {"ok": outcome["ok"], "seconds": round(outcome["seconds"], 3),
                         "source_bytes": proxy.bytes_down, "connections": proxy.connections,
                         "cuts": proxy.cuts}
            key = ("flaky_source_bytes_ratio" if tool == "clusterregistry"
                   else "skopeo_flaky_source_bytes_ratio")
            # a failed copy read what it read, but has no ratio: it did not copy the image
            out[key] = ratio if outcome["ok"] else None
            if not outcome["ok"]:
                out[f"{key}_reason"] = (
                    f"the copy failed through the flaky link after reading {ratio} x the "
                    f"image's bytes: {outcome['error'] or 'the destination digest differs'}")
    return out


def _rate_setting() -> bool:
    """Whether `mirror.maxBytesPerSecond` exists yet (issue 16's bandwidth limit)."""
    return "max_bytes_per_second" in config.MirrorSettings.__struct_fields__


async def _rate_limit(source: Registry, registries: _Registries, repo: str,
                      image: BuiltImage, root: Path) -> dict[str, Any]:
    if not _rate_setting():
        return {"rate_limit_error": None,
                "rate_limit_error_reason": "mirror.maxBytesPerSecond does not exist yet "
                "(config.MirrorSettings has no max_bytes_per_second): the bandwidth limit "
                "of issue 16 has not landed"}
    total = _image_bytes(image)
    async with FaultProxy("127.0.0.1", source.port, name="rate-free") as proxy, \
            registries.fresh("rate-free") as destination:
        free = await _cli_copy(proxy.host, destination, repo, image)
        free_rate = proxy.down_rate() or 0.0
    if not free["ok"] or free_rate <= 0:
        return {"rate_limit_error": None,
                "rate_limit_error_reason": f"the unlimited copy failed: {free['error']}"}
    limit = int(min(free_rate / 4, 64 * MiB))
    settings = root / "rate-limit.yaml"
    settings.write_text(f"mirror:\n  maxBytesPerSecond: {limit}\n")
    async with FaultProxy("127.0.0.1", source.port, name="rate-limited",
                          timeline=True) as proxy, \
            registries.fresh("rate-limited") as destination:
        limited = await _cli_copy(proxy.host, destination, repo, image, settings=settings)
        rate = proxy.steady_down_rate()
        whole_rate = proxy.down_rate()
    out: dict[str, Any] = {"image_bytes": total, "unlimited_bytes_per_s": round(free_rate),
                           "max_bytes_per_second": limit,
                           "seconds": round(limited["seconds"], 3)}
    if not limited["ok"] or rate is None:
        return {**out, "rate_limit_error": None,
                "rate_limit_error_reason": f"the limited copy failed: {limited['error']}"}
    ahead = None
    if whole_rate is not None and proxy.first_down_at is not None:
        # what went down faster than the limit: the socket buffers filling at the start
        ahead = round(total - limit * (proxy.last_down_at - proxy.first_down_at))
    return {**out, "measured_bytes_per_s": round(rate),
            "first_to_last_byte_bytes_per_s": round(whole_rate) if whole_rate else None,
            "first_to_last_byte_error": (round(abs(whole_rate - limit) / limit, 3)
                                         if whole_rate else None),
            "bytes_ahead_of_the_limit": ahead,
            "rate_limit_error": round(abs(rate - limit) / limit, 3)}


async def mirror(*, quick: bool = False) -> dict[str, Any]:
    shapes = {"large": (4, (2 if quick else 64) * MiB, 11),
              "many": (40, (MiB // 16) if quick else MiB, 12)}
    runs = 1 if quick else RUNS
    rounds = 1 if quick else CLI_ROUNDS
    with tempfile.TemporaryDirectory(prefix="bench-mirror-") as tmp:
        root = Path(tmp)
        builder = ImageBuilder(root / "images", seed=7)
        source = Registry(root / "registry-a", name="registry-a", log_level="warn")
        registries = _Registries(root / "destinations")
        await source.start()
        try:
            results: dict[str, Any] = {}
            built: dict[str, BuiltImage] = {}
            for name, (count, size, seed) in shapes.items():
                image = builder.build(f"bench/{name}", layer_sizes=[size] * count, seed=seed)
                built[name] = image
                await push(image, dest_ref=f"{source.host}/bench/{name}:latest",
                           tls_verify=False)
                results[f"{name}_{count}x{size / MiB:g}MiB"] = (
                    await _measure_image(source, registries, f"bench/{name}", image, runs))
            # whole processes, a flaky link and a rate limit: on the large image (issue 16)
            large = built["large"]
            layer = shapes["large"][1]
            whole = await _whole_processes(source, registries, "bench/large", large, rounds)
            flaky = await _flaky(source, registries, "bench/large", large,
                                 layer // 4 if quick else FLAKY_CUT)
            limited = await _rate_limit(source, registries, "bench/large", large, root)
        finally:
            await source.stop()
    ratios = [r["ratio_vs_skopeo"] for r in results.values()]
    figures = {
        "cli_wall_ratio": whole["cli_wall_ratio"],
        "cli_cpu_ratio": whole["cli_cpu_ratio"],
        "flaky_source_bytes_ratio": flaky["flaky_source_bytes_ratio"],
        "skopeo_flaky_source_bytes_ratio": flaky["skopeo_flaky_source_bytes_ratio"],
        "rate_limit_error": limited["rate_limit_error"],
    }
    reasons = {key: value for part in (flaky, limited) for key, value in part.items()
               if key.endswith("_reason")}
    goals = {"cli_wall_ratio": (">=", CLI_WALL_GOAL), "cli_cpu_ratio": ("<=", CLI_CPU_GOAL),
             "flaky_source_bytes_ratio": ("<=", FLAKY_BYTES_GOAL),
             "rate_limit_error": ("<=", RATE_ERROR_GOAL)}
    met = {key: None if figures[key] is None else
           (figures[key] >= goal if op == ">=" else figures[key] <= goal)
           for key, (op, goal) in goals.items()}
    return {"images": results, "runs": runs, "target_ratio": TARGET_RATIO,
            "meets_target": all(r >= TARGET_RATIO for r in ratios),
            **figures, **reasons,
            "goals": {key: f"{op} {goal}" for key, (op, goal) in goals.items()},
            "goals_met": met,
            "whole_processes": whole, "flaky_link": flaky, "rate_limit": limited}
