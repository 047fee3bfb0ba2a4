"""The demo's scenario: a network function deployed, cut off from its artifact store, and freed.

The mission in one run, every claim checked on the real system rather than
announced: the pods' images are rewritten to the edge registry; an Artifact
per image goes Pending -> Mirroring -> Available; the pods run from the edge
registry; with the artifact store stopped, every pod deleted comes back
Running and a new Job of the same image runs, and a node that never held
the images joins and pulls every layer from the edge registry; the network
function deleted, GC frees the bytes; and the artifact store's own access
log shows one pull per image, however many pods started.

The kubelet backs off as a real one does (10 s, 20 s ... per pod and image),
and every step that starts pods reports their time to Running and the pull
failures the kubelet recorded as events (`podstarts`): a first deploy whose
pods pull before the mirror has copied would show them, truthfully. Pods pull
through the registry front (issue 15), which serves what the edge registry
lacks from the source while the mirror copies, fetching each blob once for
every pod and the mirror: the first deploy shows no ErrImagePull, and each
such step also says what the front did (misses served from the source,
clients that joined a fetch, hits).

Each step is a method that waits on conditions (never sleeps), raises
`StepError` with what it saw when a claim does not hold, and returns a
line for the timeline. `Scenario.run` chains them, narrates, and stops at
the first failure (a later step would only fail for the same reason). The
end-to-end tests call the same methods one by one and assert on them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import nats

from clusterregistry import kinds, references, schemas, subjects
from clusterregistry_sandbox.apiclients import ApiClient, ApiError
from clusterregistry_sandbox.narrating import Narrator, table
from clusterregistry_sandbox.podstarts import pod_starts
from clusterregistry_sandbox.samples import PushedSample
from clusterregistry_sandbox.supervising import wait_for
from clusterregistry_sandbox.systems import SERVICES, System, SystemOptions

__all__ = [
    "NF_NAMESPACE",
    "Scenario",
    "StepError",
    "StepResult",
    "count_manifest_pulls",
    "run_demo",
]

NF_NAMESPACE = "nf"
PULL_SECRET = "artifact-store"
STEP_TIMEOUT = 60.0
_ACCESS = re.compile(
    r'"(?P<method>GET|HEAD) /v2/(?P<repo>[^ ]+?)/manifests/(?P<ref>[^ ?"]+)[^"]*" (?P<status>\d{3})'
)
_PHASE_ORDER = ("Pending", "Mirroring", "Available")
_NF_APPS = frozenset({"upf", "smf", "amf-init"})


class StepError(Exception):
    """A claim of the scenario did not hold; the message says what was seen instead."""


@dataclass
class StepResult:
    title: str
    ok: bool
    seconds: float
    detail: str


def count_manifest_pulls(log_text: str, *, method: str = "GET") -> dict[str, int]:
    """`repository:reference` -> successful manifest requests, from a registry access log."""
    counts: dict[str, int] = {}
    for match in _ACCESS.finditer(log_text):
        if match["method"] != method or not match["status"].startswith("2"):
            continue
        key = f"{match['repo']}:{match['ref']}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _image(sample: PushedSample, name: str) -> dict[str, Any]:
    return {"name": name, "image": sample.reference, "imagePullPolicy": "Always"}


def network_function(samples: Sequence[PushedSample], *, job_name: str = "amf-init",
                     pull_secrets: bool = True) -> list[dict[str, Any]]:
    """A network function's workloads: a Deployment, a DaemonSet and a Job, one image each.

    `pull_secrets`: each pod names the artifact store's pull secret (what a pod pulling
    from the artifact store itself needs).
    """
    upf, smf, amf = samples[0], samples[1], samples[2]
    secrets = [{"name": PULL_SECRET}] if pull_secrets else []
    return [
        {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "upf", "namespace": NF_NAMESPACE},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "upf"}},
                "template": {
                    "metadata": {"labels": {"app": "upf"}},
                    "spec": {"containers": [_image(upf, "upf")], "imagePullSecrets": secrets},
                },
            },
        },
        {
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "smf", "namespace": NF_NAMESPACE},
            "spec": {
                "selector": {"matchLabels": {"app": "smf"}},
                "template": {
                    "metadata": {"labels": {"app": "smf"}},
                    "spec": {"containers": [_image(smf, "smf")], "imagePullSecrets": secrets},
                },
            },
        },
        job(amf, name=job_name, pull_secrets=pull_secrets),
    ]


def job(sample: PushedSample, *, name: str, pull_secrets: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": NF_NAMESPACE},
        "spec": {
            "backoffLimit": 6,
            "template": {
                "metadata": {"labels": {"app": "amf-init"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [_image(sample, "amf-init")],
                    "imagePullSecrets": [{"name": PULL_SECRET}] if pull_secrets else [],
                },
            },
        },
    }


@dataclass
class ArtifactWatch:
    """Every phase each Artifact went through, as a watch saw them, in order."""

    phases: dict[str, list[str]] = field(default_factory=dict)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    error: str = ""

    def record(self, kind: str, obj: dict[str, Any]) -> None:
        name = str((obj.get("metadata") or {}).get("name"))
        if kind == "DELETED":
            self.deleted.add(name)
            self.objects.pop(name, None)
            return
        self.deleted.discard(name)
        self.objects[name] = obj
        phase = str((obj.get("status") or {}).get("phase") or "")
        seen = self.phases.setdefault(name, [])
        if phase and (not seen or seen[-1] != phase):
            seen.append(phase)


class Scenario:
    """The demo's steps on a started System; each step raises StepError or returns a line."""

    def __init__(self, system: System, narrator: Narrator | None = None) -> None:
        self.system = system
        self.narrator = narrator or Narrator()
        # the network function's images (the first three samples; the rest are for tests)
        self.samples = system.samples[:3]
        self.api: ApiClient = system.api()
        self.watch = ArtifactWatch()
        self._watch_task: asyncio.Task[None] | None = None
        self._log_offset = 0
        self.pods_started = 0
        self.numbers: dict[str, Any] = {}
        self.began = time.monotonic()
        # Pods name the store's pull secret, as a network function's pods do. The front
        # fetches with the credentials configured for clusterregistry (mirror.registries),
        # and the mirror reads through the front because those cover the store's host
        # (oci.clients.RegistryClients.front_can_read): still one fetch per blob.
        self.pull_secrets = True
        self._front_seen: dict[str, float] = {}

    async def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch_task
        await self.api.close()

    # ------------------------------------------------------------------ helpers

    def needs(self, *names: str) -> None:
        """Fail at once, saying why, when a process a step relies on is not running."""
        missing = []
        for name in names:
            spec = next(s for s in SERVICES if s.name == name)
            process = self.system.services.get(name)
            if not spec.landed:
                missing.append(f"{name} (cmd/{spec.entry}.py has not landed)")
            elif process is None or not process.running:
                missing.append(f"{name} (not running)")
        if missing:
            raise StepError("needs " + ", ".join(missing))

    def local_reference(self, sample: PushedSample) -> str:
        return str(references.to_local(references.parse(sample.reference),
                                       self.system.local_registry))

    def artifact_name(self, sample: PushedSample) -> str:
        return references.artifact_name(references.parse(sample.reference))

    async def _until(self, check: Callable[[], Awaitable[Any]], what: str,
                     timeout: float = STEP_TIMEOUT) -> Any:
        try:
            return await wait_for(check, timeout=timeout, interval=0.2, description=what,
                                  retry_on=(ApiError,))
        except TimeoutError as exc:
            raise StepError(str(exc)) from None

    async def nf_pods(self) -> list[dict[str, Any]]:
        """The network function's live pods (not terminating; other apps in `nf` left out)."""
        pods = await self.api.list("Pod", namespace=NF_NAMESPACE)
        return [
            p for p in pods
            if not (p.get("metadata") or {}).get("deletionTimestamp")
            and ((p["metadata"].get("labels") or {}).get("app") in _NF_APPS)
        ]

    async def expected_serving(self) -> int:
        """Pods the Deployment and the DaemonSet should have: replicas, and one per node."""
        deployment = await self.api.get("Deployment", "upf", namespace=NF_NAMESPACE)
        replicas = int(((deployment or {}).get("spec") or {}).get("replicas", 0))
        nodes = [n for n in await self.api.list("Node")
                 if not (n.get("spec") or {}).get("unschedulable")]
        return replicas + len(nodes)

    async def establish(self) -> None:
        """Deploy the network function and wait until it runs from the edge registry."""
        await self.deploy()
        await self.rewritten()
        await self.artifacts_available()
        await self.running()

    async def start_artifact_watch(self) -> None:
        """Watch Artifacts from now on (before the NF exists, to see every phase)."""
        try:
            items, version = await self.api.list_with_version("Artifact")
        except ApiError as exc:
            self.watch.error = f"Artifacts are not served: {exc}"
            return
        for item in items:
            self.watch.record("ADDED", item)

        async def follow(version: str) -> None:
            while True:
                try:
                    async for kind, obj in self.api.watch("Artifact", resource_version=version):
                        if kind == "BOOKMARK":
                            continue
                        if kind == "ERROR":
                            _, version = await self.api.list_with_version("Artifact")
                            break
                        self.watch.record(kind, obj)
                        version = str(obj["metadata"]["resourceVersion"])
                except (ApiError, aiohttp.ClientError, TimeoutError):
                    await asyncio.sleep(0.5)

        self._watch_task = asyncio.create_task(follow(version), name="artifact-watch")

    def _access_log(self) -> str:
        path = self.system.artifact_store.log_path
        try:
            with path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    # ------------------------------------------------------------------ the steps

    async def deploy(self) -> str:
        """The network function's namespace, pull secret, Deployment, DaemonSet and Job."""
        with contextlib.suppress(OSError):
            self._log_offset = self.system.artifact_store.log_path.stat().st_size
        await self.start_artifact_watch()
        store = self.system.artifact_store
        assert store.credentials is not None
        user, password = store.credentials
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        # pull secrets name the store as the edge knows it (a flaky link's address if any)
        dockerconfig = {"auths": {self.system.store_host: {"username": user,
                                                           "password": password,
                                                           "auth": auth}}}
        await self.api.apply({"apiVersion": "v1", "kind": "Namespace",
                              "metadata": {"name": NF_NAMESPACE}})
        await self.api.apply({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": PULL_SECRET, "namespace": NF_NAMESPACE},
            "data": {".dockerconfigjson": base64.b64encode(
                json.dumps(dockerconfig).encode()).decode()},
        })
        self._front_seen = await self.system.front_counts()
        for workload in network_function(self.samples, pull_secrets=self.pull_secrets):
            await self.api.create(workload)
        secrets = ("with the artifact store's pull secret" if self.pull_secrets else
                   "no pull secret: the front holds the artifact store's credentials")
        return ("Deployment upf (2 replicas), DaemonSet smf (one pod per node), Job amf-init; "
                f"images in the artifact store {store.host}; {secrets}")

    async def front_line(self) -> str:
        """What the registry fronts did since the last call: hits, and misses served from
        the source (fetched once, the other clients joining), for a step's line."""
        if not self.system.front_on:
            return ""
        now = await self.system.front_counts()
        seen, self._front_seen = self._front_seen, now
        # a restarted front starts its counters again: count it from zero
        delta = {key: max(0.0, value - seen.get(key, 0.0)) if value >= seen.get(key, 0.0)
                 else value for key, value in now.items()}
        self.numbers.setdefault("front", []).append(delta)
        hits = delta.get("hit", 0)
        streamed, joined = delta.get("miss_streamed", 0), delta.get("joined", 0)
        failed = delta.get("miss_failed", 0)
        fetched = delta.get("source_fetches", 0)
        if not streamed and not joined and not failed:
            return f"; front: {hits:.0f} hits from the edge registry, nothing from the source"
        return (f"; front: {streamed + joined:.0f} misses served from the source while the "
                f"mirror copied ({fetched:.0f} source fetches, {joined:.0f} clients joined "
                f"one), {hits:.0f} hits, {failed:.0f} failed")

    async def rewritten(self) -> str:
        """Every pod's image points to the edge registry; the annotation keeps the original."""
        self.needs("webhook")
        by_container = {"upf": self.samples[0], "smf": self.samples[1],
                        "amf-init": self.samples[2]}
        problems: list[str] = []

        async def check() -> list[dict[str, Any]] | None:
            pods = await self.nf_pods()
            if len(pods) < await self.expected_serving() + 1:
                return None
            problems.clear()
            for pod in pods:
                annotations = (pod["metadata"].get("annotations") or {})
                originals = json.loads(annotations.get(kinds.ORIGINAL_IMAGES_ANNOTATION, "{}"))
                for container in pod["spec"]["containers"]:
                    sample = by_container[container["name"]]
                    want = self.local_reference(sample)
                    if container["image"] != want:
                        problems.append(f"{pod['metadata']['name']}: {container['image']}")
                    elif references.canonical(originals.get(container["name"], "")) != (
                            references.canonical(sample.reference)):
                        problems.append(f"{pod['metadata']['name']}: annotation {originals}")
            return None if problems else pods

        try:
            pods = await self._until(check, "every nf pod rewritten to the edge registry",
                                     timeout=30)
        except StepError as exc:
            raise StepError(f"{exc}; not rewritten: {problems[:4]}") from None
        sample = self.samples[0]
        return f"{len(pods)} pods: {sample.reference} -> {self.local_reference(sample)}"

    async def artifacts_available(self) -> str:
        """An Artifact per image, Pending -> Mirroring -> Available, digest as in the store."""
        self.needs("relay", "tracker", "reconciler", "mirror-1")
        if self.watch.error:
            raise StepError(self.watch.error)
        names = {self.artifact_name(s): s for s in self.samples}

        async def check() -> bool:
            for name, sample in names.items():
                obj = self.watch.objects.get(name)
                status = (obj or {}).get("status") or {}
                if status.get("phase") == "Failed":
                    raise StepError(f"Artifact {name} Failed: {status.get('message')}")
                if status.get("phase") != "Available":
                    return False
                if status.get("digest") != sample.digest:
                    raise StepError(f"Artifact {name} Available with digest "
                                     f"{status.get('digest')}, the store has {sample.digest}")
            return True

        try:
            await self._until(check, "every Artifact Available")
        except StepError as exc:
            so_far = {n: self.watch.phases.get(n, []) for n in names}
            raise StepError(f"{exc}; phases seen: {so_far}") from None
        for name in names:
            seen = self.watch.phases[name]
            order = [p for p in seen if p in _PHASE_ORDER]
            if order != sorted(order, key=_PHASE_ORDER.index) or seen[-1] != "Available":
                raise StepError(f"Artifact {name} went {' -> '.join(seen)}")
        # and the copies are in the edge registry, byte-identical (same top-level digest)
        for sample in self.samples:
            local = references.parse(self.local_reference(sample))
            info = await self.system.edge.manifest(local.path, local.tag or "latest")
            if info is None or info.digest != sample.digest:
                raise StepError(f"edge registry has {info} for {local}, want {sample.digest}")
        phases = {" -> ".join(self.watch.phases[n]) for n in names}
        return f"{len(names)} Artifacts: " + "; ".join(sorted(phases)) + "; edge digests match"

    async def running(self, *, exclude: set[str] | None = None) -> str:
        """Deployment and DaemonSet pods Running from the edge registry; the Job complete."""
        edge = self.system.local_registry + "/"
        skip = exclude or set()
        bad: list[str] = []

        async def check() -> list[dict[str, Any]] | None:
            pods = [p for p in await self.nf_pods() if p["metadata"]["uid"] not in skip]
            bad.clear()
            serving = [p for p in pods if p["metadata"].get("labels", {}).get("app") != "amf-init"]
            wanted_serving = await self.expected_serving()
            if len(serving) != wanted_serving:
                bad.append(f"{len(serving)} serving pods, want {wanted_serving}")
                return None
            for pod in pods:
                status = pod.get("status") or {}
                phase = status.get("phase")
                wanted = "Succeeded" if pod["metadata"]["labels"].get("app") == "amf-init" else (
                    "Running")
                statuses = status.get("containerStatuses") or []
                ids = [cs.get("imageID", "") for cs in statuses]
                if phase != wanted or not ids or not all(i.startswith(edge) for i in ids):
                    waiting = [((cs.get("state") or {}).get("waiting") or {}).get("message", "")
                               for cs in statuses]
                    bad.append(f"{pod['metadata']['name']} {phase} {ids} {waiting}")
            if bad:
                return None
            # every Job ran to completion (its pods may be gone: a node deleted takes its
            # pods, finished or not, with it)
            jobs = await self.api.list("Job", namespace=NF_NAMESPACE)
            unfinished = [j["metadata"]["name"] for j in jobs
                          if not (j.get("status") or {}).get("succeeded")]
            if unfinished or not jobs:
                bad.append(f"Jobs not complete: {unfinished}")
                return None
            return pods

        try:
            pods = await self._until(check, "nf pods Running from the edge registry")
        except StepError as exc:
            raise StepError(f"{exc}; {bad[:4]}") from None
        self.pods_started += len(pods)
        nodes = sorted({p["spec"].get("nodeName", "?") for p in pods})
        starts = await pod_starts(self.api, pods, namespace=NF_NAMESPACE)
        self.numbers.setdefault("pod_starts", []).append(starts.as_dict())
        return (f"{len(pods)} pods on {', '.join(nodes)}: {starts.line()}; every image "
                f"pulled from {self.system.local_registry}{await self.front_line()}")

    async def new_node(self, name: str = "node-4") -> str:
        """A node that never held the images joins; its DaemonSet pod pulls every layer of
        its image from the edge registry (the artifact store is cut off by now)."""
        await self.api.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})

        async def check() -> list[dict[str, Any]] | None:
            pods = [p for p in await self.nf_pods() if p["spec"].get("nodeName") == name
                    and (p.get("status") or {}).get("phase") == "Running"]
            return pods or None

        pods = await self._until(check, f"a pod on the new node {name} Running")
        sample = self.samples[1]  # the DaemonSet's image
        local = references.parse(self.local_reference(sample))
        blobs = await self.image_blobs(local.path, sample.digest)
        held = self.system.node_blobs(name)
        missing = [d for d, _ in blobs if not (held / d.removeprefix("sha256:")).is_file()]
        if missing:
            raise StepError(f"{name} lacks {len(missing)} of {len(blobs)} blobs of {local}: "
                            f"{missing[:2]}")
        for pod in pods:
            ids = [cs.get("imageID", "") for cs in pod["status"].get("containerStatuses") or []]
            if not all(i.startswith(self.system.local_registry + "/") for i in ids):
                raise StepError(f"{pod['metadata']['name']} ran {ids}, not from the edge")
        starts = await pod_starts(self.api, pods, namespace=NF_NAMESPACE)
        self.numbers.setdefault("pod_starts", []).append(starts.as_dict())
        self.pods_started += len(pods)
        return (f"{name} joined; its smf pod pulled all {len(blobs)} blobs "
                f"({_human(sum(size for _, size in blobs))}) from the edge; {starts.line()}; "
                f"image {local}")

    async def image_blobs(self, repository: str, digest: str) -> list[tuple[str, int]]:
        """(digest, size) of the config and layers a linux/amd64 node pulls of an image."""
        body, _ = await self.system.edge.manifest_bytes(repository, digest)
        manifest = json.loads(body)
        if "manifests" in manifest:
            child = next(m for m in manifest["manifests"]
                         if (m.get("platform") or {}).get("architecture") == "amd64")
            body, _ = await self.system.edge.manifest_bytes(repository, child["digest"])
            manifest = json.loads(body)
        return [(d["digest"], int(d["size"])) for d in [manifest["config"], *manifest["layers"]]]

    async def cut_off(self) -> str:
        """Stop the artifact store; prove it is unreachable."""
        store = self.system.artifact_store
        await store.stop()
        try:
            async with store.session() as session, session.get("/v2/") as response:
                raise StepError(f"the artifact store still answers ({response.status})")
        except (aiohttp.ClientError, OSError):
            pass
        return f"artifact store {store.host} stopped: connection refused"

    async def delete_pods(self) -> tuple[str, set[str]]:
        """Delete every pod of the NF and run its Job again, as a new Job."""
        pods = await self.nf_pods()
        uids = {p["metadata"]["uid"] for p in pods}
        for pod in pods:
            await self.api.delete("Pod", pod["metadata"]["name"], namespace=NF_NAMESPACE)
        await self.api.create(job(self.samples[2], name="amf-init-rerun",
                                  pull_secrets=self.pull_secrets))
        return (f"{len(pods)} pods deleted, Job amf-init-rerun created", uids)

    async def delete_network_function(self) -> str:
        """Delete the workloads (cascading) and wait until no pod or ReplicaSet is left."""
        for kind, name in (("Deployment", "upf"), ("DaemonSet", "smf"), ("Job", "amf-init"),
                           ("Job", "amf-init-rerun")):
            await self.api.delete(kind, name, namespace=NF_NAMESPACE, propagation="Foreground")

        async def gone() -> bool:
            pods = await self.api.list("Pod", namespace=NF_NAMESPACE)
            sets = await self.api.list("ReplicaSet", namespace=NF_NAMESPACE)
            return not pods and not sets

        await self._until(gone, "the network function's pods and ReplicaSets gone")
        return "Deployment, DaemonSet and Jobs deleted; no pod left"

    async def collect_garbage(self) -> str:
        """A GC run on demand: the unreferenced Artifacts and their bytes go."""
        self.needs("gc", "tracker", "reconciler")
        names = {self.artifact_name(s) for s in self.samples}
        usage_before = _disk_usage(self.system.edge.root_dir)
        client = await nats.connect(servers=self.system.nats_servers, connect_timeout=5)
        runs: list[schemas.GcEvent] = []
        request = schemas.encode(schemas.GcRunRequest(requested_by="clusterregistry demo"))
        try:

            async def run_once() -> bool:
                try:
                    reply = await client.request(subjects.GC_RUN_REQUEST, request,
                                                 timeout=STEP_TIMEOUT)
                except nats.errors.NoRespondersError:
                    return False
                event = msgspec.json.decode(reply.data, type=schemas.GcEvent)
                runs.append(event)
                if event.event == "failed":
                    raise StepError(f"GC run {event.run} failed: {event.message}")
                # the Artifacts must first lose their references (tracker, reconciler) and
                # pass GC's grace period; a run before that rightly keeps them: ask again
                return event.event == "finished" and not (names - self.watch.deleted)

            await self._until(run_once, "GC to delete every Artifact of the network function")
        finally:
            await client.close()
        for sample in self.samples:
            local = references.parse(self.local_reference(sample))
            if await self.system.edge.manifest(local.path, sample.digest) is not None:
                raise StepError(f"{local} is still in the edge registry after GC")
        usage_after = _disk_usage(self.system.edge.root_dir)
        self.numbers["bytes_freed"] = usage_before - usage_after
        self.numbers["gc_runs"] = len(runs)
        if usage_after >= usage_before:
            raise StepError(f"edge registry storage did not shrink ({usage_before} -> "
                            f"{usage_after} bytes)")
        last = runs[-1]
        window = (f", read-only {last.read_only_seconds:.2f}s"
                  if last.read_only_seconds else "")
        return (f"{len(names)} Artifacts deleted in {len(runs)} run(s); edge storage "
                f"{_human(usage_before)} -> {_human(usage_after)} "
                f"({_human(usage_before - usage_after)} freed; GC reports "
                f"{_human(sum(r.bytes_freed for r in runs))}{window})")

    def pulls(self) -> str:
        """One pull per image from the artifact store, however many pods started."""
        counts = count_manifest_pulls(self._access_log())
        per_image: dict[str, int] = {}
        for sample in self.samples:
            repo = sample.sample.repository
            per_image[sample.reference] = sum(
                n for key, n in counts.items()
                if key in (f"{repo}:{sample.sample.tag}", f"{repo}:{sample.digest}"))
        self.numbers["pulls"] = per_image
        wrong = {ref: n for ref, n in per_image.items() if n != 1}
        if wrong:
            raise StepError(f"artifact store pulls per image {per_image} (want 1 each) for "
                             f"{self.pods_started} pod starts")
        return (f"{sum(per_image.values())} pulls for {len(per_image)} images and "
                f"{self.pods_started} pod starts (GET manifest by tag on the artifact store)")

    # ------------------------------------------------------------------ the whole run

    async def run(self) -> list[StepResult]:
        """Every step in order, narrated; stops at the first failure."""
        results: list[StepResult] = []
        old_uids: set[str] = set()

        async def delete_pods() -> str:
            nonlocal old_uids
            text, old_uids = await self.delete_pods()
            return text

        async def pulls() -> str:
            return self.pulls()

        steps: list[tuple[str, Callable[[], Awaitable[str]]]] = [
            ("deploy the network function", self.deploy),
            ("pod images rewritten", self.rewritten),
            ("Artifacts Available", self.artifacts_available),
            ("pods Running from the edge", self.running),
            ("cut the artifact store off", self.cut_off),
            ("delete every pod", delete_pods),
            ("pods back from the edge", lambda: self.running(exclude=old_uids)),
            ("a new node pulls every layer from the edge", self.new_node),
            ("delete the network function", self.delete_network_function),
            ("GC frees the bytes", self.collect_garbage),
            ("one pull per image", pulls),
        ]
        failed = False
        for title, step in steps:
            if failed:
                results.append(StepResult(title, False, 0.0, "not run (an earlier step failed)"))
                continue
            started = time.monotonic()
            self.narrator.line(started - self.began, f"{title} ...", style="step")
            try:
                detail = await step()
                ok = True
            except StepError as exc:
                detail, ok = str(exc), False
            except Exception as exc:  # an unexpected error is a failed step, reported as such
                detail, ok = f"{type(exc).__name__}: {exc}", False
            seconds = time.monotonic() - started
            results.append(StepResult(title, ok, seconds, detail))
            mark = self.narrator.paint("ok  " if ok else "FAIL", "ok" if ok else "fail")
            self.narrator.line(time.monotonic() - self.began, f"{mark} {title}: {detail}")
            failed = not ok
        return results


