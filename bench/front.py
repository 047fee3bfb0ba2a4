"""The registry front (issue 15): hits at the registry's speed, misses fetched from the source once.

The front runs as production runs it: its own process, `python cmd/front.py --config FILE
--identity bench-front`, on 127.0.0.1 with a random port, in front of a real edge registry
(distribution, plain HTTP) with a real nats-server (flights, blob ledger, fence), the source
a real artifact store (distribution with TLS and basic auth, as an ACR or a Harbor is).

The client (`CLIENT`) is aiohttp in this process, one session per pull, as a node's
containerd pulls: HEAD the manifest by tag, GET it by digest, then the config and the
layers three at a time (containerd's max_concurrent_downloads), each blob's sha256 and size
checked as the bytes arrive, the bytes then dropped. The same client pulls through the
front and straight from distribution, so the two differ only in the front.

Figures, each against a baseline measured in the same run:

- `hit_ratio_to_direct`: 6 concurrent pulls of an image the edge registry holds
  (`LAYERS` x `LAYER_MiB` MiB of random bytes), through the front and straight from the
  edge registry, alternating round by round; the ratio of throughputs (front / direct =
  direct seconds / front seconds) of the medians. Goal >= 0.9. `paired_ratios` are the
  same ratio within each round (the two ran seconds apart).
- `miss_source_bytes_ratio`: 6 concurrent pulls of a never-seen image (a new one each
  round) through the front: the bytes the artifact store served (its access log: the byte
  field of 2xx GETs of manifests and blobs) over the image's bytes (manifest, config,
  layers). The front's own `clusterregistry_front_source_bytes_total` is reported beside
  it. Goal 1.00: the front fetches each blob and the manifest once. The headline is the
  worst round.
- `miss_time_ratio`: the wall time of those 6 pulls over one pull straight from the source
  (the same client, TLS and basic auth), medians. Goal <= 1.2. The issue means 6 nodes,
  each with its own CPU; here the 6 clients share this machine's cores (receiving and
  hashing 6 x the image costs this process more CPU than one direct pull's whole wall), so
  two more ratios say what the front itself costs: `time_ratio_one_client` (another
  never-seen image pulled through the front by one client, over the direct pull) and
  `time_ratio_to_6_from_source` (the 6 pulls through the front over 6 pulls straight from
  the source: what 6 nodes cost without a front).
- `miss_time_ratio_over_link`: the same 6 pulls of a never-seen image, with the source
  behind a shared WAN link of `LINK_MiB_PER_S` MiB/s each way (the sandbox's fault proxy,
  `python -m clusterregistry_sandbox.faults --faults rate=...`, its own process), over one
  direct pull over that link; medians. The issue's premise, "the first pull runs at about
  the source's speed", is this case: an edge site's link, not loopback, bounds the source.
  Same goal (<= 1.2); reported beside `miss_time_ratio`, never instead of it.
- `first_deploy_ratio`: time to all Running for a 6-replica Deployment across 3 kubesim
  nodes with imagePullPolicy Always, through the webhook and the front (every
  clusterregistry process running, the mirror copying meanwhile), over the same Deployment
  pulling straight from the source without any clusterregistry process, each on a fresh
  sandbox (`clusterregistry_sandbox.System`), the order alternating; medians. Each run
  also reports the kubelets' failed pulls and back-offs and the store's GETs. Goal <= 1.2.
  Null, with a `reason`, when the sandbox cannot run the front.
- `first_deploy_ratio_over_link`: the same two Deployments with the sandbox's artifact
  store behind that link (`SystemOptions(flaky_link=Faults(rate=...))`, what `sandbox up
  --flaky-link rate=...` runs): without the front each of the 3 nodes fetches the image
  over the link; through it, one fetch serves every node and the mirror.

Where the time goes: the CPU seconds, per round (median), of this process (the client),
the front, the edge registry and the artifact store (from /proc), the machine's cores and
its 1-minute load average as the bench began and ended (other work on a shared machine).

`python -m bench front` (or `python -m bench.front [--quick]`); `front(quick=True)` uses
1 MiB layers and one or two rounds, for the smoke test.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.mirror import _cpu_seconds, _pid
from clusterregistry import references, subjects
from clusterregistry_sandbox.apiclients import ApiError
from clusterregistry_sandbox.faults import Faults
from clusterregistry_sandbox.images import BuiltImage, ImageBuilder, ImageFormat, push
from clusterregistry_sandbox.natsservers import NatsServer
from clusterregistry_sandbox.podstarts import pod_starts
from clusterregistry_sandbox.registries import MANIFEST_MEDIA_TYPES, Registry
from clusterregistry_sandbox.samples import Sample, fill
from clusterregistry_sandbox.supervising import Process, ProcessError, free_port, wait_for
from clusterregistry_sandbox.systems import System, SystemOptions
from kubesim.certificates import CertificateAuthority

MiB = 1 << 20
LAYERS = 4
LAYER_MiB = 64
PULLS = 6
CONCURRENT_DOWNLOADS = 3  # containerd's max_concurrent_downloads
REPLICAS = 6
NODES = 3
DEPLOY_NAMESPACE = "bench-front"
HIT_ROUNDS = 5
MISS_ROUNDS = 3
DEPLOY_ROUNDS = 2
LINK_MiB_PER_S = 40  # an edge site's WAN: about 335 Mbit/s each way
GOALS: dict[str, tuple[str, float]] = {
    "hit_ratio_to_direct": (">=", 0.9),
    "miss_source_bytes_ratio": ("==", 1.0),
    "miss_time_ratio": ("<=", 1.2),
    "first_deploy_ratio": ("<=", 1.2),
    "miss_time_ratio_over_link": ("<=", 1.2),
    "first_deploy_ratio_over_link": ("<=", 1.2),
}
CLIENT = ("aiohttp in the bench process, one session per pull: HEAD the manifest by tag, GET "
          "it by digest, then config and layers 3 at a time, sha256 and size of every blob "
          "checked as it arrives, bytes dropped")
FRONT_SCRIPT = Path(__file__).resolve().parent.parent / "cmd" / "front.py"
_ACCESS = re.compile(r'"GET (?P<uri>/v2/[^ ]*/(?:manifests|blobs)/[^ ]*) HTTP/[0-9.]+" '
                     r'(?P<status>[0-9]{3}) (?P<bytes>[0-9]+|-)')


def _log(message: str) -> None:
    print(f"bench front: {message}", file=sys.stderr, flush=True)


# -- the client ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a client pulls from: a registry's base URL, repository and tag, how to connect."""

    url: str
    repository: str
    tag: str
    registry: Registry | None = None  # TLS trust and credentials, when it has them

    def session(self) -> aiohttp.ClientSession:
        registry = self.registry
        ssl = registry.ssl_context() if registry is not None else None
        return aiohttp.ClientSession(
            headers=registry.auth_headers() if registry is not None else None,
            connector=aiohttp.TCPConnector(ssl=ssl or True, limit=0),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=600, sock_read=60))


