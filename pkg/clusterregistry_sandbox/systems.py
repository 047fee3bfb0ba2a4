"""The whole system on one machine: every process of a cluster, on 127.0.0.1, under one directory.

A newcomer's `make demo` and the end-to-end tests need what a cluster runs,
for real: NATS with JetStream, a remote "artifact store" registry (TLS and
basic auth) holding a network function's images, the edge registry, an API
server with controllers, a scheduler and three kubelets that really pull
(kubesim), and every clusterregistry process started through its `cmd/`
entry point with a settings file and environment, as a Deployment would.

Every process is one row of a table (`SERVICES` for the clusterregistry
processes, the backing services beside them), started in dependency order,
each with its own log under `<root>/logs/`, a free port, and a health probe.
A service whose `cmd/<entry>.py` does not exist yet is listed as "absent"
and skipped: the sandbox runs what has landed, and the steps that need the
rest fail and say so.

The directory holds everything (`state.json` describes what runs, with each
process id and its start time, so a later `sandbox down`, or an `up` after a
crash, stops exactly what this sandbox started and nothing else).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import ssl
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import yaml
from prometheus_client.parser import text_string_to_metric_families

from clusterregistry import config
from clusterregistry.bus.connecting import connect
from clusterregistry.bus.fencing import Fence
from clusterregistry.gc.readonly import follow
from clusterregistry_sandbox.apiclients import ApiClient, ApiError
from clusterregistry_sandbox.faults import FaultProxy, Faults
from clusterregistry_sandbox.natsservers import NatsCluster, NatsServer
from clusterregistry_sandbox.registries import Registry
from clusterregistry_sandbox.samples import PushedSample, fill
from clusterregistry_sandbox.supervising import (
    DEFAULT_GRACE,
    Process,
    ProcessError,
    free_port,
    free_ports,
    wait_for,
)
from kubesim.certificates import CertificateAuthority

__all__ = [
    "CHECKOUT_ENV",
    "SERVICES",
    "CheckoutNotFoundError",
    "ComponentState",
    "ServiceSpec",
    "System",
    "SystemOptions",
    "cleanup_leftovers",
    "cmd_dir",
    "probe",
    "read_state",
]

STATE_FILE = "state.json"
NAMESPACE = "clusterregistry"
WEBHOOK_CONFIGURATION = "clusterregistry-webhook"
ARTIFACT_STORE_USER = "publisher"
_PROBE_TIMEOUT = aiohttp.ClientTimeout(total=5)
_START_TIMEOUT = 90.0


CHECKOUT_ENV = "CLUSTERREGISTRY_CHECKOUT"
# what a directory holds to be a clusterregistry checkout the sandbox can run from
_CHECKOUT_MARKERS = ("pyproject.toml", "cmd", "deploy/kustomize/base")


def _is_checkout(path: Path) -> bool:
    return all((path / marker).exists() for marker in _CHECKOUT_MARKERS)


def repo_dir() -> Path:
    """The clusterregistry checkout the sandbox runs: its `cmd/` and `deploy/`.

    The sandbox starts every service as its Deployment does, from `cmd/<entry>.py`, and
    installs the Artifact CRD from `deploy/kustomize/base`; neither ships in a
    distribution, so the sandbox needs a checkout: $CLUSTERREGISTRY_CHECKOUT, else the
    nearest directory above this package (an editable install) or above the working
    directory that holds pyproject.toml, cmd/ and deploy/kustomize/base.
    """
    override = os.environ.get(CHECKOUT_ENV)
    if override:
        path = Path(override).resolve()
        if not _is_checkout(path):
            raise CheckoutNotFoundError(
                f"${CHECKOUT_ENV}={override} is not a clusterregistry checkout "
                f"(it needs {', '.join(_CHECKOUT_MARKERS)})")
        return path
    for start in (Path(__file__).resolve().parent, Path.cwd().resolve()):
        for path in (start, *start.parents):
            if _is_checkout(path):
                return path
    raise CheckoutNotFoundError(
        "the sandbox runs the services from a clusterregistry checkout (its cmd/ and "
        f"deploy/kustomize/base); none above {Path(__file__).parent} or the working "
        f"directory: run it from a checkout or set ${CHECKOUT_ENV}")


def cmd_dir() -> Path:
    """Where the `cmd/<name>.py` entry points are: $CLUSTERREGISTRY_CMD_DIR, else the checkout's."""
    override = os.environ.get("CLUSTERREGISTRY_CMD_DIR")
    if override:
        return Path(override)
    return repo_dir() / "cmd"


class CheckoutNotFoundError(RuntimeError):
    """No clusterregistry checkout to run the services from (see `repo_dir`)."""