def _disk_usage(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


async def run_demo(*, directory: Path | None = None, keep: bool = False,
                   narrator: Narrator | None = None) -> int:
    """`make demo`: a fresh sandbox, the scenario, a summary; 0 only if every step held."""
    narrator = narrator or Narrator()
    root = directory or Path(tempfile.mkdtemp(prefix="clusterregistry-demo-"))
    began = time.monotonic()
    narrator.say("clusterregistry demo: the whole system on this machine", style="step")
    system = System(root, SystemOptions())
    results: list[StepResult] = []
    code = 1
    # SIGTERM (a CI timeout, `kill`) cancels the run like Ctrl-C does, so the finally below
    # stops every process the sandbox started instead of leaving them orphaned
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        narrator.line(0.0, "starting the sandbox: nats, artifact store (TLS, basic auth), "
                           "edge registry behind the registry front (the one address pods "
                           "pull from), kubesim (3 nodes), clusterregistry processes ...",
                      style="step")
        try:
            await system.start()
        except Exception as exc:
            narrator.line(time.monotonic() - began, f"FAIL sandbox: {exc}", style="fail")
            return 1
        up = time.monotonic() - began
        running = [n for n, p in system.services.items() if p.running]
        absent = [s.name for s in SERVICES if not s.landed]
        narrator.line(up, f"ok   sandbox up: {', '.join(running)} running"
                          + (f"; not landed yet: {', '.join(absent)}" if absent else ""))
        for sample in system.samples:
            narrator.say(f"           sample {sample.reference}  {sample.sample.description}  "
                         f"{sample.digest[:19]}…", style="dim")
        results.append(StepResult("sandbox up", True, up, f"{len(running)} processes"))
        scenario = Scenario(system, narrator)
        scenario.began = began
        try:
            results += await scenario.run()
        finally:
            await scenario.close()
        code = 0 if all(r.ok for r in results) else 1
    finally:
        await system.stop()
        total = time.monotonic() - began
        if results:
            narrator.say()
            narrator.say(table(
                ("STEP", "RESULT", "SECONDS", "DETAIL"),
                [(r.title, "ok" if r.ok else "FAIL", f"{r.seconds:.1f}", r.detail[:110])
                 for r in results]))
            narrator.say()
            verdict = "every step verified" if code == 0 else "NOT every step verified"
            removed = code == 0 and not keep and directory is None
            narrator.say(f"demo {'passed' if code == 0 else 'FAILED'} in {total:.1f}s: {verdict}"
                         f"; logs in {root / 'logs'}" + (" (removed)" if removed else ""),
                         style="ok" if code == 0 else "fail")
        if code == 0 and not keep and directory is None:
            shutil.rmtree(root, ignore_errors=True)
    return code
