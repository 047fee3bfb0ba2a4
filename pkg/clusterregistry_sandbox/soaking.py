"""The chaos soak (issue 17): churn, kill anything at any time, and check nothing referenced
is lost.

`run_soak(SoakOptions(minutes=M, seed=S))` starts the HA sandbox (three NATS nodes, two
fronts, two of each service the sandbox can run twice, kubesim with real back-off), pushes
a pool of images (multi-arch OCI, Docker v2, single OCI; one base layer shared by all),
then for M minutes runs three seeded loops side by side:

- load: Deployments scaled and updated to other tags and digests, deleted and recreated,
  Jobs, a DaemonSet and a StatefulSet updated, and now and then a new tag pushed to an
  existing repository (tag refresh);
- faults, one at a time: kill -9 and restart of every service process, of each NATS node,
  of the edge registry; the artifact store stopped for a while; a GC killed inside its
  read-only window (once a front acknowledged `readonly.*` for a sweep's lock);
- GC forced every few seconds (threshold 0, grace period 1 s);

and checks invariants 1 and 2 every few seconds. Then it settles (every process back,
bounded wait for the exact end state of `verifying.problems`) and checks all five
(`invariants` says what each decides). kubesim's API server is not killed: its store is
in memory (no etcd) and its kubelets live in the same process, so a restart is a new,
empty cluster, not a fault a real cluster has.

Everything the soak decides is a `Violation(kind, time, detail)`; `SoakReport.as_dict` is
the JSON the bench prints. With a violation the sandbox directory (logs, state, the
violations) is kept and its path is in the report.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import nats
from nats.js.errors import BucketNotFoundError, NotFoundError

from clusterregistry import kinds, references, schemas, subjects
from clusterregistry_sandbox import invariants, verifying
from clusterregistry_sandbox.apiclients import ApiClient, ApiError
from clusterregistry_sandbox.images import BuiltImage, ImageBuilder, ImageFormat, push
from clusterregistry_sandbox.invariants import OwnerSnapshot, Violation
from clusterregistry_sandbox.registries import MANIFEST_MEDIA_TYPES
from clusterregistry_sandbox.supervising import ProcessError, wait_for
from clusterregistry_sandbox.systems import System, SystemOptions

__all__ = ["SoakOptions", "SoakReport", "run_soak"]

NAMESPACE = "soak"
PULL_SECRET = "artifact-store"
_BASE_LAYER = 24 * 1024
_FORMATS = (
    (ImageFormat.OCI, ("linux/amd64", "linux/arm64")),
    (ImageFormat.DOCKER, ("linux/amd64",)),
    (ImageFormat.OCI, ("linux/amd64",)),
)
_OWNER_KINDS = ("ReplicaSet", "DaemonSet", "Job", "StatefulSet")


@dataclass
class SoakOptions:
    minutes: float = 10.0
    seed: int = 1
    # where the sandbox lives (default: a temporary directory, kept on a violation)
    root: Path | None = None
    repositories: int = 6
    nodes: int = 3
    deployments: int = 3
    ha: bool = True  # three NATS nodes, two fronts, second replicas (False: one of each)
    faults: bool = True
    fault_gap: tuple[float, float] = (4.0, 12.0)
    down_for: tuple[float, float] = (0.5, 6.0)
    store_down_for: tuple[float, float] = (5.0, 15.0)
    action_gap: tuple[float, float] = (1.5, 4.5)
    gc_gap: tuple[float, float] = (3.0, 8.0)
    check_interval: float = 3.0
    settle_timeout: float = 420.0
    # how often the load pins an image by digest rather than by tag
    digest_share: float = 0.25
    # extra environment per process (the checker's own test injects a broken GC this way)
    service_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # only these fault kinds ("kill:<name>", "down:artifact-store", "gc-readonly-kill");
    # None: all of them
    fault_kinds: tuple[str, ...] | None = None


@dataclass
class Version:
    """One image version in the artifact store: repo:tag, its digest and its contents."""

    repository: str
    tag: str
    built: BuiltImage
    reference: str  # HOST/REPO:TAG as pods name it

    @property
    def digest(self) -> str:
        return self.built.digest

    def by_digest(self) -> str:
        return self.reference.rsplit(":", 1)[0] + "@" + self.digest

    def contents(self) -> dict[str, int]:
        """Every manifest and blob digest of this version with its size (what the edge
        registry stores as blobs once the version is mirrored)."""
        out = {m.digest: m.size for m in self.built.manifests}
        if self.built.is_index:
            out[self.built.digest] = self.built.size
        for blob in self.built.blobs:
            out[blob.digest] = blob.size
        return out


@dataclass
class SoakReport:
    minutes: float
    seed: int
    faults: Counter[str] = field(default_factory=Counter)
    fault_misses: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    pods_started: set[str] = field(default_factory=set)
    mirrored: set[str] = field(default_factory=set)
    gc_runs: int = 0
    gc_outcomes: Counter[str] = field(default_factory=Counter)
    bytes_freed: int = 0
    violations: list[Violation] = field(default_factory=list)
    settled: bool = False
    settle_seconds: float | None = None
    harness_errors: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    kept: str | None = None

    def violation(self, kind: str, detail: str) -> None:
        if any(v.kind == kind and v.detail == detail for v in self.violations):
            return
        self.violations.append(Violation(kind, time.time(), detail))

    def as_dict(self) -> dict[str, Any]:
        by_kind = Counter(v.kind for v in self.violations)
        return {
            "minutes": self.minutes,
            "seed": self.seed,
            "faults_injected": dict(sorted(self.faults.items())),
            "faults_total": sum(self.faults.values()),
            "fault_attempts_not_landed": dict(sorted(self.fault_misses.items())),
            "load_actions": dict(sorted(self.actions.items())),
            "pods_started": len(self.pods_started),
            "images_mirrored": len(self.mirrored),
            "gc_runs": self.gc_runs,
            "gc_outcomes": dict(sorted(self.gc_outcomes.items())),
            "bytes_freed": self.bytes_freed,
            "violations_by_kind": dict(sorted(by_kind.items())),
            "violations": [
                {"kind": v.kind, "time": time.strftime("%H:%M:%S", time.gmtime(v.time)),
                 "detail": v.detail} for v in self.violations[:50]],
            "settled": self.settled,
            "seconds_to_settle_after_last_fault": self.settle_seconds,
            **self.figures,
            "harness_errors": self.harness_errors[:20],
            "kept": self.kept,
        }


# ---------------------------------------------------------------------------------- the pool


class Pool:
    """The images the load uses, built from one seed: every image shares one base layer
    per platform, each version has a top layer of its own."""

    def __init__(self, system: System, rng: random.Random, repositories: int,
                 digest_share: float = 0.25) -> None:
        self.system = system
        self.rng = rng
        self.digest_share = digest_share
        self.builder = ImageBuilder(system.root / "soak-images", seed=17)
        self.repositories = [f"soak/app-{i}" for i in range(repositories)]
        self.versions: list[Version] = []
        self._next: Counter[str] = Counter()
        self.probe: Version | None = None

    def _build(self, repository: str) -> Version:
        index = int(repository.rsplit("-", 1)[1]) if repository[-1].isdigit() else 99
        self._next[repository] += 1
        number = self._next[repository]
        image_format, platforms = _FORMATS[index % len(_FORMATS)]
        tag = f"v{number}"
        built = self.builder.build(
            repository, tag=tag, image_format=image_format, platforms=platforms,
            # the base layer is the same bytes in every image (same seed, same size); the top
            # layer's size, and so its bytes, is this version's own
            layer_sizes=(_BASE_LAYER, 1000 + index * 100 + number), seed=17,
            labels={"version": tag})
        return Version(repository, tag, built, f"{self.system.store_host}/{repository}:{tag}")

    async def _push(self, version: Version) -> None:
        store = self.system.artifact_store
        await push(version.built, dest_ref=f"{store.host}/{version.repository}:{version.tag}",
                   credentials=store.credentials, ca_dir=store.cert_dir, timeout=60)

    async def fill(self, per_repository: int = 2) -> None:
        fresh = [self._build(r) for r in self.repositories for _ in range(per_repository)]
        self.probe = self._build("soak/probe")
        semaphore = asyncio.Semaphore(4)

        async def one(version: Version) -> None:
            async with semaphore:
                await self._push(version)

        await asyncio.gather(*(one(v) for v in [*fresh, self.probe]))
        self.versions += fresh

    async def refresh(self) -> Version:
        """A new tag pushed to an existing repository (raises while the store is down)."""
        version = self._build(self.rng.choice(self.repositories))
        await self._push(version)
        self.versions.append(version)
        return version

    def pick(self) -> str:
        version = self.rng.choice(self.versions)
        pinned = self.rng.random() < self.digest_share
        return version.by_digest() if pinned else version.reference

    def all_versions(self) -> list[Version]:
        return [*self.versions, *([self.probe] if self.probe else [])]

    def version_of(self, source: str) -> Version | None:
        for version in self.all_versions():
            if source in (references.canonical(version.reference),
                          references.canonical(version.by_digest())):
                return version
        return None

    def digests(self) -> dict[str, str]:
        out = {}
        for version in self.all_versions():
            out[references.canonical(version.reference)] = version.digest
            out[references.canonical(version.by_digest())] = version.digest
        return out


# ---------------------------------------------------------------------------------- workloads


def _pod_spec(image: str, *, restart: str = "Always") -> dict[str, Any]:
    return {"containers": [{"name": "app", "image": image, "imagePullPolicy": "Always"}],
            "imagePullSecrets": [{"name": PULL_SECRET}], "restartPolicy": restart}


def deployment(name: str, image: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"replicas": replicas, "revisionHistoryLimit": 1,
                 "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": _pod_spec(image)}},
    }


def daemonset(name: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": _pod_spec(image)}},
    }


def statefulset(name: str, image: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"replicas": replicas, "serviceName": name,
                 "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": _pod_spec(image)}},
    }


def job(name: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"backoffLimit": 20,
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": _pod_spec(image, restart="Never")}},
    }


async def prepare_namespace(api: ApiClient, system: System) -> None:
    """The soak's namespace and the artifact store's pull secret in it."""
    store = system.artifact_store
    assert store.credentials is not None
    user, password = store.credentials
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    config = {"auths": {system.store_host: {"username": user, "password": password,
                                            "auth": auth}}}
    await api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    await api.apply({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": PULL_SECRET, "namespace": NAMESPACE},
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    })


class Load:
    """The seeded churn: one action at a time, every few seconds."""

    def __init__(self, api: ApiClient, pool: Pool, rng: random.Random, report: SoakReport,
                 deployments: int) -> None:
        self.api = api
        self.pool = pool
        self.rng = rng
        self.report = report
        self.deployments = [f"web-{i}" for i in range(deployments)]
        self.jobs: list[str] = []
        self._job_number = 0
        # `Kind/namespace/name` -> every image its template had: a DaemonSet's or a
        # StatefulSet's reference record keeps them all while it lives (by design)
        self.history: dict[str, set[str]] = {}

    def _remember(self, kind: str, name: str, image: str) -> None:
        self.history.setdefault(f"{kind}/{NAMESPACE}/{name}", set()).add(
            references.canonical(image))

    async def setup(self, system: System) -> None:
        await prepare_namespace(self.api, system)
        for name in self.deployments:
            await self.api.create(deployment(name, self.pool.pick(), self.rng.randint(1, 2)))
        image = self.pool.pick()
        self._remember("DaemonSet", "agent", image)
        await self.api.create(daemonset("agent", image))
        image = self.pool.pick()
        self._remember("StatefulSet", "db", image)
        await self.api.create(statefulset("db", image, 1))

    async def step(self) -> None:
        actions: list[tuple[str, int, Callable[[], Awaitable[None]]]] = [
            ("deployment_scale", 25, self.scale),
            ("deployment_update", 25, self.update),
            ("deployment_recreate", 6, self.recreate),
            ("job_create", 12, self.job_create),
            ("job_delete", 10, self.job_delete),
            ("daemonset_update", 6, self.daemonset_update),
            ("statefulset_update", 8, self.statefulset_update),
            ("tag_refresh", 5, self.tag_refresh),
        ]
        name, _, act = self.rng.choices(actions, weights=[w for _, w, _ in actions])[0]
        try:
            await act()
        except (ApiError, aiohttp.ClientError, ProcessError, TimeoutError) as exc:
            self.report.actions[f"{name}_failed"] += 1
            if not isinstance(exc, ProcessError):  # a push while the store is down is normal
                self.report.harness_errors.append(f"load {name}: {exc!r}"[:300])
            return
        self.report.actions[name] += 1

    async def scale(self) -> None:
        name = self.rng.choice(self.deployments)
        await self.api.patch("Deployment", name, {"spec": {"replicas": self.rng.randint(0, 3)}},
                             namespace=NAMESPACE)

    async def _set_image(self, kind: str, name: str) -> None:
        image = self.pool.pick()
        self._remember(kind, name, image)
        await self.api.patch(kind, name, {"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": image, "imagePullPolicy": "Always"}]}}}},
            namespace=NAMESPACE)

    async def update(self) -> None:
        await self._set_image("Deployment", self.rng.choice(self.deployments))

    async def recreate(self) -> None:
        name = self.rng.choice(self.deployments)
        await self.api.delete("Deployment", name, namespace=NAMESPACE)

        async def gone() -> bool:
            return await self.api.get("Deployment", name, namespace=NAMESPACE) is None

        await wait_for(gone, timeout=30, interval=0.2, description=f"{name} deleted")
        await self.api.create(deployment(name, self.pool.pick(), self.rng.randint(1, 2)))

    async def job_create(self) -> None:
        self._job_number += 1
        name = f"job-{self._job_number}"
        await self.api.create(job(name, self.pool.pick()))
        self.jobs.append(name)

    async def job_delete(self) -> None:
        if not self.jobs:
            return
        name = self.jobs.pop(0)
        await self.api.delete("Job", name, namespace=NAMESPACE)

    async def daemonset_update(self) -> None:
        await self._set_image("DaemonSet", "agent")

    async def statefulset_update(self) -> None:
        if self.rng.random() < 0.5:
            await self.api.patch("StatefulSet", "db", {"spec": {"replicas": self.rng.randint(
                1, 2)}}, namespace=NAMESPACE)
        else:
            await self._set_image("StatefulSet", "db")

    async def tag_refresh(self) -> None:
        await self.pool.refresh()


# ---------------------------------------------------------------------------------- reading


class UnreachableError(Exception):
    """distribution did not answer (down, restarting): nothing can be concluded."""


class EdgeReader:
    """Reads images back from distribution itself (never through the front) and checks
    every digest; one cache per check round, so a blob shared by images is read once."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.cache: dict[tuple[str, str], str] = {}

    async def _get(self, session: aiohttp.ClientSession, path: str,
                   headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        try:
            async with session.get(path, headers=headers) as response:
                if response.status == 404:
                    return 404, b""
                if response.status >= 500 or response.status in (401, 403, 429):
                    raise UnreachableError(f"{path}: {response.status}")
                response.raise_for_status()
                return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise UnreachableError(f"{path}: {exc!r}") from exc

    async def whole(self, repository: str, digest: str) -> str:
        """'' when the image is whole under `repository`, else what is wrong."""
        async with self.system.edge.session() as session:
            return await self._tree(session, repository, digest)

    async def _tree(self, session: aiohttp.ClientSession, repository: str, digest: str) -> str:
        key = (repository, digest)
        if key in self.cache:
            return self.cache[key]
        status, body = await self._get(session, f"/v2/{repository}/manifests/{digest}",
                                       {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)})
        problem = ""
        if status == 404:
            problem = f"manifest {repository}@{digest} missing"
        elif invariants.digest_of(body) != digest:
            problem = f"manifest {repository}@{digest} reads back as {invariants.digest_of(body)}"
        else:
            children, blobs = invariants.manifest_links(body)
            for child in children:
                problem = problem or await self._tree(session, repository, child)
            for blob, _ in blobs:
                problem = problem or await self._blob(session, repository, blob)
        self.cache[key] = problem
        return problem

    async def _blob(self, session: aiohttp.ClientSession, repository: str, digest: str) -> str:
        key = (repository, digest)
        if key not in self.cache:
            status, body = await self._get(session, f"/v2/{repository}/blobs/{digest}")
            if status == 404:
                self.cache[key] = f"blob {digest} of {repository} missing"
            elif invariants.digest_of(body) != digest:
                self.cache[key] = (f"blob {digest} of {repository} reads back as "
                                   f"{invariants.digest_of(body)}")
            else:
                self.cache[key] = ""
        return self.cache[key]

    async def has_manifest(self, repository: str, digest: str) -> bool:
        async with self.system.edge.session() as session:
            status, _ = await self._get(session, f"/v2/{repository}/manifests/{digest}",
                                        {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)})
        return status != 404