@dataclass(frozen=True)
class ServiceSpec:
    """One clusterregistry process as a Deployment's container runs it.

    `settings` are this process's own keys (wire names) on top of the shared
    settings file, as a per-Deployment ConfigMap patch would set them; keys
    the settings schema does not know (yet) are left out rather than
    rejected, so the table can run ahead of a service's config struct.
    """

    name: str
    entry: str
    job: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    # the webhook serves HTTPS on its own port besides the probe port
    https: bool = False
    # a second replica that runs only with `SystemOptions.ha_replicas` (the soak's HA run)
    ha_only: bool = False

    @property
    def path(self) -> Path:
        return cmd_dir() / f"{self.entry}.py"

    @property
    def landed(self) -> bool:
        return self.path.is_file()


# The clusterregistry processes, in start order (each depends only on those before it and
# on the backing services). Two mirror workers compete on the work queue, as in a cluster.
# The registry fronts come first: every pull goes through them. The second one runs only
# with `SystemOptions.front_replicas` 2 (each replica has its own port and spool).
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("front-1", "front", "the edge registry's one door: hits, misses, read-only"),
    ServiceSpec("front-2", "front", "a second registry front replica"),
    ServiceSpec("relay", "relay", "kube watch events onto JetStream"),
    ServiceSpec("tracker", "tracker", "image references per pod owner"),
    ServiceSpec("reconciler", "reconciler", "one Artifact per source image"),
    ServiceSpec("mirror-1", "mirror", "copies images to the edge registry"),
    ServiceSpec("mirror-2", "mirror", "copies images to the edge registry"),
    ServiceSpec("gc", "gc", "frees what no owner uses"),
    ServiceSpec("webhook", "webhook", "rewrites pod images", https=True),
    # Second replicas, as the ha overlay runs 3 of each: the relay elects a leader by Lease,
    # tracker replicas split the work, reconciler replicas each reconcile every Artifact, GC
    # replicas share run requests by queue group and sweep under one fenced lock. No second
    # webhook: the sandbox has no Service to balance the configuration's one URL over two.
    ServiceSpec("relay-2", "relay", "a second relay replica", ha_only=True),
    ServiceSpec("tracker-2", "tracker", "a second tracker replica", ha_only=True),
    ServiceSpec("reconciler-2", "reconciler", "a second reconciler replica", ha_only=True),
    ServiceSpec("gc-2", "gc", "a second GC replica", ha_only=True),
)


@dataclass
class SystemOptions:
    """What kind of sandbox: sizes, timings and which parts run."""

    nodes: int = 3
    # a 3-node NATS cluster with R3 streams instead of one server
    nats_cluster: bool = False
    # the clusterregistry processes to start (default: every landed one)
    services: Sequence[str] | None = None
    webhook_failure_policy: str = "Ignore"
    early_loading: bool = True
    # kubesim's kubelet image pull back-off: a real kubelet's 10 s doubling to 300 s. The
    # demo and the sandbox keep these; a test that shortens them says why.
    pull_backoff: float = 10.0
    pull_backoff_max: float = 300.0
    kube_history: int = 200_000
    # extra settings (wire names) merged into the shared settings file
    settings: Mapping[str, Any] = field(default_factory=dict)
    fill_samples: bool = True
    # the registry front (issue 15): pods, skopeo and every client use its address
    # (localRegistry); it proxies to the edge registry (registryEndpoint), serves a miss
    # from the source, and refuses writes while GC sweeps. False: the pre-front sandbox,
    # where localRegistry is distribution itself and the sandbox restarts it read-only for
    # GC's sweeps (`System.follow_gc_lock`).
    front: bool = True
    # 1, or 2 (front-1 answers at localRegistry, front-2 on a port of its own; they share
    # one fetch per blob through NATS)
    front_replicas: int = 1
    # a WAN link that drops, lags or is shared (`sandbox up --flaky-link`): a fault proxy
    # between the artifact store and what fetches from it (the mirror workers, the fronts)
    flaky_link: Faults | None = None
    # second replicas of the relay, the tracker, the reconciler and GC (`ServiceSpec.ha_only`)
    ha_replicas: bool = False
    # extra environment per process name (a test's injected fault, e.g. PYTHONPATH)
    service_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass
class ComponentState:
    """One process of the sandbox as `state.json` records it and `status` shows it."""

    name: str
    role: str
    port: int | None = None
    url: str = ""
    health_url: str = ""
    log: str = ""
    pid: int | None = None
    started: float | None = None  # /proc start time, to tell a reused pid apart
    note: str = ""