async def _pull(target: Target, image: BuiltImage) -> int:
    """One pull, as containerd does it; the blob bytes received, every digest checked."""
    base = f"{target.url}/v2/{target.repository}"
    accept = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
    async with target.session() as session:
        async with session.head(f"{base}/manifests/{target.tag}", headers=accept) as response:
            response.raise_for_status()
            digest = response.headers["Docker-Content-Digest"]
        async with session.get(f"{base}/manifests/{digest}", headers=accept) as response:
            response.raise_for_status()
            data = await response.read()
        if digest != image.digest or "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise RuntimeError(f"manifest of {target.repository} is wrong: {digest}")
        manifest = json.loads(data)
        wanted = [manifest["config"], *manifest["layers"]]
        gate = asyncio.Semaphore(CONCURRENT_DOWNLOADS)

        async def blob(descriptor: dict[str, Any]) -> int:
            async with gate, session.get(f"{base}/blobs/{descriptor['digest']}") as response:
                response.raise_for_status()
                hasher = hashlib.sha256()
                received = 0
                async for chunk in response.content.iter_any():
                    hasher.update(chunk)
                    received += len(chunk)
            if ("sha256:" + hasher.hexdigest() != descriptor["digest"]
                    or received != descriptor["size"]):
                raise RuntimeError(f"blob {descriptor['digest']} of {target.repository} "
                                   f"is wrong: {received} bytes")
            return received

        return sum(await asyncio.gather(*(blob(d) for d in wanted)))


