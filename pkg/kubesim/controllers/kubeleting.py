"""The simulated kubelet: runs the pods bound to each node, pulling for real.

One logical kubelet per Node (all served by one manager sharing a worker
pool and an aiohttp session). Before a container may run, its image is
really pulled from the registry it names, with the pod's imagePullSecrets,
into the node's own content store (`pulling.py`, `contents.py`): manifest,
config and every layer, verified, as containerd does. So a missing image, a
missing or corrupt layer, wrong credentials or an unreachable registry show
up exactly as on a node: the container waits with ErrImagePull and
containerd's error, then ImagePullBackOff while the kubelet's back-off (per
pod and image, 10 s doubling to 300 s by default) runs, and the pod stays
Pending until a retry succeeds. Pulls on one node run one at a time
(serializeImagePulls) unless configured otherwise.

An image is present on a node only while its manifest and all its blobs are
in that node's store: IfNotPresent then skips the registry, Always resolves
the tag again and fetches only missing blobs, Never requires presence. The
kubelet records the events a real one does (Pulling, Pulled, Failed,
BackOff, Created, Started, Killing) and reports the node's images in
Node status.images. Pods with
restartPolicy Never/OnFailure run for `kubesim.io/run-seconds` (or
KubeletSettings.job_run_seconds) and exit with `kubesim.io/exit-code` (0).
A pod being deleted is killed: it gets a terminal status, then is deleted
with grace period 0. Like a real kubelet, it reacts to spec changes and
deletions, not to status-only updates (its own writes), and resyncs a pod on
its timers. A node that is cordoned (spec.unschedulable) or deleted stops
its kubelet's work.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kubesim.controllers.backoff import Backoff
from kubesim.controllers.caching import NODES, PODS
from kubesim.controllers.credentials import (
    Credential,
    credentials_from_secret,
    matching_credentials,
)
from kubesim.controllers.nodes import node_labels, node_status
from kubesim.controllers.objects import (
    TERMINAL_PHASES,
    Obj,
    annotations_of,
    get_condition,
    is_terminating,
    key_of,
    labels_of,
    name_of,
    namespace_of,
    node_name_of,
    now,
    parse_time,
    pod_phase,
    rfc3339,
    set_condition,
    uid_of,
)
from kubesim.controllers.pulling import Platform, Puller, PullError, RegistryClient
from kubesim.controllers.queueing import Controller
from kubesim.controllers.references import ImageRef, InvalidReferenceError, parse_reference
from kubesim.controllers.workloads import delete_ignoring_missing, write_status
from kubesim.statuses import ApiError

log = logging.getLogger(__name__)

RUN_SECONDS = "kubesim.io/run-seconds"
EXIT_CODE = "kubesim.io/exit-code"
# Exit code of a container killed because its pod was deleted (SIGKILL).
KILLED_EXIT_CODE = 137

_CONDITION_ORDER = (
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
    "PodScheduled",
)
_POD_IP_BASE = int(ipaddress.IPv4Address("10.244.0.0"))


@dataclass
class KubeletSettings:
    """How the simulated kubelets behave (containerd's registry config included)."""

    # extra CA bundles (PEM paths) trusted for registries, besides the system roots
    ca_files: Sequence[str] = ()
    # registries (host:port) reached over plain HTTP, as containerd's `http://` endpoints
    insecure_registries: Sequence[str] = ()
    # image pull back-off: the kubelet's 10 s doubling to 300 s. It is also how soon a pod
    # whose sync failed is synced again (the pod worker's backOffPeriod, 10 s on a node).
    backoff_initial: float = 10.0
    backoff_max: float = 300.0
    # how long a run-to-completion container runs (annotation kubesim.io/run-seconds wins)
    job_run_seconds: float = 0.0
    # one manifest request's time limit
    pull_timeout: float = 30.0
    # a blob download that makes no progress this long fails (containerd's
    # image_pull_progress_timeout, 5 minutes)
    pull_progress_timeout: float = 300.0
    # the platform of nodes without kubernetes.io/os and kubernetes.io/arch labels
    default_platform: str = "linux/amd64"
    # pods synced concurrently (pulls on different nodes overlap)
    workers: int = 16
    # the kubelet's serializeImagePulls (true by default): one pull at a time per node;
    # when false, maxParallelImagePulls bounds them (0: no bound)
    serialize_image_pulls: bool = True
    max_parallel_image_pulls: int = 0
    # where the nodes' content stores live (<state_dir>/nodes/<node>/); None: a temporary
    # directory removed when the kubelets stop
    state_dir: str | None = None
    # how soon a change of the node's images reaches Node status.images (the kubelet's
    # nodeStatusUpdateFrequency)
    node_status_update_frequency: float = 10.0
    # the clock the image pull back-off reads (tests inject one to check its timing)
    clock: Callable[[], float] = time.monotonic
    # the kubelet keeps at most this many images in Node status (nodeStatusMaxImages)
    node_status_max_images: int = 50


class EventRecorder(Protocol):
    """What the kubelet needs of an event recorder (see recording.py)."""

    def event(self, obj: Obj, event_type: str, reason: str, message: str, *,
              field_path: str = "") -> None: ...


@dataclass
class Outcome:
    """One container's image, resolved or not."""

    name: str
    spec_image: str
    ok: bool
    image: str = ""  # normalized reference, as containerd reports it
    image_id: str = ""
    reason: str = ""
    message: str = ""
    retry_in: float | None = None


@dataclass
class PodRuntime:
    """What one kubelet remembers about a pod it runs (a stand-in for the containers)."""

    uid: str
    pod_ip: str = ""
    started_at: str = ""  # containers' start (current run)
    start_time: str = ""  # pod's status.startTime
    # container name -> (spec image, resolved reference, imageID) of what was started
    images: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    last_errors: dict[str, str] = field(default_factory=dict)  # image -> last pull error
    restarts: int = 0
    last_state: dict[str, Any] = field(default_factory=dict)
    crash_until: float = 0.0  # loop time until which an OnFailure container is backing off
    finished: tuple[str, int] | None = None  # (finishedAt, exit code) of a completed run


def default_pull_policy(ref: ImageRef) -> str:
    """The API server's default: Always for :latest (or no tag), else IfNotPresent."""
    if ref.digest is None and (ref.tag in (None, "latest")):
        return "Always"
    return "IfNotPresent"


def node_platform(node: Obj, default: str) -> Platform:
    labels = labels_of(node)
    fallback = Platform.parse(default)
    return Platform(
        os=labels.get("kubernetes.io/os", fallback.os),
        architecture=labels.get("kubernetes.io/arch", fallback.architecture),
        variant=labels.get("kubernetes.io/arch-variant", fallback.variant),
    )


def qos_class(pod: Obj) -> str:
    """v1qos.GetPodQOS, reduced to cpu and memory."""
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    any_set = False
    guaranteed = True
    for container in containers:
        resources = container.get("resources") or {}
        requests = resources.get("requests") or {}
        limits = resources.get("limits") or {}
        if requests or limits:
            any_set = True
        for name in ("cpu", "memory"):
            limit = limits.get(name)
            if limit is None or requests.get(name, limit) != limit:
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _container_id(uid: str, name: str, *, restarts: int) -> str:
    digest = hashlib.sha256(f"{uid}/{name}/{restarts}".encode()).hexdigest()
    return f"containerd://{digest}"


def _run_to_completion(pod: Obj) -> bool:
    return (pod.get("spec") or {}).get("restartPolicy", "Always") in ("Never", "OnFailure")


class Kubelet(Controller):
    """All nodes' kubelets; keys are pod keys, each handled by its node's kubelet."""

    name = "kubelet"

    def __init__(
        self,
        ctx: Any,
        settings: KubeletSettings,
        *,
        recorder_for: Callable[[str], EventRecorder] | None = None,
    ) -> None:
        super().__init__(ctx)
        self.settings = settings
        self.workers = max(1, settings.workers)
        self.registry = RegistryClient(
            ca_files=settings.ca_files,
            insecure_registries=settings.insecure_registries,
            timeout=settings.pull_timeout,
            progress_timeout=settings.pull_progress_timeout,
        )
        if settings.state_dir:
            root = Path(settings.state_dir) / "nodes"
            self._owned_root: Path | None = None
        else:
            root = self._owned_root = Path(tempfile.mkdtemp(prefix="kubesim-nodes-"))
        self.puller = Puller(
            self.registry,
            root,
            serialize=settings.serialize_image_pulls,
            max_parallel=settings.max_parallel_image_pulls,
        )
        self.backoff = Backoff(settings.backoff_initial, settings.backoff_max, clock=settings.clock)
        self.crash_backoff = Backoff(settings.backoff_initial, settings.backoff_max)
        self._runtimes: dict[str, PodRuntime] = {}  # pod uid -> runtime
        self._recorder_for = recorder_for
        self._recorders: dict[str, EventRecorder] = {}
        self._status_timers: dict[str, asyncio.TimerHandle] = {}
        self._status_tasks: set[asyncio.Task[None]] = set()
        self._ip_counter = 1

    # -- events ------------------------------------------------------------------------------

    def initial_keys(self) -> Iterable[str]:
        # every bound pod: each node's kubelet syncs its pods when it starts
        return [key for keys in self.cache.pods_by_node.values() for key in keys]

    def on_event(self, event: str, kind: str, *, old: Obj | None, new: Obj | None) -> None:
        if kind == PODS:
            if new is None:
                if old is not None:
                    self._forget(uid_of(old))
                return
            if not node_name_of(new):
                return
            if old is not None and uid_of(old) == uid_of(new) and not _kubelet_relevant(old, new):
                return  # a status-only change: the kubelet does not react to its own writes
            self.queue.add(key_of(new))
        elif kind == NODES:
            node = new if new is not None else old
            assert node is not None
            name = name_of(node)
            if new is None:
                self.puller.forget(name)
                return
            if not (new.get("status") or {}).get("conditions"):
                self._register(name)
            was = bool(((old or {}).get("spec") or {}).get("unschedulable"))
            now_unschedulable = bool((new.get("spec") or {}).get("unschedulable"))
            if old is None or was != now_unschedulable:
                for pod in self.cache.pods_on(name):
                    self.queue.add(key_of(pod))

    def _forget(self, uid: str) -> None:
        if self._runtimes.pop(uid, None) is not None:
            self.backoff.forget_prefix(f"{uid}_")
            self.crash_backoff.reset(uid)

    def start(self) -> None:
        super().start()
        # A kubelet restarted on a node that keeps its content reports the images it finds.
        for node in self.cache.all(NODES):
            if self.puller.store(name_of(node)).records():
                self._images_changed(name_of(node))

    async def close(self) -> None:
        for timer in self._status_timers.values():
            timer.cancel()
        self._status_timers.clear()
        for task in list(self._status_tasks):
            task.cancel()
        await asyncio.gather(*self._status_tasks, return_exceptions=True)
        await self.registry.close()
        if self._owned_root is not None:
            shutil.rmtree(self._owned_root, ignore_errors=True)

    # -- events and node status --------------------------------------------------------------

    def _record(self, pod: Obj, event_type: str, reason: str, message: str, *,
                field_path: str = "") -> None:
        """An event on the pod from this node's kubelet (source: kubelet, host: the node)."""
        if self._recorder_for is None:
            return
        node = node_name_of(pod)
        recorder = self._recorders.get(node)
        if recorder is None:
            recorder = self._recorders[node] = self._recorder_for(node)
        recorder.event(pod, event_type, reason, message, field_path=field_path)

    def _register(self, node: str) -> None:
        """A Node created without status (a machine joining, `kubectl create` of a Node):
        its kubelet registers it, setting the well-known labels and posting its status, so
        it becomes Ready and schedulable like any other node."""
        task = asyncio.get_running_loop().create_task(self._post_registration(node))
        self._status_tasks.add(task)
        task.add_done_callback(self._status_tasks.discard)

    async def _post_registration(self, name: str) -> None:
        nodes = self.ctx.resource(NODES)
        try:
            node = self.api.get(nodes, namespace=None, name=name)
            if (node.get("status") or {}).get("conditions"):
                return
            platform = Platform.parse(self.settings.default_platform)
            labels = node_labels(name, os=platform.os, arch=platform.architecture)
            missing = {k: v for k, v in labels.items() if k not in labels_of(node)}
            if missing:
                await self.api.patch(nodes, namespace=None, name=name,
                                     patch={"metadata": {"labels": missing}},
                                     patch_type="application/merge-patch+json")
            index = sum(1 for _ in self.cache.all(NODES)) - 1
            status = node_status(name, index, os=platform.os, arch=platform.architecture)
            await self.api.patch(nodes, namespace=None, name=name, patch={"status": status},
                                 patch_type="application/merge-patch+json",
                                 subresource="status")
        except ApiError as err:
            if err.code != 404:
                log.warning("kubelet %s: registering the node: %s", name, err)

    def _images_changed(self, node: str) -> None:
        """Post the node's images after nodeStatusUpdateFrequency (changes coalesce)."""
        if node in self._status_timers:
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._status_timers.pop(node, None)
            task = loop.create_task(self._post_images(node))
            self._status_tasks.add(task)
            task.add_done_callback(self._status_tasks.discard)

        self._status_timers[node] = loop.call_later(
            self.settings.node_status_update_frequency, fire)

    async def _post_images(self, node: str) -> None:
        # kubelet's setter: largest first, at most nodeStatusMaxImages
        present = sorted(self.puller.store(node).images(), key=lambda image: -image[1])
        images = [{"names": names, "sizeBytes": size}
                  for names, size in present[: self.settings.node_status_max_images]]
        try:
            await self.api.patch(self.ctx.resource(NODES), namespace=None, name=node,
                                 patch={"status": {"images": images}},
                                 patch_type="application/merge-patch+json",
                                 subresource="status")
        except ApiError as err:
            if err.code != 404:
                log.warning("kubelet %s: posting node images: %s", node, err)

    # -- sync --------------------------------------------------------------------------------

    def _node_working(self, node_name: str) -> Obj | None:
        node = self.cache.get(NODES, node_name)
        if node is None or (node.get("spec") or {}).get("unschedulable"):
            return None
        return node

    async def reconcile(self, key: str) -> None:
        pod = self.cache.get(PODS, key)
        if pod is None:
            return
        node_name = node_name_of(pod)
        node = self._node_working(node_name) if node_name else None
        if node is None:
            return
        if is_terminating(pod):
            await self._kill(pod, node)
            return
        if pod_phase(pod) in TERMINAL_PHASES:
            return
        runtime = self._runtime(pod)
        outcomes = await self._ensure_images(pod, node, runtime=runtime)
        # Pulls await the network: act only if the pod is still the one we pulled for.
        current = self.cache.get(PODS, key)
        if (
            current is None
            or uid_of(current) != uid_of(pod)
            or is_terminating(current)
            or self._node_working(node_name) is None
        ):
            self.queue.add(key)
            return
        pod = current
        at = now()
        status, retry_in = self._status(pod, node, runtime=runtime, outcomes=outcomes, at=at)
        await write_status(self.api, self.ctx.resource(PODS), obj=pod, status=status)
        if retry_in is not None:
            self.queue.add_after(key, retry_in)

    def _runtime(self, pod: Obj) -> PodRuntime:
        uid = uid_of(pod)
        runtime = self._runtimes.get(uid)
        if runtime is None:
            runtime = self._runtimes[uid] = PodRuntime(uid=uid)
            status = pod.get("status") or {}
            # A kubelet restarted under running pods: take over what their status says.
            runtime.pod_ip = str(status.get("podIP") or "")
            runtime.start_time = str(status.get("startTime") or "")
            for cs in list(status.get("containerStatuses") or []) + list(
                status.get("initContainerStatuses") or []
            ):
                state = cs.get("state") or {}
                ran = state.get("running") or state.get("terminated")
                if ran and cs.get("imageID"):
                    spec_image = _spec_image(pod, str(cs.get("name")))
                    runtime.images[str(cs.get("name"))] = (
                        spec_image,
                        str(cs.get("image")),
                        str(cs.get("imageID")),
                    )
                    if state.get("running"):
                        runtime.started_at = str(ran.get("startedAt") or "")
                    runtime.restarts = max(runtime.restarts, int(cs.get("restartCount") or 0))
        return runtime

    async def _ensure_images(self, pod: Obj, node: Obj, *, runtime: PodRuntime) -> list[Outcome]:
        spec = pod.get("spec") or {}
        outcomes: list[Outcome] = []
        credentials: list[Credential] | None = None
        for container in list(spec.get("initContainers") or []) + list(
            spec.get("containers") or []
        ):
            name = str(container.get("name"))
            image = str(container.get("image") or "")
            known = runtime.images.get(name)
            if known is not None and known[0] == image:
                outcomes.append(Outcome(name, image, True, known[1], known[2]))
                continue
            if credentials is None and self._needs_pull(container, node_name_of(pod)):
                credentials = self._credentials(pod)
            outcome = await self._ensure_image(
                pod, node, container=container, credentials=credentials or []
            )
            if outcome.ok:
                runtime.images[name] = (image, outcome.image, outcome.image_id)
            outcomes.append(outcome)
        return outcomes

    def _needs_pull(self, container: Obj, node_name: str) -> bool:
        try:
            ref = parse_reference(str(container.get("image") or ""))
        except InvalidReferenceError:
            return False
        policy = container.get("imagePullPolicy") or default_pull_policy(ref)
        present = self.puller.present(node_name, ref) is not None
        return policy == "Always" or (policy == "IfNotPresent" and not present)

    def _credentials(self, pod: Obj) -> list[Credential]:
        secrets = self.api.resource("v1", "Secret")
        out: list[Credential] = []
        for entry in (pod.get("spec") or {}).get("imagePullSecrets") or []:
            name = entry.get("name")
            if not name:
                continue
            try:
                secret = self.api.get(secrets, namespace=namespace_of(pod), name=str(name))
            except ApiError as err:
                if err.code == 404:
                    # The kubelet goes on without a missing pull secret (and warns).
                    log.info("pod %s: imagePullSecret %s not found", key_of(pod), name)
                    continue
                raise
            out.extend(credentials_from_secret(secret))
        return out

    async def _ensure_image(
        self, pod: Obj, node: Obj, *, container: Obj, credentials: list[Credential]
    ) -> Outcome:
        """kuberuntime's EnsureImageExists for one container, with its events."""
        name = str(container.get("name"))
        image = str(container.get("image") or "")
        field_path = _field_path(pod, name)

        def record(event_type: str, reason: str, message: str) -> None:
            self._record(pod, event_type, reason, message, field_path=field_path)

        try:
            ref = parse_reference(image)
        except InvalidReferenceError as err:
            message = (f'Failed to apply default image tag "{image}": couldn\'t parse image '
                       f'name "{image}": {err}')
            record("Warning", "InspectFailed", message)
            record("Warning", "Failed", "Error: InvalidImageName")
            return Outcome(name, image, False, reason="InvalidImageName", message=message)
        node_name = name_of(node)
        policy = container.get("imagePullPolicy") or default_pull_policy(ref)
        present = self.puller.present(node_name, ref)
        if present is not None and policy != "Always":
            record("Normal", "Pulled", f'Container image "{image}" already present on machine')
            return Outcome(name, image, True, str(ref), ref.with_digest(present.digest))
        if policy == "Never":
            message = f'Container image "{image}" is not present with pull policy of Never'
            record("Warning", "ErrImageNeverPull", message)
            record("Warning", "Failed", "Error: ErrImageNeverPull")
            return Outcome(name, image, False, reason="ErrImageNeverPull", message=message)
        backoff_key = f"{uid_of(pod)}_{image}"
        runtime = self._runtimes[uid_of(pod)]
        if self.backoff.in_backoff(backoff_key):
            record("Normal", "BackOff", f'Back-off pulling image "{image}"')
            record("Warning", "Failed", "Error: ImagePullBackOff")
            last = runtime.last_errors.get(image, "")
            message = f'Back-off pulling image "{image}"'
            if last:
                message += f": ErrImagePull: {last}"
            # The pod worker syncs a failed pod again after its backOffPeriod (10 s on a
            # node, like the image back-off's start), or sooner if the back-off ends first.
            return Outcome(
                name,
                image,
                False,
                reason="ImagePullBackOff",
                message=message,
                retry_in=min(self.backoff.remaining(backoff_key), self.settings.backoff_initial),
            )
        record("Normal", "Pulling", f'Pulling image "{image}"')
        try:
            pulled = await self.puller.pull(
                node_name,
                ref,
                credentials=matching_credentials(ref, credentials),
                platform=node_platform(node, self.settings.default_platform),
            )
        except PullError as err:
            self.backoff.next(backoff_key)
            message = (
                f"rpc error: code = {err.code} desc = failed to pull and unpack image "
                f'"{ref}": {err.message}'
            )
            runtime.last_errors[image] = message
            record("Warning", "Failed", f'Failed to pull image "{image}": {message}')
            record("Warning", "Failed", "Error: ErrImagePull")
            # The pod worker resyncs a failed pod after backoff_initial; by then the
            # image back-off has usually grown longer, hence ImagePullBackOff.
            return Outcome(
                name,
                image,
                False,
                reason="ErrImagePull",
                message=message,
                retry_in=self.settings.backoff_initial,
            )
        self._images_changed(node_name)
        record(
            "Normal",
            "Pulled",
            f'Successfully pulled image "{image}" in {go_duration(pulled.pull_seconds)} '
            f"({go_duration(pulled.total_seconds)} including waiting). "
            f"Image size: {pulled.size} bytes.",
        )
        runtime.last_errors.pop(image, None)
        return Outcome(name, image, True, str(ref), pulled.repo_digest)

    # -- status ------------------------------------------------------------------------------

    def _allocate_ip(self) -> str:
        while True:
            address = ipaddress.IPv4Address(_POD_IP_BASE + self._ip_counter)
            self._ip_counter += 1
            if self._ip_counter >= (1 << 20):
                self._ip_counter = 1
            last = int(address) & 0xFF
            if last not in (0, 255):
                return str(address)

    def _status(
        self,
        pod: Obj,
        node: Obj,
        *,
        runtime: PodRuntime,
        outcomes: list[Outcome],
        at: dt.datetime,
    ) -> tuple[dict[str, Any], float | None]:
        """The pod status this kubelet reports, and when to sync the pod again."""
        spec = pod.get("spec") or {}
        stamp = rfc3339(at)
        init_names = [str(c.get("name")) for c in spec.get("initContainers") or []]
        sidecars = {
            str(c.get("name"))
            for c in spec.get("initContainers") or []
            if c.get("restartPolicy") == "Always"
        }
        by_name = {o.name: o for o in outcomes}
        init_outcomes = [by_name[n] for n in init_names if n in by_name]
        main_outcomes = [o for o in outcomes if o.name not in set(init_names)]
        retry_in: float | None = None
        for outcome in outcomes:
            if outcome.retry_in is not None:
                retry_in = outcome.retry_in if retry_in is None else min(retry_in, outcome.retry_in)
        if not runtime.start_time:
            runtime.start_time = stamp
        if not runtime.pod_ip and not (spec.get("hostNetwork")):
            runtime.pod_ip = self._allocate_ip()
        host_ip = _node_ip(node)
        pod_ip = host_ip if spec.get("hostNetwork") else runtime.pod_ip

        initialized = all(o.ok for o in init_outcomes)
        all_ok = initialized and all(o.ok for o in main_outcomes)
        annotations = annotations_of(pod)
        phase = "Pending"
        running = False
        waiting_reason: str | None = None
        if all_ok:
            if not runtime.started_at:
                runtime.started_at = stamp
                self._containers_started(pod, [o.name for o in outcomes])
            phase = "Running"
            running = True
            if _run_to_completion(pod) and runtime.finished is None:
                run_for = _float(annotations.get(RUN_SECONDS), self.settings.job_run_seconds)
                exit_code = int(_float(annotations.get(EXIT_CODE), 0))
                loop_now = self._loop_time()
                if runtime.crash_until and loop_now < runtime.crash_until:
                    running = False
                    waiting_reason = "CrashLoopBackOff"
                    remaining = runtime.crash_until - loop_now
                    retry_in = remaining if retry_in is None else min(retry_in, remaining)
                elif runtime.crash_until:
                    runtime.crash_until = 0.0
                    runtime.started_at = stamp
                    self._containers_started(pod, [o.name for o in main_outcomes])
                if running:
                    started = parse_time(runtime.started_at) or at
                    left = (started + dt.timedelta(seconds=run_for) - at).total_seconds()
                    if left > 0:
                        retry_in = left if retry_in is None else min(retry_in, left)
                    elif exit_code != 0 and spec.get("restartPolicy") == "OnFailure":
                        # The container failed and is restarted after the crash back-off.
                        runtime.last_state = {
                            "terminated": {
                                "exitCode": exit_code,
                                "reason": "Error",
                                "startedAt": runtime.started_at,
                                "finishedAt": stamp,
                                "containerID": "",
                            }
                        }
                        runtime.restarts += 1
                        delay = self.crash_backoff.next(runtime.uid)
                        for outcome in main_outcomes:
                            self._record(
                                pod, "Warning", "BackOff",
                                f"Back-off restarting failed container {outcome.name} in pod "
                                f"{name_of(pod)}_{namespace_of(pod)}({uid_of(pod)})",
                                field_path=_field_path(pod, outcome.name))
                        runtime.crash_until = self._loop_time() + delay
                        running = False
                        waiting_reason = "CrashLoopBackOff"
                        retry_in = delay if retry_in is None else min(retry_in, delay)
                    else:
                        runtime.finished = (stamp, exit_code)
            if runtime.finished is not None:
                phase = "Succeeded" if runtime.finished[1] == 0 else "Failed"
                running = False

        containers = [
            self._container_status(
                o, runtime, running=running, waiting_reason=waiting_reason, init=False
            )
            for o in main_outcomes
        ]
        init_statuses: list[dict[str, Any]] = []
        blocked = False
        for outcome in init_outcomes:
            if blocked:
                init_statuses.append(_waiting(outcome, "PodInitializing", message=""))
                continue
            if not outcome.ok:
                blocked = True
            init_statuses.append(
                self._init_status(outcome, runtime, sidecar=outcome.name in sidecars)
            )
        if not initialized:
            containers = [_waiting(o, "PodInitializing", message="") for o in main_outcomes]

        terminal = phase in TERMINAL_PHASES
        not_ready = [c["name"] for c in containers if not c.get("ready")]
        conditions = list((pod.get("status") or {}).get("conditions") or [])
        wanted: list[tuple[str, str, str | None, str | None]] = [
            ("PodReadyToStartContainers", "False" if terminal else "True", None, None),
        ]
        if terminal:
            wanted += [
                ("Initialized", "True", "PodCompleted", None),
                ("Ready", "False", "PodCompleted", None),
                ("ContainersReady", "False", "PodCompleted", None),
            ]
        else:
            if initialized:
                wanted.append(("Initialized", "True", None, None))
            else:
                pending = [o.name for o in init_outcomes if not o.ok or o.name not in sidecars]
                wanted.append(
                    (
                        "Initialized",
                        "False",
                        "ContainersNotInitialized",
                        f"containers with incomplete status: [{' '.join(pending)}]",
                    )
                )
            if not_ready:
                message = f"containers with unready status: [{' '.join(not_ready)}]"
                wanted += [
                    ("Ready", "False", "ContainersNotReady", message),
                    ("ContainersReady", "False", "ContainersNotReady", message),
                ]
            else:
                wanted += [("Ready", "True", None, None), ("ContainersReady", "True", None, None)]
        wanted.append(("PodScheduled", "True", None, None))
        for kind, state, reason, why in wanted:
            conditions = set_condition(
                conditions,
                kind=kind,
                status=state,
                reason=reason,
                message=why,
                at=stamp,
                probe_time=True,
            )
        conditions.sort(
            key=lambda c: (
                _CONDITION_ORDER.index(c["type"])
                if c.get("type") in _CONDITION_ORDER
                else len(_CONDITION_ORDER)
            )
        )
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": conditions,
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": runtime.start_time,
            "containerStatuses": containers,
            "initContainerStatuses": init_statuses or None,
            "qosClass": (pod.get("status") or {}).get("qosClass") or qos_class(pod),
        }
        if terminal:
            retry_in = None
        return status, retry_in

    def _containers_started(self, pod: Obj, names: list[str]) -> None:
        for name in names:
            path = _field_path(pod, name)
            self._record(pod, "Normal", "Created", f"Created container {name}", field_path=path)
            self._record(pod, "Normal", "Started", f"Started container {name}", field_path=path)

    def _loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    def _container_status(
        self,
        outcome: Outcome,
        runtime: PodRuntime,
        *,
        running: bool,
        waiting_reason: str | None,
        init: bool,
    ) -> dict[str, Any]:
        if not outcome.ok:
            return _waiting(outcome, outcome.reason, message=outcome.message)
        container_id = _container_id(runtime.uid, outcome.name, restarts=runtime.restarts)
        status: dict[str, Any] = {
            "name": outcome.name,
            "image": outcome.image,
            "imageID": outcome.image_id,
            "containerID": container_id,
            "restartCount": runtime.restarts,
            "lastState": runtime.last_state,
        }
        if running:
            status.update(
                ready=True, started=True, state={"running": {"startedAt": runtime.started_at}}
            )
        elif waiting_reason == "CrashLoopBackOff":
            status.update(
                ready=False,
                started=False,
                state={
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off restarting failed container={outcome.name}",
                    }
                },
            )
        elif runtime.finished is not None:
            finished_at, exit_code = runtime.finished
            status.update(
                ready=False,
                started=False,
                state={
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": "Completed" if exit_code == 0 else "Error",
                        "startedAt": runtime.started_at,
                        "finishedAt": finished_at,
                        "containerID": container_id,
                    }
                },
            )
        else:
            status.update(
                ready=False, started=False, state={"waiting": {"reason": "ContainerCreating"}}
            )
        return status

    def _init_status(
        self, outcome: Outcome, runtime: PodRuntime, *, sidecar: bool
    ) -> dict[str, Any]:
        if not outcome.ok:
            return _waiting(outcome, outcome.reason, message=outcome.message)
        container_id = _container_id(runtime.uid, outcome.name, restarts=0)
        status: dict[str, Any] = {
            "name": outcome.name,
            "image": outcome.image,
            "imageID": outcome.image_id,
            "containerID": container_id,
            "restartCount": 0,
            "lastState": {},
        }
        stamp = runtime.started_at or runtime.start_time
        if sidecar:
            status.update(ready=True, started=True, state={"running": {"startedAt": stamp}})
        else:
            status.update(
                ready=True,
                started=False,
                state={
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "startedAt": stamp,
                        "finishedAt": stamp,
                        "containerID": container_id,
                    }
                },
            )
        return status

    # -- deletion ----------------------------------------------------------------------------

    async def _kill(self, pod: Obj, node: Obj) -> None:
        """Stop the pod's containers, report it terminal, and finish the deletion."""
        pods = self.ctx.resource(PODS)
        if pod_phase(pod) not in TERMINAL_PHASES:
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                if "running" in (cs.get("state") or {}):
                    name = str(cs.get("name"))
                    self._record(pod, "Normal", "Killing", f"Stopping container {name}",
                                 field_path=_field_path(pod, name))
            stamp = rfc3339(now())
            status = dict(pod.get("status") or {})

            def killed(cs: dict[str, Any]) -> dict[str, Any]:
                state = cs.get("state") or {}
                if "terminated" in state:
                    return cs
                started = (state.get("running") or {}).get("startedAt") or stamp
                return {
                    **cs,
                    "ready": False,
                    "started": False,
                    "state": {
                        "terminated": {
                            "exitCode": KILLED_EXIT_CODE,
                            "reason": "Error",
                            "startedAt": started,
                            "finishedAt": stamp,
                            "containerID": cs.get("containerID", ""),
                        }
                    },
                }

            conditions = list(status.get("conditions") or [])
            for kind in ("Ready", "ContainersReady"):
                if get_condition(pod, kind) is not None:
                    conditions = set_condition(
                        conditions,
                        kind=kind,
                        status="False",
                        reason="PodCompleted",
                        at=stamp,
                        probe_time=True,
                    )
            terminal = {
                "phase": "Failed",
                "conditions": conditions,
                "containerStatuses": [killed(cs) for cs in status.get("containerStatuses") or []],
            }
            try:
                pod = await write_status(self.api, pods, obj=pod, status=terminal)
            except ApiError as err:
                if err.code == 404:
                    return
                if err.code != 409:
                    raise
        await delete_ignoring_missing(self.api, pods, obj=pod, grace_period_seconds=0)