def _proc_start_time(pid: int) -> float | None:
    """The process's start time in clock ticks since boot (None when it does not exist)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = text.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # exited, not yet reaped: gone for our purposes
        return None
    return float(fields[19])


def alive(pid: int | None, started: float | None) -> bool:
    """The process `pid` exists and is the one that was recorded (not a reused pid)."""
    if pid is None:
        return False
    now = _proc_start_time(pid)
    return now is not None and (started is None or now == started)


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def known_settings(tree: Mapping[str, Any], struct: type[msgspec.Struct] = config.Settings) -> dict[
    str, Any
]:
    """`tree` without the keys the settings schema does not have (yet), recursively."""
    fields = {f.encode_name: f for f in msgspec.structs.fields(struct)}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        found = fields.get(key)
        if found is None:
            continue
        kind = found.type
        if isinstance(kind, type) and issubclass(kind, msgspec.Struct) and isinstance(
            value, Mapping
        ):
            out[key] = known_settings(value, kind)
        else:
            out[key] = value
    return out


async def probe(url: str, *, ca_file: str | None = None, expect: Sequence[int] = (200,)) -> bool:
    """One health probe: GET `url` answers with one of `expect` within 3 s."""
    context: ssl.SSLContext | bool = True
    if url.startswith("https") and ca_file:
        context = ssl.create_default_context(cafile=ca_file)
    try:
        async with (
            aiohttp.ClientSession(
                timeout=_PROBE_TIMEOUT, connector=aiohttp.TCPConnector(ssl=context)
            ) as session,
            session.get(url) as response,
        ):
            return response.status in expect
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


def read_state(root: Path) -> dict[str, Any] | None:
    """The sandbox's `state.json`, or None when there is none (or it is unreadable)."""
    try:
        document: dict[str, Any] = json.loads((root / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return document


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _wait_gone(processes: Sequence[tuple[int, float | None]], *, timeout: float) -> None:
    async def gone() -> bool:
        return not any(alive(pid, started) for pid, started in processes)

    with contextlib.suppress(TimeoutError):
        await wait_for(gone, timeout=timeout, interval=0.1, description="processes gone")


async def cleanup_leftovers(root: Path, *, grace: float = 10.0) -> list[str]:
    """Stop whatever a previous sandbox in `root` left running; return what was stopped.

    Only processes recorded in its state file, and only if each is still the
    process that was recorded (same pid and start time): SIGTERM to the
    supervisor (which stops the rest in order), then SIGTERM to every process
    group still there, SIGKILL after `grace`.
    """
    state = read_state(root)
    if state is None:
        return []
    stopped: list[str] = []
    supervisor = state.get("supervisor") or {}
    pid, started = supervisor.get("pid"), supervisor.get("started")
    if pid is not None and alive(pid, started):
        stopped.append("supervisor")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        await _wait_gone([(pid, started)], timeout=grace * 6)
        if alive(pid, started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    left = [
        (c["name"], c["pid"], c.get("started"))
        for c in state.get("components", [])
        if alive(c.get("pid"), c.get("started"))
    ]
    for _, pid, _ in left:
        _signal_group(pid, signal.SIGTERM)
    await _wait_gone([(p, st) for _, p, st in left], timeout=grace)
    for _, pid, started in left:
        if alive(pid, started):
            _signal_group(pid, signal.SIGKILL)
    return stopped + [name for name, _, _ in left]


class System:
    """The sandbox: start it, use it, break it (kill, stop, restart a part), stop it.

    Everything lives under `root`: `kubeconfig`, `settings.yaml`, `ca.crt`
    (the sandbox CA: artifact store, webhook), `logs/<process>.log`,
    `state.json`, and a state directory per process.
    """

    def __init__(self, root: Path, options: SystemOptions | None = None) -> None:
        self.root = root.resolve()
        self.options = options or SystemOptions()
        self.logs = self.root / "logs"
        self.kubeconfig = self.root / "kubeconfig"
        self.settings_path = self.root / "settings.yaml"
        self.ca_path = self.root / "ca.crt"
        self.ca = CertificateAuthority.create("clusterregistry-sandbox-ca")
        # ports are chosen now, so the settings file can name the servers before they start
        self.nats: NatsServer | None = None
        self.nats_cluster: NatsCluster | None = None
        if self.options.nats_cluster:
            self.nats_cluster = NatsCluster(self.root / "nats", size=3, name="nats")
            for node in self.nats_cluster.nodes:
                node.log_path = self.logs / f"{node.name}.log"
        else:
            self.nats = NatsServer(self.root / "nats", name="nats")
            self.nats.log_path = self.logs / "nats.log"
        self.artifact_store = Registry(
            self.root / "artifact-store", name="artifact-store", ca=self.ca,
            username=ARTIFACT_STORE_USER,
        )
        self.artifact_store.log_path = self.logs / "artifact-store.log"
        # With a flaky link, the store's advertised address (image references, pull secrets,
        # mirror.registries[].host) is the proxy's: the store itself listens on a port only
        # the sandbox's own pushes use, so the mirror and the fronts reach it through the
        # link exactly as they name it, and nothing at the edge can go round it.
        self.flaky_link: FaultProxy | None = None
        if self.options.flaky_link is not None:
            self.flaky_link = FaultProxy("127.0.0.1", self.artifact_store.port,
                                         self.options.flaky_link, port=free_port(),
                                         name="flaky-link")
        self.edge = Registry(self.root / "edge", name="edge-registry")
        self.edge.log_path = self.logs / "edge-registry.log"
        self.kube_port = free_port()
        self.kube: Process | None = None
        self.services: dict[str, Process] = {}
        self.service_ports: dict[str, int] = {}
        self.webhook_port = free_port()
        if self.options.front_replicas not in (1, 2):
            raise ValueError("front_replicas: 1 or 2")
        # the fronts' registry ports, chosen now: localRegistry names the first
        self.front_ports: dict[str, int] = {
            f"front-{n}": port
            for n, port in enumerate(free_ports(self.options.front_replicas), start=1)}
        self.samples: list[PushedSample] = []
        # the edge registry's supervisor: read-only while GC sweeps (gc.readonly)
        self.read_only_windows: list[float] = []
        self._follower: asyncio.Task[None] | None = None
        self._follower_stop = asyncio.Event()
        self.timings: dict[str, float] = {}
        self.started = False
        self.phase = "new"
        self.error = ""
        self._state_extra: dict[str, Any] = {}

    # ----------------------------------------------------------------- layout and state

    @property
    def nats_servers(self) -> list[str]:
        if self.nats_cluster is not None:
            return self.nats_cluster.servers
        return [self.nats.url] if self.nats else []

    @property
    def store_host(self) -> str:
        """The artifact store as the edge names it: in image references, pull secrets and
        `mirror.registries`. The flaky link's address when there is one (the store itself
        is then `artifact_store.host`, which only the publisher's pushes use)."""
        return self.flaky_link.host if self.flaky_link is not None else self.artifact_store.host

    @property
    def front_on(self) -> bool:
        """Whether the registry front runs: pods and clients then pull through it."""
        return any(spec.entry == "front" for spec in self.service_specs())

    def front_host(self, name: str = "front-1") -> str:
        return f"127.0.0.1:{self.front_ports[name]}"

    @property
    def local_registry(self) -> str:
        """What pods' images are rewritten to and every client uses: the (first) front's
        address with the front on, else the edge registry's own."""
        return self.front_host() if self.front_on else self.edge.host

    @property
    def kube_url(self) -> str:
        return f"https://127.0.0.1:{self.kube_port}"

    @property
    def kube_ca(self) -> Path:
        return self.root / "kube" / "ca.crt"

    def node_blobs(self, node: str) -> Path:
        """Where kubesim keeps `node`'s containerd content store blobs (sha256/<hex>)."""
        return self.root / "kube" / "nodes" / node / "content" / "blobs" / "sha256"

    def service_specs(self) -> list[ServiceSpec]:
        """The services this sandbox runs: the chosen ones, or every one that has landed."""
        wanted = self.options.services
        return [
            spec for spec in SERVICES
            if (wanted is None and spec.landed and self._front_wanted(spec))
            or (wanted is not None and spec.name in wanted)
        ]

    def _front_wanted(self, spec: ServiceSpec) -> bool:
        """By default: the fronts the options ask for (none without `front`)."""
        if spec.ha_only:
            return self.options.ha_replicas
        if spec.entry != "front":
            return True
        return self.options.front and spec.name in self.front_ports

    def api(self) -> ApiClient:
        """A client of the sandbox's API server (close it after use)."""
        return ApiClient(self.kubeconfig)

    def settings_tree(self) -> dict[str, Any]:
        """The shared settings file (the ConfigMap), as wire keys."""
        tree: dict[str, Any] = {
            "enableClusterRegistry": True,
            "enableEarlyLoading": self.options.early_loading,
            "localRegistry": self.local_registry,
            "namespace": NAMESPACE,
            "nats": {
                "servers": self.nats_servers,
                "streamReplicas": 3 if self.options.nats_cluster else 1,
            },
            "clusterRegistry": {
                # scheduled GC at midnight only; the demo and tests ask for runs on demand
                "clusterRegistryGCCadence": "0 0 * * *",
                "clusterRegistryGCThreshold": 0,
                "storageSize": "1Gi",
            },
            # fail over quickly: a sandbox's processes are killed on purpose
            "relay": {
                "leaseDurationSeconds": 4.0,
                "renewDeadlineSeconds": 3.0,
                "retryPeriodSeconds": 0.5,
                "missingResourceRetrySeconds": 0.5,
                "watchTimeoutSeconds": 60,
            },
            # redeliver what a killed consumer held within seconds, not the default 30 s
            "tracker": {"ackWaitSeconds": 5.0},
            "reconciler": {
                "retryInitialSeconds": 1.0,
                "retryMaxSeconds": 5.0,
                "mirrorTimeoutSeconds": 20.0,
                "resyncSeconds": 30.0,
                "ackWaitSeconds": 5.0,
            },
            "mirror": {
                # a killed worker's request goes to the other one within seconds
                "ackWaitSeconds": 5.0,
                "retryDelaySeconds": 1.0,
                # the artifact store as an operator configures it: its CA, and credentials
                # from a mounted file (pods' imagePullSecrets take precedence)
                "registries": [{
                    "host": self.store_host,
                    "caFile": str(self.ca_path),
                    "username": ARTIFACT_STORE_USER,
                    "passwordFile": str(self.root / "artifact-store" / "password"),
                }],
            },
            "gc": {
                # the demo deletes a network function and collects it at once
                "gracePeriodSeconds": 1.0,
                "lockTtlSeconds": 10.0,
                "writerWaitSeconds": 30.0,
                # the edge registry runs here: GC sweeps it with `garbage-collect` on its config
                # and deletes manifests through distribution's own API (never the front)
                "sweepMode": "subprocess",
                "registryConfigPath": str(self.edge.config_path),
                "storagePath": str(self.edge.root_dir),
                "usageSource": "blobs",
                "registryUrl": self.edge.url,
                # without the front, the sandbox supervises the edge registry: it restarts it
                # read-only while GC's lock says sweep, and confirms it (`follow_gc_lock`)
                "readOnlyMode": "follower",
                "readOnlyWaitSeconds": 30.0,
            },
        }
        if self.front_on:
            tree = _deep_merge(tree, {
                # pods pull from the front; distribution answers behind it
                "registryEndpoint": self.edge.host,
                # the mirror reads sources through the front (one fetch per blob for it and
                # every kubelet) and writes to distribution directly
                "mirror": {"sourceThroughFront": True},
                # every front refuses writes while GC sweeps: no restart of distribution
                "gc": {"readOnlyMode": "front"},
                "front": {
                    "spoolLimit": "2Gi",
                    # a killed replica's claims are taken over within seconds
                    "claimStaleSeconds": 6.0,
                    # the fronts share distribution's volume (as in the ha overlay): blob
                    # hits go out from disk with sendfile
                    "storagePath": str(self.edge.root_dir),
                },
            })
        return known_settings(_deep_merge(tree, self.options.settings))

    def write_state(self, phase: str | None = None, *, error: str = "") -> None:
        """`state.json`: what runs where (written atomically, read by `status` and `down`).

        `phase` None keeps the current one (a restarted process changes pids, not phases).
        """
        if phase is not None:
            self.phase = phase
        if error:
            self.error = error
        document = {
            "version": 1,
            "phase": self.phase,
            "error": self.error,
            "root": str(self.root),
            "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "kubeconfig": str(self.kubeconfig),
            "ca": str(self.ca_path),
            "kube_ca": str(self.kube_ca),
            "settings": str(self.settings_path),
            "nats_servers": self.nats_servers,
            "local_registry": self.local_registry,
            "artifact_store": {
                "host": self.store_host,
                "username": self.artifact_store.username,
                "password": self.artifact_store.password,
                # where the store itself listens: the same as host unless a flaky link is
                # in between (only the sandbox's own pushes go there)
                "direct_host": self.artifact_store.host,
            },
            "flaky_link": None if self.flaky_link is None else {
                "listen": self.flaky_link.host,
                "store": self.artifact_store.host,
                "faults": self.flaky_link.faults.describe(),
            },
            "samples": [
                {"reference": s.reference, "digest": s.digest, "kind": s.sample.description}
                for s in self.samples
            ],
            "components": [msgspec.to_builtins(c) for c in self.components()],
            "timings": self.timings,
            **self._state_extra,
        }
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(document, indent=2) + "\n")
        tmp.replace(self.root / STATE_FILE)

    def set_supervisor(self, pid: int) -> None:
        self._state_extra["supervisor"] = {"pid": pid, "started": _proc_start_time(pid)}

    def components(self) -> list[ComponentState]:
        """Every process of the sandbox, running or not, with where to reach it."""
        out: list[ComponentState] = []

        def proc_fields(process: Process | None) -> dict[str, Any]:
            pid = process.pid if process is not None and process.running else None
            return {"pid": pid, "started": _proc_start_time(pid) if pid else None}

        if self.nats_cluster is not None:
            for node in self.nats_cluster.nodes:
                out.append(ComponentState(
                    node.name, "nats", node.port, node.url, f"{node.monitor_url}/healthz",
                    str(node.log_path), **proc_fields(node.process)))
        elif self.nats is not None:
            out.append(ComponentState(
                "nats", "nats", self.nats.port, self.nats.url, f"{self.nats.monitor_url}/healthz",
                str(self.nats.log_path), **proc_fields(self.nats.process)))
        for registry, note in (
            (self.artifact_store, "TLS + basic auth, the remote artifact store"),
            (self.edge, "plain HTTP, the edge registry behind the front" if self.front_on
             else "plain HTTP, the edge registry pods pull from"),
        ):
            out.append(ComponentState(
                registry.name, "registry", registry.port, registry.url, f"{registry.url}/v2/",
                str(registry.log_path), note=note, **proc_fields(registry.process)))
        out.append(ComponentState(
            "kubesim", "kube", self.kube_port, self.kube_url, f"{self.kube_url}/readyz",
            str(self.logs / "kubesim.log"), note=f"{self.options.nodes} nodes",
            **proc_fields(self.kube)))
        for spec in SERVICES:
            port = self.service_ports.get(spec.name)
            process = self.services.get(spec.name)
            url = f"https://127.0.0.1:{self.webhook_port}/mutate" if spec.https else ""
            if spec.entry == "front" and spec.name in self.front_ports:
                url = f"http://{self.front_host(spec.name)}"
            if spec.ha_only and spec not in self.service_specs():
                continue  # an HA replica is shown only where it runs
            note = spec.job if spec.landed else f"absent: {spec.path.name} has not landed"
            if spec.landed and spec not in self.service_specs():
                note = "not started in this sandbox"
            out.append(ComponentState(
                spec.name, "service", port, url,
                f"http://127.0.0.1:{port}/readyz" if port else "",
                str(self.logs / f"{spec.name}.log"), note=note, **proc_fields(process)))
        return out

    # ----------------------------------------------------------------- start and stop

    async def start(self) -> None:
        """Start everything, in order; on failure stop what started and raise."""
        if self.started:
            raise ProcessError("the sandbox is already started")
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.ca.write(self.ca_path)
        self.started = True
        self.write_state("starting")
        try:
            await self._timed("backing services", self._start_backing())
            await self._timed("kubesim and samples", self._start_kube_and_samples())
            await self._timed("cluster objects", self._install_cluster_objects())
            await self._timed("clusterregistry processes", self._start_services())
        except BaseException as exc:
            self.write_state("failed", error=str(exc))
            await self.stop()
            raise
        self.write_state("ready")

    async def _timed(self, what: str, step: Any) -> None:
        began = time.monotonic()
        await step
        self.timings[what] = round(time.monotonic() - began, 2)
        self.write_state()

    async def _start_backing(self) -> None:
        if self.nats_cluster is not None:
            starting = self.nats_cluster.start()
        else:
            assert self.nats is not None
            starting = self.nats.start()
        await asyncio.gather(starting, self.artifact_store.start(), self.edge.start())
        if self.flaky_link is not None:
            await self.flaky_link.start()

    def _plain_registries(self) -> list[str]:
        """The plain-HTTP registries kubelets may pull from: the fronts and distribution."""
        return [*(self.front_host(name) for name in self.front_ports), self.edge.host]

    async def _start_kube_and_samples(self) -> None:
        password = self.root / "artifact-store" / "password"
        password.write_text(self.artifact_store.password or "")
        password.chmod(0o600)
        argv = [
            sys.executable, "-m", "kubesim", "serve",
            "--port", str(self.kube_port),
            "--kubeconfig", str(self.kubeconfig),
            "--state-dir", str(self.root / "kube"),
            "--nodes", str(self.options.nodes),
            *(arg for host in self._plain_registries() for arg in ("--insecure-registry", host)),
            "--registry-ca", str(self.ca_path),
            "--pull-backoff", str(self.options.pull_backoff),
            "--pull-backoff-max", str(self.options.pull_backoff_max),
            "--history", str(self.options.kube_history),
            "--log-level", "WARNING",
        ]
        self.kubeconfig.unlink(missing_ok=True)
        self.kube = Process(argv, name="kubesim", log_path=self.logs / "kubesim.log")
        await self.kube.start()
        filling = (
            fill(self.artifact_store, self.root / "images", reference_host=self.store_host)
            if self.options.fill_samples else asyncio.sleep(0, result=[])
        )
        kube = self.kube

        async def kube_ready() -> bool:
            return self.kubeconfig.exists() and await probe(
                f"{self.kube_url}/readyz", ca_file=str(self.kube_ca))

        try:
            self.samples, _ = await asyncio.gather(
                filling, kube.wait_ready(kube_ready, timeout=_START_TIMEOUT))
        except BaseException:
            await kube.stop()
            raise
        self.write_state("starting")

    async def _install_cluster_objects(self) -> None:
        """The clusterregistry namespace and the Artifact CRD, as `kubectl apply` of deploy/."""
        async with self.api() as api:
            await api.apply({"apiVersion": "v1", "kind": "Namespace",
                             "metadata": {"name": NAMESPACE}})
            crd = artifact_crd()
            if crd is not None:
                await api.apply(crd)

                async def established() -> bool:
                    try:
                        await api.list("Artifact")
                    except ApiError:
                        return False
                    return True

                await wait_for(established, timeout=30, description="the Artifact CRD served")
            else:
                self._state_extra["artifact_crd"] = "absent: no Artifact CRD in deploy/"

    def _service_env(self, spec: ServiceSpec, port: int) -> dict[str, str]:
        return {
            "CLUSTERREGISTRY_PROBEPORT": str(port),
            "CLUSTERREGISTRY_PROBEHOST": "127.0.0.1",
            "POD_NAME": spec.name,
            "POD_NAMESPACE": NAMESPACE,
            "KUBECONFIG": str(self.kubeconfig),
            "CLUSTERREGISTRY_LOG_FORMAT": "json",
            # the sandbox CA for the artifact store (Python ssl, and Go tools if any)
            "SSL_CERT_FILE": str(self.ca_path),
            "PYTHONUNBUFFERED": "1",
            **self.options.service_env.get(spec.name, {}),
        }

    def _service_settings(self, spec: ServiceSpec) -> Path:
        """The settings file of one process: the shared tree plus its own keys."""
        path = self.root / "config" / f"{spec.name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        tree = known_settings(_deep_merge(self.settings_tree(), self.service_overrides(spec)))
        path.write_text(yaml.safe_dump(tree, sort_keys=False))
        return path

    def service_overrides(self, spec: ServiceSpec) -> dict[str, Any]:
        """Per-process keys; unknown ones are filtered out by `known_settings`."""
        extra: dict[str, Any] = dict(spec.settings)
        if spec.entry == "webhook":
            tls = self.root / "webhook"
            extra = _deep_merge(extra, {"webhook": {
                "port": self.webhook_port,
                "host": "127.0.0.1",
                "tlsCertFile": str(tls / "tls.crt"),
                "tlsKeyFile": str(tls / "tls.key"),
                "configurationName": WEBHOOK_CONFIGURATION,
            }})
        if spec.entry == "front":
            port = self.front_ports.get(spec.name) or self.front_ports.setdefault(
                spec.name, free_port())
            extra = _deep_merge(extra, {"front": {
                "host": "127.0.0.1",
                "port": port,
                "frontId": spec.name,
                "advertiseUrl": f"http://127.0.0.1:{port}",
                "spoolDir": str(self.root / "front" / spec.name / "spool"),
            }})
        return extra

    def _make_process(self, spec: ServiceSpec) -> Process:
        port = self.service_ports.setdefault(spec.name, free_port())
        settings_file = self._service_settings(spec)
        argv = [
            sys.executable, str(spec.path),
            "--config", str(settings_file),
            "--kubeconfig", str(self.kubeconfig),
            "--identity", spec.name,
        ]
        return Process(argv, name=spec.name, log_path=self.logs / f"{spec.name}.log",
                       env=self._service_env(spec, port), cwd=repo_dir())

    async def _start_services(self) -> None:
        specs = self.service_specs()
        self.settings_path.write_text(yaml.safe_dump(self.settings_tree(), sort_keys=False))
        if any(spec.entry == "webhook" for spec in specs):
            pair = self.ca.issue(common_name="clusterregistry-webhook",
                                 hosts=["127.0.0.1", "localhost",
                                        "clusterregistry-webhook.clusterregistry.svc"])
            pair.write(self.root / "webhook", "tls")
        for spec in specs:
            self.services[spec.name] = self._make_process(spec)
        if any(spec.entry == "gc" for spec in specs) and not self.front_on:
            # without the front, the sandbox makes distribution read-only for GC's sweeps
            self._follower_stop = asyncio.Event()
            self._follower = asyncio.create_task(self.follow_gc_lock(), name="registry-follower")
        await asyncio.gather(*(self.start_service(spec.name) for spec in specs))
        if "webhook" in self.services:
            await self.register_webhook()

    async def follow_gc_lock(self) -> None:
        """Be the edge registry's supervisor: read-only exactly while GC's lock says sweep.

        distribution reads its read-only switch only at start, so this restarts the
        registry; the follower acknowledges the switch in GC's bucket, and GC sweeps only
        after that acknowledgement. A GC that dies leaves a lock that expires, and the
        registry comes back read-write.
        """
        settings = config.load(self.settings_path)
        while not self._follower_stop.is_set():
            try:
                bus = await connect(self.nats_servers, name="sandbox-registry-follower")
            except Exception:  # NATS not reachable yet: the follower keeps trying
                await asyncio.sleep(1.0)
                continue
            try:
                fence = Fence(bus, ttl_seconds=settings.gc.lock_ttl_seconds,
                              holder="edge-registry", replicas=settings.nats.stream_replicas)

                async def switch(read_only: bool) -> None:
                    await self.edge.restart(read_only=read_only)
                    self.write_state()

                await follow(fence, switch, self._follower_stop, name="edge-registry",
                             on_window=self.read_only_windows.append)
            except Exception as exc:  # logged, and the follower starts again
                with (self.logs / "sandbox-follower.log").open("a") as log:
                    log.write(f"{dt.datetime.now(dt.UTC).isoformat()} follower: {exc!r}\n")
                await asyncio.sleep(1.0)
            finally:
                await bus.close()

    async def start_service(self, name: str, *, timeout: float = _START_TIMEOUT) -> None:
        """Start (or restart) one clusterregistry process and wait for its /readyz."""
        spec = next(s for s in SERVICES if s.name == name)
        process = self.services.get(name)
        if process is None:
            process = self.services[name] = self._make_process(spec)
        await process.start()
        port = self.service_ports[name]

        async def ready() -> bool:
            return await probe(f"http://127.0.0.1:{port}/readyz")

        await process.wait_ready(ready, timeout=timeout)
        self.write_state()

    async def register_webhook(self) -> None:
        """The MutatingWebhookConfiguration a cluster install carries, pointed at this webhook."""
        async with self.api() as api:
            await api.apply(self.webhook_configuration())

    def webhook_configuration(self) -> dict[str, Any]:
        settings = config.load(self.settings_path)
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": WEBHOOK_CONFIGURATION},
            "webhooks": [{
                "name": "pods.clusterregistry.io",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": self.options.webhook_failure_policy,
                "reinvocationPolicy": "IfNeeded",
                "timeoutSeconds": 5,
                "clientConfig": {
                    "url": f"https://127.0.0.1:{self.webhook_port}/mutate",
                    "caBundle": base64.b64encode(self.ca.cert_pem).decode(),
                },
                "rules": [
                    {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                     "resources": ["pods"], "scope": "Namespaced"},
                    {"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
                     "resources": ["pods/ephemeralcontainers"], "scope": "Namespaced"},
                ],
                # its own namespace never goes through it (its pods must start without it)
                "namespaceSelector": {"matchExpressions": [{
                    "key": "kubernetes.io/metadata.name", "operator": "NotIn",
                    "values": [NAMESPACE]}]},
                "matchConditions": [{
                    "name": "aosm-match-condition",
                    "expression": settings.webhook.pod.mutation.match_condition_expression,
                }],
            }],
        }

    async def stop(self, *, grace: float = DEFAULT_GRACE) -> None:
        """Stop everything this sandbox started, services first. Safe to call twice."""
        if not self.started:
            return
        self.write_state("stopping")
        await asyncio.gather(
            *(p.stop(grace=grace) for p in self.services.values()), return_exceptions=True)
        if self._follower is not None:
            self._follower_stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._follower, 30)
            self._follower = None
        if self.kube is not None:
            await self.kube.stop(grace=grace)
        if self.flaky_link is not None:
            await self.flaky_link.stop()
        stops = [self.artifact_store.stop(grace=grace), self.edge.stop(grace=grace)]
        if self.nats_cluster is not None:
            stops.append(self.nats_cluster.stop(grace=grace))
        if self.nats is not None:
            stops.append(self.nats.stop(grace=grace))
        await asyncio.gather(*stops, return_exceptions=True)
        self.started = False
        self.write_state("stopped")

    # ----------------------------------------------------------------- faults

    async def kill(self, name: str) -> None:
        """kill -9 one clusterregistry process (its group)."""
        await self.services[name].kill()
        self.write_state()

    async def stop_service(self, name: str, *, grace: float = DEFAULT_GRACE) -> None:
        await self.services[name].stop(grace=grace)
        self.write_state()

    # ----------------------------------------------------------------- the fronts

    async def front_counts(self) -> dict[str, float]:
        """Every running front's requests by result (hit, miss_streamed, joined, ...) and
        its fetches from sources (`source_fetches`), summed, from their /metrics."""
        totals: dict[str, float] = {}
        for spec in self.service_specs():
            process = self.services.get(spec.name)
            port = self.service_ports.get(spec.name)
            if spec.entry != "front" or process is None or not process.running or not port:
                continue
            try:
                async with (
                    aiohttp.ClientSession(timeout=_PROBE_TIMEOUT) as session,
                    session.get(f"http://127.0.0.1:{port}/metrics") as response,
                ):
                    text = await response.text()
            except (aiohttp.ClientError, TimeoutError, OSError):
                continue
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "clusterregistry_front_requests_total":
                        key = sample.labels["result"]
                    elif (sample.name == "clusterregistry_front_source_fetches_total"
                          and sample.labels.get("outcome") == "fetched"):
                        key = "source_fetches"
                    else:
                        continue
                    totals[key] = totals.get(key, 0.0) + sample.value
        return totals

    # ----------------------------------------------------------------- status

    async def health(self) -> list[tuple[ComponentState, bool]]:
        """Every component with the outcome of its health probe."""
        return await component_health(self.components(), ca_file=str(self.ca_path),
                                      kube_ca=str(self.kube_ca))

    def clean(self) -> None:
        """Remove the directory (the sandbox must be stopped)."""
        shutil.rmtree(self.root, ignore_errors=True)