@dataclass
class _Processes:
    """The processes whose CPU a measurement reports (this one is the client)."""

    front: Process
    edge: Registry
    store: Registry

    def cpu(self) -> dict[str, float]:
        return {"client": time.process_time(), "front": _cpu_seconds(self.front.pid),
                "edge_registry": _cpu_seconds(_pid(self.edge)),
                "artifact_store": _cpu_seconds(_pid(self.store))}


async def _timed(processes: _Processes, pulls: list[Awaitable[int]]) -> dict[str, Any]:
    """Run pulls at once; wall seconds from the first request to the last byte, and CPU."""
    before = processes.cpu()
    started = time.perf_counter()
    received = await asyncio.gather(*pulls)
    seconds = time.perf_counter() - started
    after = processes.cpu()
    return {"seconds": seconds, "bytes": sum(received),
            "cpu_seconds": {k: after[k] - before[k] for k in before}}


def _summary(runs: list[dict[str, Any]], image_bytes: int, pulls: int) -> dict[str, Any]:
    seconds = statistics.median(r["seconds"] for r in runs)
    return {"seconds": round(seconds, 3),
            "MiB_per_s": round(pulls * image_bytes / MiB / seconds, 1),
            "runs": [round(r["seconds"], 3) for r in runs],
            "cpu_seconds": {k: round(statistics.median(r["cpu_seconds"][k] for r in runs), 3)
                            for k in runs[0]["cpu_seconds"]}}


# -- the front process -----------------------------------------------------------------------