def stored_blobs(system: System) -> dict[str, int]:
    """distribution's blobs on disk: digest -> size."""
    root = system.edge.root_dir / "docker" / "registry" / "v2" / "blobs" / "sha256"
    out = {}
    for data in root.glob("*/*/data"):
        with contextlib.suppress(OSError):
            out["sha256:" + data.parent.name] = data.stat().st_size
    return out


def _artifact_source(artifact: Mapping[str, Any]) -> str:
    source = str((artifact.get("spec") or {}).get("sourceArtifact") or "")
    try:
        return references.canonical(source)
    except ValueError:
        return source


def _source_of(pod: Mapping[str, Any], container: str, local_registry: str) -> str | None:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    originals = json.loads(annotations.get(kinds.ORIGINAL_IMAGES_ANNOTATION) or "{}")
    image = originals.get(container)
    if image is None:
        for spec in (pod.get("spec") or {}).get("containers") or []:
            if spec.get("name") == container:
                image = spec.get("image")
    if not image:
        return None
    ref = references.parse(str(image))
    if references.is_local(ref, local_registry):
        ref = references.from_local(ref, local_registry)
    return references.canonical(str(ref))


@dataclass(frozen=True)
class Suspect:
    """An image a live owner needs, to be read back whole from distribution."""

    kind: str  # the violation it would be
    what: str
    artifact: str  # its Artifact's name, which must still be Available
    repository: str
    digest: str
    owner: str  # the uid that must still be live