def _waiting(outcome: Outcome, reason: str, *, message: str) -> dict[str, Any]:
    state: dict[str, Any] = {"reason": reason}
    if message:
        state["message"] = message
    return {
        "name": outcome.name,
        "image": outcome.spec_image,
        "imageID": "",
        "ready": False,
        "started": False,
        "restartCount": 0,
        "lastState": {},
        "state": {"waiting": state},
    }


def _spec_image(pod: Obj, name: str) -> str:
    spec = pod.get("spec") or {}
    for container in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
        if container.get("name") == name:
            return str(container.get("image") or "")
    return ""


def _node_ip(node: Obj) -> str:
    for address in (node.get("status") or {}).get("addresses") or []:
        if address.get("type") == "InternalIP":
            return str(address.get("address"))
    return "127.0.0.1"


def _float(value: Any, default: float) -> float:
    if value is None:
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _kubelet_relevant(old: Obj, new: Obj) -> bool:
    """Whether a pod change is one the kubelet acts on (not just a status write)."""
    if old.get("spec") != new.get("spec"):
        return True
    old_meta = old.get("metadata") or {}
    new_meta = new.get("metadata") or {}
    return any(
        old_meta.get(k) != new_meta.get(k)
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "annotations")
    )


def _field_path(pod: Obj, container: str) -> str:
    """The object reference's fieldPath the kubelet gives a container's events."""
    spec = pod.get("spec") or {}
    for kind in ("initContainers", "containers"):
        if any(c.get("name") == container for c in spec.get(kind) or []):
            return f"spec.{kind}{{{container}}}"
    return ""


def go_duration(seconds: float) -> str:
    """Go's time.Duration.String() of a duration truncated to milliseconds (the kubelet's
    Pulled message): 512ms, 1.234s, 2m3.5s."""
    millis = int(seconds * 1000)
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    minutes, rest = divmod(millis, 60_000)
    hours, minutes = divmod(minutes, 60)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    text = f"{secs}s"
    if minutes or hours:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return text