class _Front:
    """`python cmd/front.py --config FILE --identity bench-front`, on random ports."""

    def __init__(self, root: Path, *, store: Registry, edge: Registry, nats: NatsServer,
                 source_hosts: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.probe_port = free_port()
        self.nats = nats
        user, password = store.credentials or ("", "")
        settings = {
            "enableClusterRegistry": True,
            "localRegistry": self.host,
            "registryEndpoint": edge.host,
            "probeHost": "127.0.0.1",
            "probePort": self.probe_port,
            "nats": {"servers": [nats.url]},
            # the store, and the link in front of it: the same registry at another address
            "mirror": {"registries": [
                {"host": host, "caFile": str(store.ca_path), "username": user,
                 "password": password} for host in (store.host, *source_hosts)]},
            # the front mounts distribution's volume as in the ha overlay: blob hits are
            # sent from disk (front.storagePath)
            "front": {"host": "127.0.0.1", "port": self.port,
                      "spoolDir": str(root / "spool"), "storagePath": str(edge.root_dir)},
        }
        config = root / "front.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(yaml.safe_dump(settings))
        self.process = Process(
            [sys.executable, str(FRONT_SCRIPT), "--config", str(config),
             "--identity", "bench-front"], name="front", log_path=root / "front.log")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        await self.process.start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

            async def ready() -> bool:
                async with session.get(f"http://127.0.0.1:{self.probe_port}/readyz") as r:
                    return r.status == 200

            await self.process.wait_ready(ready, timeout=60)

            async def on_nats() -> bool:
                # the front joins the flights and the blob ledger once both buckets exist
                url = f"{self.nats.monitor_url}/jsz?streams=true"
                async with session.get(url) as response:
                    document = await response.json()
                names = {stream["name"] for account in document.get("account_details", [])
                         for stream in account.get("stream_detail", [])}
                return {f"KV_{subjects.FRONT_FLIGHTS_BUCKET}",
                        f"KV_{subjects.MIRROR_BLOBS_BUCKET}"} <= names

            await wait_for(on_nats, timeout=60, description="the front on NATS",
                           retry_on=(aiohttp.ClientError,))

    async def metrics(self) -> dict[str, float]:
        """This front's samples, `name{label="value",...}` -> value."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, \
                session.get(f"http://127.0.0.1:{self.probe_port}/metrics") as response:
            text = await response.text()
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples

    async def stop(self) -> None:
        await self.process.stop()


class _Link:
    """A shared WAN link in front of the artifact store: the sandbox's fault proxy with only
    a rate, as its own process (`python -m clusterregistry_sandbox.faults`), so its pacing
    never waits on this process's clients."""

    def __init__(self, root: Path, *, store: Registry, rate: int) -> None:
        self.port = free_port()
        self.rate = rate
        self.process = Process(
            [sys.executable, "-m", "clusterregistry_sandbox.faults", "--listen", str(self.port),
             "--target", store.host, "--faults", f"rate={rate}"],
            name="link", log_path=root / "link.log")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        await self.process.start()

        async def listening() -> bool:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.close()
            await writer.wait_closed()
            return True

        await self.process.wait_ready(listening, timeout=30)

    async def stop(self) -> None:
        await self.process.stop()


# -- the artifact store's access log ---------------------------------------------------------


def _log_size(store: Registry) -> int:
    return store.log_path.stat().st_size if store.log_path.exists() else 0


def _source_gets(store: Registry, since: int) -> dict[str, Any]:
    """2xx GETs of manifests and blobs in the store's access log after offset `since`."""
    with store.log_path.open("rb") as log:
        log.seek(since)
        text = log.read().decode(errors="replace")
    requests: dict[str, int] = {}
    served = 0
    for line in text.splitlines():
        match = _ACCESS.search(line)
        if match and match["status"].startswith("2"):
            requests[match["uri"]] = requests.get(match["uri"], 0) + 1
            served += int(match["bytes"]) if match["bytes"] != "-" else 0
    return {"bytes": served, "requests": sum(requests.values()),
            "most_per_uri": max(requests.values(), default=0)}


# -- the figures -----------------------------------------------------------------------------


def _image_bytes(image: BuiltImage) -> int:
    """Manifest, config and layers: what one pull transfers."""
    return image.size + sum(blob.size for blob in image.blobs)


async def _hits(processes: _Processes, *, front: _Front, edge: Registry, image: BuiltImage,
                repository: str, rounds: int) -> dict[str, Any]:
    through = Target(f"http://{front.host}", repository, image.tag)
    direct = Target(edge.url, repository, image.tag)
    # one untimed pull each: connections warm, the registry's files in the page cache
    await _pull(through, image)
    await _pull(direct, image)
    runs: dict[str, list[dict[str, Any]]] = {"front": [], "direct": []}
    for n in range(rounds):
        order = ["front", "direct"] if n % 2 == 0 else ["direct", "front"]
        for side in order:
            target = through if side == "front" else direct
            runs[side].append(await _timed(processes,
                                           [_pull(target, image) for _ in range(PULLS)]))
        _log(f"hit round {n + 1}/{rounds}: front {runs['front'][-1]['seconds']:.2f}s, "
             f"direct {runs['direct'][-1]['seconds']:.2f}s")
    size = _image_bytes(image)
    front_s = statistics.median(r["seconds"] for r in runs["front"])
    direct_s = statistics.median(r["seconds"] for r in runs["direct"])
    return {"front": _summary(runs["front"], size, PULLS),
            "direct": _summary(runs["direct"], size, PULLS),
            "ratio": round(direct_s / front_s, 3),
            "paired_ratios": sorted(round(d["seconds"] / f["seconds"], 3)
                                    for f, d in zip(runs["front"], runs["direct"], strict=True))}


async def _miss(processes: _Processes, front: _Front, store: Registry, *, source_repo: str,
                image: BuiltImage, pulls: int,
                source_host: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """`pulls` concurrent pulls of a never-seen image through the front, timed; then, once
    the front has stored what it fetched, what the source served for them. `source_host`:
    the address the image is named by (the store's, or the link's in front of it)."""
    stored_key = "clusterregistry_front_stored_blobs_total"
    bytes_key = "clusterregistry_front_source_bytes_total"
    local = references.to_local(
        references.parse(f"{source_host or store.host}/{source_repo}"), front.host).path
    before = await front.metrics()
    offset = _log_size(store)
    timed = await _timed(processes, [
        _pull(Target(f"http://{front.host}", local, image.tag), image) for _ in range(pulls)])

    # the front stores the fetched blobs in the registry after serving them: wait for that
    # (so it does not overlap what comes next, and every source request is in the log)
    async def stored() -> bool:
        return ((await front.metrics()).get(stored_key, 0.0) - before.get(stored_key, 0.0)
                >= len(image.blobs))

    await wait_for(stored, timeout=120, interval=0.1,
                   description="the front storing the fetched blobs")
    after = await front.metrics()
    gets = _source_gets(store, offset)

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    return timed, {
        "image_bytes": _image_bytes(image),
        "source_bytes_access_log": gets["bytes"],
        "source_bytes_metric": int(delta(bytes_key)),
        "source_gets": gets["requests"], "most_gets_of_one_uri": gets["most_per_uri"],
        "front_blob_requests": {
            result: int(delta(f'clusterregistry_front_requests_total{{kind="blob",'
                              f'result="{result}"}}'))
            for result in ("hit", "miss_streamed", "joined", "miss_failed")}}


async def _misses(processes: _Processes, front: _Front, store: Registry,
                  images: list[tuple[str, BuiltImage]]) -> dict[str, Any]:
    """Per round two never-seen images: one pulled by 6 clients at once through the front,
    one by a single client; then the first straight from the source, by 1 and by 6."""
    through: list[dict[str, Any]] = []
    single: list[dict[str, Any]] = []
    direct_1: list[dict[str, Any]] = []
    direct_6: list[dict[str, Any]] = []
    rounds: list[dict[str, Any]] = []
    for n in range(len(images) // 2):
        (repo, image), (single_repo, single_image) = images[2 * n], images[2 * n + 1]
        timed, counted = await _miss(processes, front, store, source_repo=repo, image=image,
                                     pulls=PULLS)
        through.append(timed)
        timed_1, counted_1 = await _miss(processes, front, store, source_repo=single_repo,
                                         image=single_image, pulls=1)
        single.append(timed_1)
        target = Target(store.url, repo, image.tag, registry=store)
        direct_1.append(await _timed(processes, [_pull(target, image)]))
        direct_6.append(await _timed(processes, [_pull(target, image) for _ in range(PULLS)]))
        rounds.append({**counted, "single_pull": counted_1})
        _log(f"miss round {n + 1}/{len(images) // 2}: front x{PULLS} "
             f"{through[-1]['seconds']:.2f}s, x1 {single[-1]['seconds']:.2f}s; source x1 "
             f"{direct_1[-1]['seconds']:.2f}s, x{PULLS} {direct_6[-1]['seconds']:.2f}s; source "
             f"bytes {counted['source_bytes_access_log']} of {counted['image_bytes']}")
    size = _image_bytes(images[0][1])
    ratios = [r["source_bytes_access_log"] / r["image_bytes"] for r in rounds]
    front_s = statistics.median(r["seconds"] for r in through)
    direct_s = statistics.median(r["seconds"] for r in direct_1)
    return {
        "front_6": _summary(through, size, PULLS),
        "front_1": _summary(single, size, 1),
        "source_direct_1": _summary(direct_1, size, 1),
        "source_direct_6": _summary(direct_6, size, PULLS),
        "rounds": rounds,
        "source_bytes_ratio_access_log": [round(r, 4) for r in ratios],
        "source_bytes_ratio_metric": [
            round(r["source_bytes_metric"] / r["image_bytes"], 4) for r in rounds],
        "access_log_and_metric_agree": all(
            r["source_bytes_access_log"] == r["source_bytes_metric"]
            and r["single_pull"]["source_bytes_access_log"]
            == r["single_pull"]["source_bytes_metric"] for r in rounds),
        # the headline: the worst round
        "source_bytes_ratio": round(max(ratios), 4),
        "time_ratio": round(front_s / direct_s, 3),
        # context for time_ratio on one machine, where 6 clients share its cores
        "time_ratio_one_client": round(
            statistics.median(r["seconds"] for r in single) / direct_s, 3),
        "time_ratio_to_6_from_source": round(
            front_s / statistics.median(r["seconds"] for r in direct_6), 3),
    }


async def _misses_over_link(processes: _Processes, front: _Front, store: Registry, link: _Link,
                            images: list[tuple[str, BuiltImage]]) -> dict[str, Any]:
    """Per round a never-seen image named by the link's address: pulled by 6 clients at once
    through the front (which fetches it over the link), then once straight over the link."""
    through: list[dict[str, Any]] = []
    direct_1: list[dict[str, Any]] = []
    rounds: list[dict[str, Any]] = []
    for n, (repo, image) in enumerate(images):
        timed, counted = await _miss(processes, front, store, source_repo=repo, image=image,
                                     pulls=PULLS, source_host=link.host)
        through.append(timed)
        rounds.append(counted)
        target = Target(f"https://{link.host}", repo, image.tag, registry=store)
        direct_1.append(await _timed(processes, [_pull(target, image)]))
        _log(f"miss over the link, round {n + 1}/{len(images)}: front x{PULLS} "
             f"{through[-1]['seconds']:.2f}s; source x1 {direct_1[-1]['seconds']:.2f}s; "
             f"source bytes {counted['source_bytes_access_log']} of {counted['image_bytes']}")
    size = _image_bytes(images[0][1])
    front_s = statistics.median(r["seconds"] for r in through)
    direct_s = statistics.median(r["seconds"] for r in direct_1)
    return {
        "link_bytes_per_second": link.rate,
        "link": "python -m clusterregistry_sandbox.faults --faults rate=N (a shared token "
                "bucket each way, its own process) between every client and the store",
        "front_6": _summary(through, size, PULLS),
        "source_direct_1": _summary(direct_1, size, 1),
        "rounds": rounds,
        "source_bytes_ratio": round(max(r["source_bytes_access_log"] / r["image_bytes"]
                                        for r in rounds), 4),
        "time_ratio": round(front_s / direct_s, 3),
    }


async def _deploy(root: Path, *, through_front: bool, layer_bytes: int,
                  link_rate: int | None = None) -> dict[str, Any]:
    """One fresh sandbox (3 kubesim nodes), one 6-replica Deployment, policy Always; timed
    from its creation to every pod Running. Through the front: every clusterregistry process
    (the webhook rewrites the pods to the front, which holds the store's credentials, so the
    pods name no pull secret). Without: no clusterregistry process, and the pods pull
    straight from the artifact store with its pull secret. `link_rate`: the store
    behind a shared link of that many bytes/s (the sandbox's flaky link, rate only)."""
    # without: no clusterregistry process at all (so no front and no webhook either)
    system = System(root, SystemOptions(
        nodes=NODES, fill_samples=False, services=None if through_front else [],
        flaky_link=None if link_rate is None else Faults(rate=link_rate)))
    await system.start()
    try:
        # a sandbox from before the front (issue 15) has no `front_on`
        if through_front and not getattr(system, "front_on", False):
            raise _SandboxNotReadyError("the sandbox runs no registry front: pods would pull "
                                        "from distribution, not through the front")
        store = system.artifact_store
        sample = Sample(repository="bench/deploy", tag="1.0.0", image_format=ImageFormat.OCI,
                        platforms=("linux/amd64",), layer_sizes=(layer_bytes,) * LAYERS,
                        description="the front bench's first deploy")
        pushed, = await fill(store, root / "images", samples=[sample], seed=1515)
        # what the edge names the store by: the link's address when there is one
        reference = system.store_host + pushed.reference.removeprefix(store.host)
        offset = _log_size(store)
        assert store.credentials is not None
        user, password = store.credentials
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        dockerconfig = {"auths": {system.store_host: {"username": user, "password": password,
                                                      "auth": auth}}}
        async with system.api() as api:
            await api.apply({"apiVersion": "v1", "kind": "Namespace",
                             "metadata": {"name": DEPLOY_NAMESPACE}})
            await api.apply({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"name": "artifact-store", "namespace": DEPLOY_NAMESPACE},
                "data": {".dockerconfigjson": base64.b64encode(
                    json.dumps(dockerconfig).encode()).decode()}})
            spec: dict[str, Any] = {
                "containers": [{"name": "app", "image": reference,
                                "imagePullPolicy": "Always"}]}
            if not through_front:
                spec["imagePullSecrets"] = [{"name": "artifact-store"}]
            began = time.monotonic()
            await api.create({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "app", "namespace": DEPLOY_NAMESPACE},
                "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": "app"}},
                         "template": {"metadata": {"labels": {"app": "app"}}, "spec": spec}}})

            async def running() -> list[dict[str, Any]] | None:
                pods = await api.list("Pod", namespace=DEPLOY_NAMESPACE)
                up = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
                return up if len(up) == REPLICAS else None

            pods = await wait_for(running, timeout=900, interval=0.2,
                                  description=f"{REPLICAS} pods Running")
            seconds = time.monotonic() - began
            starts = await pod_starts(api, pods, namespace=DEPLOY_NAMESPACE)
        gets = _source_gets(store, offset)
        images = sorted({status.get("image", "") for pod in pods
                         for status in pod["status"].get("containerStatuses") or []})
        return {"seconds": round(seconds, 3),
                "nodes": sorted({pod["spec"].get("nodeName", "") for pod in pods}),
                "images": images, "pod_starts": starts.as_dict(),
                "source_gets": gets["requests"], "source_bytes": gets["bytes"],
                "image_bytes": pushed.size,
                "source_bytes_ratio": round(gets["bytes"] / pushed.size, 4)}
    finally:
        await system.stop()