async def component_health(
    components: Sequence[ComponentState], *, ca_file: str, kube_ca: str
) -> list[tuple[ComponentState, bool]]:
    async def once(component: ComponentState) -> bool:
        if component.role == "registry":
            return await probe(component.health_url, ca_file=ca_file, expect=(200, 401))
        if component.role == "kube":
            return await probe(component.health_url, ca_file=kube_ca)
        return await probe(component.health_url)

    async def one(component: ComponentState) -> bool:
        if not component.health_url or component.pid is None:
            return False
        if not alive(component.pid, component.started):
            return False
        # a loaded 2-core machine can miss one probe's deadline: ask twice before "unhealthy"
        return await once(component) or await once(component)

    results = await asyncio.gather(*(one(c) for c in components))
    return list(zip(components, results, strict=True))


def artifact_crd() -> dict[str, Any] | None:
    """The Artifact CRD as deploy/ ships it (None until it exists there)."""
    base = repo_dir() / "deploy" / "kustomize" / "base"
    if not base.is_dir():
        return None
    for path in sorted(base.rglob("*.yaml")):
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError):
            continue
        for document in documents:
            if (
                isinstance(document, dict)
                and document.get("kind") == "CustomResourceDefinition"
                and (document.get("metadata") or {}).get("name") == "artifacts.clusterregistry.io"
            ):
                return document
    return None