# ---------------------------------------------------------------------------------- the soak


class Soak:
    def __init__(self, system: System, options: SoakOptions, report: SoakReport) -> None:
        self.system = system
        self.options = options
        self.report = report
        self.rng = random.Random(options.seed)
        self.fault_rng = random.Random(options.seed * 7919 + 1)
        # the GC loop's pacing apart from the load's choices, so the seed alone decides both
        self.gc_rng = random.Random(options.seed * 104729 + 2)
        self.pool = Pool(system, random.Random(options.seed * 31 + 3), options.repositories,
                         options.digest_share)
        # the webhook's down times (failurePolicy Ignore: pods created then pull from the
        # artifact store themselves, by design), and the images pods may have pulled so
        self.webhook_down: list[tuple[float, float]] = []
        self.bypassed: set[str] = set()
        self.api = system.api()
        self.snapshots: list[OwnerSnapshot] = []
        self.deletions: list[tuple[str, str, float]] = []  # artifact, source, when
        # uid -> (when read, images) of the tracker's reference records
        self.recorded: dict[str, list[tuple[float, frozenset[str]]]] = {}
        self.blobs_seen: dict[str, int] = {}
        self.freed: Counter[str] = Counter()
        self.stop = asyncio.Event()
        self.last_fault_end = time.monotonic()
        self.store_log_offset = 0
        self.nc: Any = None
        self._flagged: set[str] = set()
        self.history: dict[str, set[str]] = {}  # the load's, once it runs

    # -- the pieces ------------------------------------------------------------------------

    async def connect(self) -> None:
        """The checker's own NATS connection, riding out a killed NATS node."""
        self.nc = await nats.connect(servers=self.system.nats_servers, connect_timeout=5,
                                     max_reconnect_attempts=-1, reconnect_time_wait=0.5)

    async def close(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
        await self.api.close()

    async def owners(self) -> OwnerSnapshot:
        """Every live owner in the soak's namespace, with its generation and images."""
        owners: dict[str, tuple[str, int, frozenset[str]]] = {}
        for kind in _OWNER_KINDS:
            for obj in await self.api.list(kind, namespace=NAMESPACE):
                meta = obj["metadata"]
                if meta.get("deletionTimestamp"):
                    continue
                owners[meta["uid"]] = (kind, int(meta.get("generation") or 0),
                                       frozenset(verifying._template_images(obj)))
        return OwnerSnapshot(taken=time.time(), owners=owners)

    async def snapshot(self) -> OwnerSnapshot:
        snap = await self.owners()
        self.snapshots.append(snap)
        del self.snapshots[:-40]
        return snap

    def track_blobs(self) -> None:
        """Record every blob that left distribution's storage (GC freed it)."""
        now = stored_blobs(self.system)
        for digest in self.blobs_seen:
            if digest not in now:
                self.freed[digest] += 1
        self.blobs_seen = now

    async def watch_artifacts(self) -> None:
        """Every Artifact deletion (for invariant 2) and every Artifact that went Available."""
        version = ""
        while not self.stop.is_set():
            try:
                if not version:
                    items, version = await self.api.list_with_version("Artifact")
                    for item in items:
                        self._artifact_seen(item)
                async for kind, obj in self.api.watch("Artifact", resource_version=version):
                    if kind == "ERROR":
                        version = ""
                        break
                    if kind == "BOOKMARK":
                        continue
                    version = str(obj["metadata"]["resourceVersion"])
                    if kind == "DELETED":
                        source = _artifact_source(obj)
                        self.deletions.append((obj["metadata"]["name"], source, time.time()))
                    else:
                        self._artifact_seen(obj)
            except (ApiError, aiohttp.ClientError, TimeoutError, OSError):
                version = ""
                await asyncio.sleep(0.5)

    def _artifact_seen(self, obj: Mapping[str, Any]) -> None:
        if (obj.get("status") or {}).get("phase") == "Available":
            self.report.mirrored.add(f"{obj['metadata']['name']}/{obj['metadata']['uid']}")

    async def gc_run(self, *, timeout: float = 60.0) -> schemas.GcEvent | None:
        request = schemas.encode(schemas.GcRunRequest(force=True, requested_by="soak"))
        try:
            reply = await self.nc.request(subjects.GC_RUN_REQUEST, request, timeout=timeout)
        except (nats.errors.Error, TimeoutError):
            self.report.gc_outcomes["no_reply"] += 1
            return None
        event = msgspec.json.decode(reply.data, type=schemas.GcEvent)
        self.report.gc_outcomes[event.event] += 1
        if event.event == "failed":
            failures = self.report.figures.setdefault("gc_failures_first", [])
            if len(failures) < 3:
                failures.append(event.message[:200])
        if event.event == "finished":
            self.report.gc_runs += 1
            self.report.bytes_freed += event.bytes_freed
        return event

    # -- invariants 1 and 2, continuously ----------------------------------------------------

    async def check_round(self) -> None:
        """One round: owners, reference records, pending deletions, and every image a live
        owner needs read back from distribution."""
        snap = await self.snapshot()
        await self.read_records()
        self.track_blobs()
        if any(start - 3 <= snap.taken <= end + 15 for start, end in self.webhook_down):
            self.bypassed.update(i for _, _, images in snap.owners.values() for i in images)
        await self._judge_deletions(snap)
        reader = EdgeReader(self.system)
        artifacts = {a["metadata"]["name"]: a for a in await self.api.list("Artifact")}
        previous = self.snapshots[-2] if len(self.snapshots) > 1 else None
        local = self.system.local_registry
        suspects: list[Suspect] = []
        for pod in await self.api.list("Pod", namespace=NAMESPACE):
            meta, status = pod["metadata"], pod.get("status") or {}
            if status.get("phase") in ("Running", "Succeeded"):
                self.report.pods_started.add(meta["uid"])
            if status.get("phase") != "Running" or meta.get("deletionTimestamp"):
                continue
            controller = [o for o in meta.get("ownerReferences") or [] if o.get("controller")]
            owner = controller[0]["uid"] if controller else meta["uid"]
            if controller and owner not in snap.owners:
                continue  # its owner is gone: the reference ended with it (principle 3)
            for cs in status.get("containerStatuses") or []:
                image_id = str(cs.get("imageID") or "")
                source = _source_of(pod, str(cs.get("name")), local)
                if "@" not in image_id or source is None:
                    continue
                if not image_id.startswith(local + "/"):
                    self.bypassed.add(source)
                name = references.artifact_name(references.parse(source))
                if ((artifacts.get(name) or {}).get("status") or {}).get(
                        "phase") != "Available":
                    continue  # not mirrored yet: the front may be serving it from the source
                repo = references.to_local(references.parse(source), self.system.edge.host).path
                suspects.append(Suspect("running_pod_image_incomplete",
                                        f"pod {meta['name']} ({source})", name, repo,
                                        image_id.rsplit("@", 1)[1], owner))
        if previous is not None:
            steady = {uid: v for uid, v in snap.owners.items() if uid in previous.owners}
            used = {image: uid for uid, (_, _, images) in steady.items() for image in images}
            for name, artifact in artifacts.items():
                status = artifact.get("status") or {}
                source = _artifact_source(artifact)
                if status.get("phase") != "Available" or source not in used:
                    continue
                repo = references.to_local(references.parse(source), self.system.edge.host).path
                suspects.append(Suspect("live_owner_artifact_lost_content",
                                        f"Artifact {name} ({source})", name, repo,
                                        str(status.get("digest")), used[source]))
        for suspect in suspects:
            try:
                problem = await reader.whole(suspect.repository, suspect.digest)
            except UnreachableError:
                continue
            if problem:
                await self._confirm(suspect)

    async def read_records(self, *, strict: bool = False) -> None:
        """The tracker's reference records in the soak's namespace, as seen now.

        Best effort while the soak runs (NATS failing over: the next round reads them);
        `strict`, every record or an exception."""
        js = self.nc.jetstream()
        now = time.time()
        try:
            kv = await js.key_value(subjects.REFS_BUCKET)
            keys = await kv.keys()
        except (BucketNotFoundError, NotFoundError, nats.js.errors.NoKeysError):
            return
        except (nats.errors.Error, TimeoutError):
            if strict:
                raise
            return
        errors: tuple[type[BaseException], ...] = (
            (msgspec.DecodeError,) if strict else
            (nats.errors.Error, NotFoundError, TimeoutError, msgspec.DecodeError))
        for key in keys:
            with contextlib.suppress(*errors):
                entry = await kv.get(key)
                if not entry.value:
                    continue
                record = msgspec.json.decode(entry.value, type=schemas.OwnerRecord)
                if record.namespace == NAMESPACE and record.images:
                    seen = self.recorded.setdefault(record.uid, [])
                    seen.append((now, frozenset(references.canonical(i)
                                                for i in record.images)))
                    del seen[:-20]

    def recorded_before(self, when: float) -> dict[str, frozenset[str]]:
        out: dict[str, frozenset[str]] = {}
        for uid, seen in self.recorded.items():
            images = frozenset().union(*(i for t, i in seen if t <= when))
            if images:
                out[uid] = images
        return out

    async def _confirm(self, suspect: Suspect) -> None:
        """A miss is a violation only if it lasts while the owner stays live and the Artifact
        still says Available (a read racing an owner's deletion or a collection, or
        distribution restarting, is not)."""
        key = f"{suspect.kind} {suspect.what} {suspect.digest}"
        if key in self._flagged:
            return
        await asyncio.sleep(2.0)
        snap = await self.owners()
        artifact = await self.api.get("Artifact", suspect.artifact)
        if (suspect.owner not in snap.owners
                or ((artifact or {}).get("status") or {}).get("phase") != "Available"):
            return
        try:
            again = await EdgeReader(self.system).whole(suspect.repository, suspect.digest)
        except UnreachableError:
            return
        if again:
            self._flagged.add(key)
            kind = snap.owners[suspect.owner][0]
            self.report.violation(suspect.kind, f"{suspect.what}, Available, owner {kind} "
                                                f"{suspect.owner} live: {again}")

    async def _judge_deletions(self, after: OwnerSnapshot) -> None:
        keep = []
        for name, source, when in self.deletions:
            if after.taken < when:
                keep.append((name, source, when))
                continue
            # a snapshot at least a second before the watch saw the deletion: an owner created
            # after the deletion cannot be in it
            before = [s for s in self.snapshots if s.taken <= when - 1.0]
            if not before:
                continue
            lost = invariants.lost_by_live_owner(source, when, before[-1], after,
                                                 self.recorded_before(when - 1.0))
            unrecorded = invariants.lost_by_live_owner(
                source, when, before[-1], after,
                {uid: frozenset({source}) for uid in before[-1].owners})
            if unrecorded and not lost:
                # the tracker had not recorded the owner yet (it may have been down): the
                # grace period was the only protection, as designed; counted, not a violation
                self.report.figures["deleted_before_owner_recorded"] = self.report.figures.get(
                    "deleted_before_owner_recorded", 0) + 1
            if lost:
                self.report.violation("artifact_deleted_with_live_owner",
                                      f"Artifact {name} ({source}) deleted while used by "
                                      f"{', '.join(lost)}")
        self.deletions = keep

    # -- the loops -----------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def load_loop(self, load: Load) -> None:
        while not self.stop.is_set():
            await load.step()
            await self._sleep(self.rng.uniform(*self.options.action_gap))

    async def gc_loop(self) -> None:
        while not self.stop.is_set():
            await self.gc_run(timeout=30)
            self.track_blobs()
            await self._sleep(self.gc_rng.uniform(*self.options.gc_gap))

    async def check_loop(self) -> None:
        while not self.stop.is_set():
            try:
                await self.check_round()
            except (ApiError, aiohttp.ClientError, TimeoutError, OSError):
                pass  # the API server busy, or NATS failing over: the next round
            except Exception as exc:  # a checker bug must not end the checks silently
                self.report.harness_errors.append(f"check: {exc!r}"[:300])
            await self._sleep(self.options.check_interval)

    def fault_kinds(self) -> list[str]:
        kinds = [f"kill:{name}" for name in self.system.services]
        if self.system.nats_cluster is not None:
            kinds += [f"kill:{node.name}" for node in self.system.nats_cluster.nodes]
        elif self.system.nats is not None:
            kinds.append("kill:nats")
        kinds += ["kill:edge-registry", "down:artifact-store", "gc-readonly-kill"]
        if self.options.fault_kinds is not None:
            kinds = [k for k in kinds if k in self.options.fault_kinds]
        return kinds

    async def fault_loop(self) -> None:
        kinds = self.fault_kinds()
        deck: list[str] = []
        while not self.stop.is_set():
            await self._sleep(self.fault_rng.uniform(*self.options.fault_gap))
            if self.stop.is_set() or not kinds:
                return
            if not deck:  # every kind once per round, in a seeded order
                deck = list(kinds)
                self.fault_rng.shuffle(deck)
            kind = deck.pop()
            try:
                landed = await self.inject(kind)
            except Exception as exc:  # a restart that fails is a finding, and must be retried
                self.report.harness_errors.append(f"fault {kind}: {exc!r}"[:300])
                landed = True
                await self.restore_all()
            if landed:
                self.report.faults[kind] += 1
            else:
                self.report.fault_misses[kind] += 1
            self.last_fault_end = time.monotonic()

    async def inject(self, kind: str) -> bool:
        """One fault and its repair; False when the moment it needs never came."""
        down = self.fault_rng.uniform(*self.options.down_for)
        system = self.system
        if kind == "gc-readonly-kill":
            return await self.kill_gc_in_read_only_window()
        if kind == "down:artifact-store":
            await system.artifact_store.stop()
            await asyncio.sleep(self.fault_rng.uniform(*self.options.store_down_for))
            await system.artifact_store.start()
            return True
        name = kind.removeprefix("kill:")
        if name == "edge-registry":
            await system.edge.kill()
            await asyncio.sleep(down)
            await system.edge.start()
            return True
        if system.nats_cluster is not None and name.startswith("nats"):
            index = [n.name for n in system.nats_cluster.nodes].index(name)
            await system.nats_cluster.kill(index)
            await asyncio.sleep(down)
            await system.nats_cluster.restart(index)
            return True
        if name == "nats" and system.nats is not None:
            await system.nats.kill()
            await asyncio.sleep(down)
            await system.nats.start()
            return True
        killed = time.time()
        if name == "webhook":
            self.webhook_down.append((killed, killed + 3600))
        await system.kill(name)
        await asyncio.sleep(down)
        await system.start_service(name)
        if name == "webhook":
            self.webhook_down[-1] = (killed, time.time())
        return True

    async def kill_gc_in_read_only_window(self) -> bool:
        """Ask for a GC run and kill -9 the GC holding the sweep lock as soon as a front has
        acknowledged read-only for it (`readonly.<front>` naming the lock)."""
        js = self.nc.jetstream()
        try:
            kv = await js.key_value(subjects.GC_BUCKET)
        except (BucketNotFoundError, NotFoundError, nats.errors.Error):
            return False
        request = asyncio.create_task(self.gc_run(timeout=60))
        victim = ""
        try:
            # a run sweeps only when it found garbage: ask again while the load makes some
            deadline = time.monotonic() + 30
            next_request = time.monotonic() + 2.0
            while time.monotonic() < deadline and not victim:
                if request.done() and time.monotonic() >= next_request:
                    request = asyncio.create_task(self.gc_run(timeout=60))
                    next_request = time.monotonic() + 2.0
                with contextlib.suppress(nats.errors.Error, NotFoundError, msgspec.DecodeError):
                    lock = await kv.get(subjects.FENCE_LOCK)
                    entry = msgspec.json.decode(lock.value or b"{}", type=schemas.FenceEntry)
                    if entry.purpose.startswith("sweep"):
                        keys = await kv.keys()
                        for key in keys:
                            if not key.startswith(f"{subjects.FENCE_READ_ONLY}."):
                                continue
                            ack = await kv.get(key)
                            acked = msgspec.json.decode(ack.value or b"{}",
                                                        type=schemas.FenceEntry)
                            if abs(acked.acquired - entry.acquired) < 1e-6:
                                victim = entry.holder
                                break
                if not victim:
                    await asyncio.sleep(0.02)
            if not victim:
                return False
            gcs = [n for n, p in self.system.services.items()
                   if n.split("-")[0] == "gc" and p.running]
            chosen = [n for n in gcs if n == victim or victim.startswith(n)] or gcs
            for name in chosen:
                await self.system.kill(name)
            await asyncio.sleep(self.fault_rng.uniform(*self.options.down_for))
            for name in chosen:
                await self.system.start_service(name)
            return True
        finally:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(request, 65)

    async def restore_all(self) -> None:
        """Every process running again (what an operator's Deployments and StatefulSets do)."""
        system = self.system
        if system.nats_cluster is not None:
            for index, node in enumerate(system.nats_cluster.nodes):
                if not node.running:
                    await system.nats_cluster.restart(index)
        elif system.nats is not None and not system.nats.running:
            await system.nats.start()
        if not system.edge.running:
            await system.edge.start()
        if not system.artifact_store.running:
            await system.artifact_store.start()
        for name, process in system.services.items():
            if not process.running:
                await system.start_service(name)

    # -- settling and the final checks ---------------------------------------------------------

    async def settle(self) -> None:
        await self.restore_all()
        began = self.last_fault_end
        last: list[str] = []
        edge = self.system.local_registry

        async def exact() -> bool:
            pods = await self.api.list("Pod", namespace=NAMESPACE)
            from_source = {
                (p["metadata"].get("labels") or {}).get("app") for p in pods
                if any(not str(cs.get("imageID", "")).startswith(edge + "/")
                       for cs in (p.get("status") or {}).get("containerStatuses") or [])}
            self.report.figures["pods_running_from_source"] = sum(
                1 for p in pods if (p["metadata"].get("labels") or {}).get("app") in from_source)
            try:
                last[:] = await verifying.problems(
                    self.system, self.api, namespaces=(NAMESPACE,), digests=self.pool.digests(),
                    from_source={a for a in from_source if a}, grown=self.history)
            except Exception as exc:  # NATS or the API failing over: not there yet
                last[:] = [f"the check itself failed: {exc!r}"]
            return not last

        try:
            await wait_for(exact, timeout=self.options.settle_timeout, interval=1.0,
                           description="the exact end state")
            self.report.settled = True
            self.report.settle_seconds = round(time.monotonic() - began, 1)
        except TimeoutError:
            for problem in last[:30]:
                self.report.violation("not_settled", problem)

    async def final_checks(self) -> None:
        await self.check_round()
        await self._duplicates()
        await self._probe_sweep()
        await self._collected_and_accounted()
        self._store_fetches()

    async def _duplicates(self) -> None:
        """Invariant 4: one message per Nats-Msg-Id in the relay's stream."""
        js = self.nc.jetstream()
        info = await js.stream_info(subjects.KUBE_STREAM)
        ids: list[str] = []
        first, last = info.state.first_seq, info.state.last_seq
        for start in range(first, last + 1, 64):
            async def one(seq: int) -> str | None:
                try:
                    msg = await js.get_msg(subjects.KUBE_STREAM, seq)
                except NotFoundError:
                    return None
                return (msg.headers or {}).get("Nats-Msg-Id")

            found = await asyncio.gather(*(one(s) for s in range(start, min(start + 64,
                                                                              last + 1))))
            ids += [i for i in found if i]
        self.report.figures["stream_messages"] = len(ids)
        for msg_id, count in invariants.duplicate_msg_ids(ids).items():
            self.report.violation("duplicate_relay", f"Nats-Msg-Id {msg_id} {count} times")

    async def _probe_sweep(self) -> None:
        """A sweep after everything settled: an image used once and released, collected."""
        probe = self.pool.probe
        assert probe is not None
        name = references.artifact_name(references.parse(probe.reference))
        await self.api.create(deployment("final-probe", probe.reference, 1))

        async def available() -> bool:
            artifact = await self.api.get("Artifact", name)
            return ((artifact or {}).get("status") or {}).get("phase") == "Available"

        try:
            await wait_for(available, timeout=120, interval=0.5, retry_on=(ApiError,),
                           description="the probe image Available")
        finally:
            await self.api.delete("Deployment", "final-probe", namespace=NAMESPACE)

        async def collected() -> bool:
            event = await self.gc_run(timeout=60)
            self.track_blobs()
            return event is not None and await self.api.get("Artifact", name) is None

        try:
            await wait_for(collected, timeout=120, interval=1.0, retry_on=(ApiError,),
                           description="the probe's Artifact collected")
            self.report.figures["final_sweep"] = True
        except TimeoutError as exc:
            self.report.figures["final_sweep"] = False
            self.report.violation("unreferenced_not_collected", f"probe image: {exc}")

    async def _collected_and_accounted(self) -> None:
        """Invariant 3: what no live owner uses is gone; what the Available Artifacts hold is
        exactly what distribution stores (every blob counted once)."""
        snap = await self.owners()
        # in use: what the live owners' reference records list (they settled exact: their
        # templates, and for a DaemonSet or StatefulSet the images it had before)
        async def read_all() -> bool:
            self.recorded.clear()
            await self.read_records(strict=True)
            return True

        await wait_for(read_all, timeout=60, interval=1.0,
                       retry_on=(nats.errors.Error, TimeoutError),
                       description="every reference record read")
        used = {image for uid, seen in self.recorded.items() if uid in snap.owners
                for image in seen[-1][1]}
        used |= {image for _, _, images in snap.owners.values() for image in images}
        artifacts = await self.api.list("Artifact")
        used_digests: set[str] = set()
        expected: dict[str, int] = {}
        for artifact in artifacts:
            source = _artifact_source(artifact)
            status = artifact.get("status") or {}
            if source not in used:
                self.report.violation("unreferenced_not_collected",
                                      f"Artifact {artifact['metadata']['name']} ({source}) "
                                      f"remains, no live owner uses it")
                continue
            version = self.pool.version_of(source)
            if status.get("phase") == "Available" and version is not None:
                used_digests.add(version.digest)
                expected.update(version.contents())
        reader = EdgeReader(self.system)
        for version in self.pool.all_versions():
            if version.digest in used_digests:
                continue
            repo = references.to_local(references.parse(version.reference),
                                       self.system.edge.host).path
            with contextlib.suppress(UnreachableError):
                if await reader.has_manifest(repo, version.digest):
                    self.report.violation("unreferenced_not_collected",
                                          f"{repo}@{version.digest} ({version.tag}) still in "
                                          "the edge registry, no live owner uses it")
        stored = stored_blobs(self.system)
        accounting = invariants.registry_accounting(stored, expected)
        self.report.figures["registry_bytes"] = {
            "stored": accounting.stored_bytes, "expected": accounting.expected_bytes,
            "missing": sum(accounting.missing.values()),
            "excess": sum(accounting.excess.values())}
        for digest, size in accounting.missing.items():
            self.report.violation("registry_bytes_missing",
                                  f"blob {digest} ({size} B) of an Available image not stored")
        if self.report.figures.get("final_sweep"):
            for digest, size in accounting.excess.items():
                self.report.violation("registry_bytes_excess",
                                      f"blob {digest} ({size} B) stored after the final sweep, "
                                      "no Available image names it")

    def _store_fetches(self) -> None:
        """Invariant 5 from the artifact store's access log."""
        sizes: dict[str, int] = {}
        versions: Counter[str] = Counter()
        exempt: set[str] = set()
        for version in self.pool.all_versions():
            for digest, size in version.contents().items():
                sizes[digest] = size
                versions[digest] += 1
            if {references.canonical(version.reference),
                    references.canonical(version.by_digest())} & self.bypassed:
                # pods pulled it from the artifact store themselves (the webhook was down)
                exempt.update(version.contents())
                self.report.figures["store_exempt_versions"] = self.report.figures.get(
                    "store_exempt_versions", 0) + 1
        with self.system.artifact_store.log_path.open("rb") as log:
            log.seek(self.store_log_offset)
            text = log.read().decode(errors="replace")
        fetches = invariants.store_fetches(text, sizes)
        self.report.figures["store_blob_fetches"] = sum(fetches.values())
        self.report.figures["store_distinct_blobs_fetched"] = len(fetches)
        for digest, (count, allowed) in invariants.overfetched(
                {d: n for d, n in fetches.items() if d not in exempt}, versions,
                self.freed).items():
            self.report.violation("store_overfetch",
                                  f"blob {digest} served {count} times, at most {allowed} "
                                  f"({versions.get(digest, 0)} versions hold it, GC freed it "
                                  f"{self.freed.get(digest, 0)} times)")


async def run_soak(options: SoakOptions) -> SoakReport:
    """The whole soak; the sandbox is always stopped, and kept on a violation."""
    report = SoakReport(minutes=options.minutes, seed=options.seed)
    temporary = options.root is None
    root = options.root or Path(tempfile.mkdtemp(prefix=f"soak-{options.seed}-"))
    system = System(root, SystemOptions(
        nodes=options.nodes, nats_cluster=options.ha, front_replicas=2 if options.ha else 1,
        ha_replicas=options.ha, service_env=options.service_env,
        settings={"gc": {"gracePeriodSeconds": 1.0}, "clusterRegistry": {
            "clusterRegistryGCThreshold": 0}}))
    began = time.monotonic()
    soak: Soak | None = None
    try:
        await system.start()
        soak = Soak(system, options, report)
        await soak.pool.fill()
        log = system.artifact_store.log_path
        soak.store_log_offset = log.stat().st_size if log.exists() else 0
        await soak.connect()
        load = Load(soak.api, soak.pool, soak.rng, report, options.deployments)
        soak.history = load.history
        await load.setup(system)
        soak.track_blobs()
        tasks = [asyncio.create_task(soak.watch_artifacts(), name="artifact-watch"),
                 asyncio.create_task(soak.load_loop(load), name="load"),
                 asyncio.create_task(soak.gc_loop(), name="gc"),
                 asyncio.create_task(soak.check_loop(), name="checks")]
        if options.faults:
            tasks.append(asyncio.create_task(soak.fault_loop(), name="faults"))
        await soak._sleep(options.minutes * 60)
        soak.stop.set()
        done = await asyncio.wait(tasks[1:], timeout=180)
        for task in done[1]:
            task.cancel()
            report.harness_errors.append(f"{task.get_name()} did not stop within 180 s")
        for task in done[0]:
            if task.exception() is not None:
                report.harness_errors.append(f"{task.get_name()}: {task.exception()!r}"[:300])
        soak.stop.clear()  # the watch goes on through the final checks
        await soak.settle()
        await soak.final_checks()
        soak.stop.set()
        tasks[0].cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await tasks[0]
    except Exception as exc:
        report.harness_errors.append(f"soak: {exc!r}"[:500])
        raise
    finally:
        report.figures["wall_seconds"] = round(time.monotonic() - began, 1)
        if soak is not None:
            await soak.close()
        await system.stop()
        failed = bool(report.violations) or bool(report.harness_errors)
        if failed or not temporary:
            report.kept = str(root)
            (root / "soak-report.json").write_text(json.dumps(report.as_dict(), indent=2))
        else:
            shutil.rmtree(root, ignore_errors=True)
    return report