class _SandboxNotReadyError(RuntimeError):
    """The sandbox cannot measure the figure yet."""


async def _first_deploy(root: Path, *, layer_bytes: int, rounds: int,
                        link_rate: int | None = None) -> dict[str, Any]:
    """`first_deploy_ratio`: the Deployment through the front over the one without, each on
    a fresh sandbox, the order alternating round by round (load on a shared machine comes
    and goes); medians. `link_rate`: both with the store behind that link."""
    runs: dict[str, list[dict[str, Any]]] = {"front": [], "direct": []}
    try:
        for n in range(rounds):
            order = ["direct", "front"] if n % 2 == 0 else ["front", "direct"]
            for side in order:
                runs[side].append(await _deploy(root / f"{side}-{n}",
                                                through_front=side == "front",
                                                layer_bytes=layer_bytes, link_rate=link_rate))
                _log(f"first deploy {'through the front' if side == 'front' else 'from the source'}"
                     f"{'' if link_rate is None else ' over the link'}: "
                     f"{runs[side][-1]['seconds']:.2f}s")
    except (_SandboxNotReadyError, ProcessError, TimeoutError, ApiError) as exc:
        return {"ratio": None, "reason": f"{type(exc).__name__}: {str(exc)[:600]}"}
    front_s = statistics.median(r["seconds"] for r in runs["front"])
    direct_s = statistics.median(r["seconds"] for r in runs["direct"])
    return {"ratio": round(front_s / direct_s, 3),
            "link_bytes_per_second": link_rate,
            "replicas": REPLICAS, "nodes": NODES, "image_pull_policy": "Always",
            "through_front_seconds": round(front_s, 3),
            "direct_from_source_seconds": round(direct_s, 3),
            "through_front": runs["front"], "direct_from_source": runs["direct"]}


def _meets(name: str, value: float | None) -> bool | None:
    if value is None:
        return None
    op, goal = GOALS[name]
    return {">=": value >= goal, "<=": value <= goal, "==": value == goal}[op]


async def front(*, quick: bool = False, layer_bytes: int | None = None,
                rounds: int | None = None, deploy: bool = True) -> dict[str, Any]:
    """The figures of the module docstring; `quick`: 1 MiB layers and one or two rounds."""
    layer_bytes = layer_bytes or ((1 if quick else LAYER_MiB) * MiB)
    load_at_start = os.getloadavg()
    hit_rounds = rounds or (2 if quick else HIT_ROUNDS)
    miss_rounds = rounds or (1 if quick else MISS_ROUNDS)
    with tempfile.TemporaryDirectory(prefix="bench-front-") as tmp:
        root = Path(tmp)
        ca = CertificateAuthority.create("bench front CA")
        store = Registry(root / "artifact-store", name="artifact-store", ca=ca,
                         username="bench", log_level="warn")
        edge = Registry(root / "edge", name="edge", log_level="warn")
        nats = NatsServer(root / "nats")
        link_rate = LINK_MiB_PER_S * MiB
        front_process: _Front | None = None
        stack = contextlib.AsyncExitStack()
        async with stack:
            for server in (store, edge, nats):
                await server.start()
                stack.push_async_callback(server.stop)
            link = _Link(root / "link", store=store, rate=link_rate)
            stack.push_async_callback(link.stop)
            await link.start()
            front_process = _Front(root / "front", store=store, edge=edge, nats=nats,
                                   source_hosts=(link.host,))
            stack.push_async_callback(front_process.stop)
            await front_process.start()
            processes = _Processes(front_process.process, edge, store)
            builder = ImageBuilder(root / "images", seed=15)
            sizes = [layer_bytes] * LAYERS

            # the hit image: in the edge registry under its local name, as the mirror leaves it
            hit = builder.build("bench/hit", layer_sizes=sizes, seed=150)
            hit_local = references.to_local(references.parse(f"{store.host}/bench/hit"),
                                            front_process.host).path
            await push(hit, dest_ref=f"{edge.host}/{hit_local}:{hit.tag}", tls_verify=False)
            _log("hit image in the edge registry")
            hits = await _hits(processes, front=front_process, edge=edge, image=hit,
                               repository=hit_local, rounds=hit_rounds)

            # never-seen images, one per round, in the artifact store only
            misses: list[tuple[str, BuiltImage]] = []
            for n in range(2 * miss_rounds):
                image = builder.build(f"bench/miss{n}", layer_sizes=sizes, seed=1500 + n)
                await push(image, dest_ref=f"{store.host}/bench/miss{n}:{image.tag}",
                           credentials=store.credentials, ca_dir=store.cert_dir)
                misses.append((f"bench/miss{n}", image))
            _log("miss images in the artifact store")
            missed = await _misses(processes, front_process, store, misses)

            # never-seen images again, each pulled by its name behind the link
            over_link: list[tuple[str, BuiltImage]] = []
            for n in range(miss_rounds):
                image = builder.build(f"bench/link{n}", layer_sizes=sizes, seed=1600 + n)
                await push(image, dest_ref=f"{store.host}/bench/link{n}:{image.tag}",
                           credentials=store.credentials, ca_dir=store.cert_dir)
                over_link.append((f"bench/link{n}", image))
            missed_over_link = await _misses_over_link(processes, front_process, store, link,
                                                       over_link)
        not_asked: dict[str, Any] = {"ratio": None, "reason": "not asked for (deploy=False)"}
        deployed, deployed_over_link = not_asked, not_asked
        if deploy:
            deploy_rounds = rounds or (1 if quick else DEPLOY_ROUNDS)
            deployed = await _first_deploy(root / "deploy", layer_bytes=layer_bytes,
                                           rounds=deploy_rounds)
            deployed_over_link = await _first_deploy(root / "deploy-link",
                                                     layer_bytes=layer_bytes,
                                                     rounds=deploy_rounds, link_rate=link_rate)
    figures: dict[str, float | None] = {
        "hit_ratio_to_direct": hits["ratio"],
        "miss_source_bytes_ratio": missed["source_bytes_ratio"],
        "miss_time_ratio": missed["time_ratio"],
        "first_deploy_ratio": deployed["ratio"],
        "miss_time_ratio_over_link": missed_over_link["time_ratio"],
        "first_deploy_ratio_over_link": deployed_over_link["ratio"],
    }
    return {
        **figures,
        "goals": {name: f"{op} {goal}" for name, (op, goal) in GOALS.items()},
        "meets_goals": {name: _meets(name, value) for name, value in figures.items()},
        "client": CLIENT,
        "front_process": "python cmd/front.py --config FILE --identity bench-front, with NATS",
        "cpus": os.cpu_count(),
        # other work on the machine: the 1-minute load average as the bench began and ended
        "load_average_1m": {"start": round(load_at_start[0], 2),
                            "end": round(os.getloadavg()[0], 2)},
        "concurrent_pulls": PULLS,
        "image": {"layers": LAYERS, "layer_payload_bytes": layer_bytes,
                  "blobs": len(hit.blobs), "bytes": _image_bytes(hit)},
        "rounds": {"hit": hit_rounds, "miss": miss_rounds,
                   "deploy": len(deployed.get("through_front", [])),
                   "deploy_over_link": len(deployed_over_link.get("through_front", []))},
        "hit": hits,
        "miss": missed,
        "first_deploy": deployed,
        "miss_over_link": missed_over_link,
        "first_deploy_over_link": deployed_over_link,
    }


def _main() -> None:
    print(json.dumps(asyncio.run(front(quick="--quick" in sys.argv)), indent=2))


if __name__ == "__main__":
    _main()

