"""Typed settings: the AOSM-compatible keys, loaded from YAML and the environment.

An operator of AOSM's network-function extension finds the keys they know
(`enableClusterRegistry`, `clusterRegistry.clusterRegistryGCCadence`, ...).
Settings come from a YAML file (the ConfigMap in a cluster) and are then
overridden by environment variables, one per key, named by the key path:
`clusterRegistry.storageSize` is `CLUSTERREGISTRY_CLUSTERREGISTRY_STORAGESIZE`.
Everything is validated when loaded, so a bad cadence or threshold stops a
process at start with a message that names the key, never at 3 a.m.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import msgspec
from croniter import croniter

from clusterregistry.errors import ConfigError

ENV_PREFIX = "CLUSTERREGISTRY_"

# AOSM's documented default (note CEL precedence: && binds tighter than ||): every namespace
# but kube-system, and in kube-system only pods labelled app=commissioning, app=descheduler or
# name=cert-exporter.
DEFAULT_MATCH_CONDITION = (
    '((object.metadata.namespace != "kube-system") ||  '
    '(object.metadata.namespace == "kube-system" && has(object.metadata.labels) && '
    '(has(object.metadata.labels.app) && (object.metadata.labels.app == "commissioning") || '
    '(has(object.metadata.labels.name) && object.metadata.labels.name == "cert-exporter") || '
    '(has(object.metadata.labels.app) && object.metadata.labels.app == "descheduler"))))'
)

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_MULTIPLIERS = {
    None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}


def parse_rate(value: int | str) -> int:
    """Bytes per second from an int or a quantity string (`10Mi`); 0 means unlimited."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} must not be negative")
        return value
    return parse_quantity(value)


def parse_quantity(value: str) -> int:
    """Bytes in a Kubernetes quantity such as `100Gi` or `1.5Ti`."""
    match = _QUANTITY.match(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a Kubernetes quantity like 100Gi")
    number, suffix = match.groups()
    return int(float(number) * _MULTIPLIERS[suffix])


class Toggle(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    enabled: bool = True


Scale = Literal["small", "medium", "large"]
Policy = Literal["Always", "IfAvailable"]
Fallback = Literal["Always", "Never"]
ReadOnlyMode = Literal["none", "follower", "front"]
SweepMode = Literal["subprocess", "job", "none"]
UsageSource = Literal["auto", "statvfs", "blobs"]
# a JetStream stream's replicas: a majority of 1, 3 or 5 servers must hold each message
StreamReplicas = Literal[1, 3, 5]


class RegistryService(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    scale: Scale = "medium"


class ClusterRegistrySettings(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    storage_class_name: str = "nexus-shared"
    storage_size: str = "100Gi"
    cluster_registry_gc_cadence: str = msgspec.field(
        default="0 0 * * *", name="clusterRegistryGCCadence"
    )
    cluster_registry_gc_threshold: float = msgspec.field(
        default=0, name="clusterRegistryGCThreshold"
    )
    high_availability: Toggle = msgspec.field(default_factory=Toggle)
    auto_scaling: Toggle = msgspec.field(default_factory=Toggle)
    registry_service: RegistryService = msgspec.field(default_factory=RegistryService)


class Mutation(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    match_condition_expression: str = DEFAULT_MATCH_CONDITION


class PodWebhook(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    mutation: Mutation = msgspec.field(default_factory=Mutation)


class WebhookSettings(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """AOSM's `webhook.*` keys, then the mutating webhook's own (not AOSM keys)."""

    pod: PodWebhook = msgspec.field(default_factory=PodWebhook)
    high_availability: Toggle = msgspec.field(default_factory=Toggle)
    auto_scaling: Toggle = msgspec.field(default_factory=Toggle)
    # HTTPS listener for AdmissionReviews (POST /mutate)
    host: str = "0.0.0.0"
    port: int = 8443
    # serving certificate and key (cert-manager's Secret, mounted): reloaded when they change
    tls_cert_file: str = "/etc/clusterregistry/webhook/tls.crt"
    tls_key_file: str = "/etc/clusterregistry/webhook/tls.key"
    tls_reload_seconds: float = 10.0
    # selfSigned: make a CA and serving certificate at start (no files) and write the CA into
    # the caBundle of every webhook of the MutatingWebhookConfiguration `configurationName`
    self_signed: bool = False
    configuration_name: str = "clusterregistry-webhook"
    service_name: str = "clusterregistry-webhook"
    # extra subjectAltNames of a self-signed certificate (e.g. 127.0.0.1 outside a cluster)
    extra_hosts: list[str] = msgspec.field(default_factory=list)
    # Always: rewrite at once (the kubelet retries until the mirror has the image).
    # IfAvailable: only images the KV bucket clusterregistry-artifacts says are Available.
    policy: Policy = "Always"
    # IfAvailable while the artifact view is not in sync with NATS: Always or Never rewrite
    unavailable_fallback: Fallback = "Always"
    # source registries rewritten: hosts (globs on host[:port]; empty allow = every registry
    # but the local one) and repositories (globs on the normalised `host/path`)
    allow_hosts: list[str] = msgspec.field(default_factory=list)
    deny_hosts: list[str] = msgspec.field(default_factory=list)
    allow_repositories: list[str] = msgspec.field(default_factory=list)
    deny_repositories: list[str] = msgspec.field(default_factory=list)
    # the matchConditionExpression checked by the webhook too (clusters before matchConditions)
    enforce_match_condition: bool = True
    # AdmissionReview bodies larger than this get HTTP 413
    max_body_bytes: int = 6 * 1024 * 1024


class NatsSettings(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """Where the bus is; not an AOSM key (AOSM's registry is not event-driven)."""

    servers: list[str] = msgspec.field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    stream_replicas: StreamReplicas = 1


class RelaySettings(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """The watch relay; not AOSM keys."""

    # publish batches and the per-kind queue between the watch and the publisher: a full
    # queue stops the relay reading the watch (back-pressure), it never grows without bound
    batch_size: int = 500
    queue_size: int = 2000
    watch_timeout_seconds: int = 300
    # coordination.k8s.io Lease timings (client-go's defaults)
    lease_duration_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_period_seconds: float = 2.0
    # CLUSTERREGISTRY_KUBE: how long events stay, and the Nats-Msg-Id de-duplication window
    stream_max_age_seconds: float = 7 * 24 * 3600.0
    duplicate_window_seconds: float = 600.0
    # a resource type not served yet (the Artifact CRD before it is installed): retry period
    missing_resource_retry_seconds: float = 10.0


class TrackerSettings(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """The tracker (owner -> images); not AOSM keys."""

    # messages one replica fetches and applies at once
    batch_size: int = 256
    # messages out unacknowledged at once across every replica (one shared consumer): at
    # least batchSize, or replicas wait on each other instead of splitting the stream
    max_ack_pending: int = 1024
    # a message not acknowledged within this is redelivered (the tracker died holding it)
    ack_wait_seconds: float = 30.0
    # how long a deleted owner's tombstone guards against its late pod events
    tombstone_seconds: float = 3600.0
    # back-off between attempts at a KV write that failed (NATS away)
    retry_initial_seconds: float = 0.2
    retry_max_seconds: float = 10.0


class ReconcilerSettings(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """The reconciler (Artifacts, mirror requests); not AOSM keys."""

    # Artifacts reconciled per pass, and API writes in flight at once
    batch_size: int = 100
    concurrency: int = 4
    # every Artifact is reconciled again this often even without an event (level-based)
    resync_seconds: float = 300.0
    # a mirror request without a result after this is asked again
    mirror_timeout_seconds: float = 600.0
    # after a failed copy: first retry, ceiling and jitter fraction of the exponential back-off
    retry_initial_seconds: float = 10.0
    retry_max_seconds: float = 900.0
    retry_jitter: float = 0.2
    # mutable tags (no digest) are copied again this often, picking up a moved tag; 0: never
    refresh_interval_seconds: float = 0.0
    # owners listed in an Artifact's status (the count is always exact)
    owners_listed: int = 20
    # an Artifact event or mirror result a dead reconciler held is redelivered after this
    ack_wait_seconds: float = 30.0
    # a running copy's progress (from the mirror) is written to its Artifact's status at
    # most this often (status.progress, PROGRESS in `-o wide`); 0: never written
    progress_interval_seconds: float = 5.0


class RegistryAccess(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """How the mirror reaches one registry (a source artifact store, or the local one)."""

    host: str
    # plain HTTP instead of HTTPS (the in-cluster registry behind a ClusterIP service)
    plain_http: bool = False
    # a PEM bundle of extra CAs to trust; TLS verification is on unless insecureSkipVerify
    ca_file: str = ""
    insecure_skip_verify: bool = False
    # artifact-store credentials (a pod's imagePullSecrets take precedence); the password
    # from a mounted file is preferred over an inline one
    username: str = ""
    password: str = ""
    password_file: str = ""
    # connections to this registry at once, for the whole process (0: maxConnectionsPerRegistry)
    max_connections: int = 0
    # blob bytes per second read from this host by one worker, all its copies together,
    # within mirror.maxBytesPerSecond (a quantity like "10Mi", or an int; 0: no own limit)
    max_bytes_per_second: int | str = 0


class MirrorSettings(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """The mirror workers and `clusterregistry copy`; not AOSM keys."""

    # this worker's name in results and fence entries (default: POD_NAME, else host-pid)
    worker_id: str = ""
    # images copied at once by one worker, and blobs in flight within one copy
    concurrency: int = 2
    blob_concurrency: int = 6
    max_connections_per_registry: int = 8
    # platforms to copy from an index when a request names none (empty: all of them)
    platforms: list[str] = msgspec.field(default_factory=list)
    # blobs above chunkedThreshold are uploaded in PATCH chunks of chunkSize (quantities)
    chunk_size: str = "64Mi"
    chunked_threshold: str = "256Mi"
    # request retries of one registry call (back-off, Retry-After honoured), and whole-blob
    # restarts after an interrupted upload
    retry_attempts: int = 4
    blob_attempts: int = 3
    # blob bytes per second one worker reads from sources, all its copies together: the
    # WAN link is shared with the network functions (a quantity like "10Mi", or an int;
    # 0: unlimited). A registries[] entry may set a lower one for its host.
    max_bytes_per_second: int | str = 0
    # the work queue: a message not acked or extended within ackWait is redelivered;
    # a copy in progress extends it every ackWait/3
    ack_wait_seconds: float = 30.0
    # deliveries of one request before its failure is reported as final
    max_deliveries: int = 5
    # first nak delay after a retryable failure (doubles per delivery, at most 5 minutes)
    retry_delay_seconds: float = 5.0
    # where blobs are in the local registry, shared by workers for mounts (KV TTL)
    blob_ledger_ttl_seconds: float = 24 * 3600.0
    # a mounted `kubernetes.io/dockerconfigjson` file with artifact-store credentials
    docker_config_file: str = ""
    registries: list[RegistryAccess] = msgspec.field(default_factory=list)
    # the local registry is reached over plain HTTP unless listed in `registries`
    local_plain_http: bool = True
    # read sources through the registry front (localRegistry) rather than directly, so
    # that a blob a kubelet and the mirror both want is fetched from the source once
    source_through_front: bool = False
    # every running copy's bytes done / total is published this often (core NATS,
    # clusterregistry.mirror.progress.<artifact>) for the Artifact's status; 0: never
    progress_interval_seconds: float = 2.0


class GcSettings(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """Garbage collection beyond AOSM's cadence and threshold keys."""

    # an image must have been unreferenced this long before it is collected: protects an
    # image a new owner is about to use (a rollout between two ReplicaSets)
    grace_period_seconds: float = 3600.0
    # the registry fence (KV `clusterregistry-gc`): entries expire after this without renewal
    lock_ttl_seconds: float = 30.0
    # how long a sweep waits for mirror writes in flight before giving up until the next run
    writer_wait_seconds: float = 300.0
    # `none`: the fence alone keeps writes out (every writer is a fenced mirror worker);
    # `follower`: also wait until the registry's supervisor confirms it restarted read-only;
    # `front`: wait until every live registry front confirms it refuses writes
    read_only_mode: ReadOnlyMode = "none"
    read_only_wait_seconds: float = 60.0
    # `subprocess`: `registry garbage-collect` on this machine; `job`: a Kubernetes Job that
    # mounts the registry volume; `none`: delete manifests only, never sweep blobs
    sweep_mode: SweepMode = "subprocess"
    sweep_timeout_seconds: float = 1800.0
    registry_binary: str = ""  # default: docker-registry, else registry, on PATH
    registry_config_path: str = "/etc/docker/registry/config.yml"
    # the registry's storage root (filesystem driver rootdirectory): usage is measured here
    storage_path: str = "/var/lib/registry"
    # `statvfs` of the mounted volume, `blobs` (sum of blob sizes against storageSize), or
    # `auto`: statvfs when storagePath is a mount point, else blobs
    usage_source: UsageSource = "auto"
    # the registry API GC deletes manifests through (default: http://<localRegistry>)
    registry_url: str = ""
    # the sweep Job (sweepMode job)
    job_image: str = "registry:2"
    job_volume_claim: str = "clusterregistry-storage"
    job_config_map: str = "clusterregistry-registry-config"


class FrontSettings(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """The registry front: the one door kubelets and clients use (`front/`)."""

    host: str = "0.0.0.0"
    port: int = 5000
    # a replica's name among the fronts (default: the pod name / hostname)
    front_id: str = ""
    # how the other replicas reach this one for a flight it holds (default: http://$POD_IP:port)
    advertise_url: str = ""
    # blobs being fetched from a source land here, for late joiners; bounded
    spool_dir: str = "/var/cache/clusterregistry/front"
    spool_limit: str = "20Gi"
    # a source that sends no byte for this long fails the request with a registry error
    # (containerd gives up on a pull that makes no progress for 5 minutes)
    source_timeout_seconds: float = 30.0
    # how long a tag fetched from a source is trusted before asking the source again
    tag_ttl_seconds: float = 30.0
    # a flight's holder renews its claim every third of this; older claims are taken over
    claim_stale_seconds: float = 15.0
    flights_ttl_seconds: float = 600.0
    # distribution's filesystem storage root, mounted read-only: blob hits are then sent from
    # disk with sendfile instead of streamed through the front; empty: every hit is proxied
    storage_path: str = ""


class Settings(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    enable_cluster_registry: bool = False
    enable_early_loading: bool = False
    enable_local_registry: bool = False
    cluster_registry: ClusterRegistrySettings = msgspec.field(
        default_factory=ClusterRegistrySettings
    )
    webhook: WebhookSettings = msgspec.field(default_factory=WebhookSettings)
    nats: NatsSettings = msgspec.field(default_factory=NatsSettings)
    relay: RelaySettings = msgspec.field(default_factory=RelaySettings)
    tracker: TrackerSettings = msgspec.field(default_factory=TrackerSettings)
    reconciler: ReconcilerSettings = msgspec.field(default_factory=ReconcilerSettings)
    mirror: MirrorSettings = msgspec.field(default_factory=MirrorSettings)
    gc: GcSettings = msgspec.field(default_factory=GcSettings)
    front: FrontSettings = msgspec.field(default_factory=FrontSettings)
    # the namespace clusterregistry runs in (its Leases live there)
    namespace: str = "clusterregistry"
    # /healthz, /readyz and /metrics of every process
    probe_port: int = 8080
    # where they listen: every interface in a pod; 127.0.0.1 in the sandbox and the tests
    probe_host: str = "0.0.0.0"
    # the in-cluster registry that images are rewritten to, host[:port]
    local_registry: str = "clusterregistry.clusterregistry.svc:5000"
    # where distribution itself answers, host[:port], when a registry front holds
    # localRegistry: the front proxies to it, the mirror writes to it. Empty: localRegistry
    registry_endpoint: str = ""

    @property
    def registry(self) -> str:
        """The distribution registry's own address (behind the front, if there is one)."""
        return self.registry_endpoint or self.local_registry

    @property
    def storage_bytes(self) -> int:
        return parse_quantity(self.cluster_registry.storage_size)

    @property
    def gc_enabled(self) -> bool:
        return bool(self.cluster_registry.cluster_registry_gc_cadence.strip())


def _leaf_paths(struct_type: type[msgspec.Struct], prefix: tuple[str, ...] = ()) -> Iterator[
    tuple[tuple[str, ...], type[Any]]
]:
    """Every settable key as its path of wire names, with its Python type."""
    for field in msgspec.structs.fields(struct_type):
        path = (*prefix, field.encode_name)
        if isinstance(field.type, type) and issubclass(field.type, msgspec.Struct):
            yield from _leaf_paths(field.type, path)
        else:
            yield path, field.type


def env_name(path: tuple[str, ...]) -> str:
    return ENV_PREFIX + "_".join(p.upper() for p in path)


def _from_env(raw: str, kind: Any) -> Any:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError(f"{raw!r} is not a boolean")
    if kind in (int, float):
        return kind(raw)
    if kind == list[str]:
        return [part.strip() for part in raw.split(",") if part.strip()]
    return raw


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value


def _strip_aosm_prefix(tree: dict[str, Any]) -> dict[str, Any]:
    """Accept values files written for AOSM: `global.networkfunctionextension.<key>`."""
    nested = tree.get("global", {})
    if isinstance(nested, dict) and isinstance(nested.get("networkfunctionextension"), dict):
        rest = {k: v for k, v in tree.items() if k != "global"}
        return {**nested["networkfunctionextension"], **rest}
    return tree


def load(path: Path | str | None = None, *, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from an optional YAML file, then the environment; validated."""
    tree: dict[str, Any] = {}
    if path is not None:
        # PyYAML only for a file: `clusterregistry copy` without --config starts without it
        import yaml  # noqa: PLC0415

        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read settings file {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"settings file {path} must hold a mapping of keys")
        tree = _strip_aosm_prefix(loaded)
    environ = os.environ if env is None else env
    for key_path, kind in _leaf_paths(Settings):
        name = env_name(key_path)
        if name in environ:
            try:
                _set_path(tree, key_path, _from_env(environ[name], kind))
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from exc
    try:
        settings = msgspec.convert(tree, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(exc, tree)) from exc
    validate(settings)
    return settings


_AT = re.compile(r"^(?P<what>.*) - at `\$\.(?P<path>[^`]*)`$")


def _explain(exc: msgspec.ValidationError, tree: Mapping[str, Any]) -> str:
    """msgspec's error, said with the key's name; for a choice, the value and the choices."""
    match = _AT.match(str(exc))
    if match is None:
        return f"invalid settings: {exc}"
    path = match["path"]
    kind = _key_type(tuple(re.sub(r"\[\d+\]", "", path).split(".")))
    if get_origin(kind) is Literal:
        value: Any = tree
        for part in path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        choices = ", ".join(str(choice) for choice in get_args(kind))
        return f"{path}: {value!r} is not one of {choices}"
    return f"{path}: {match['what']}"


def _key_type(path: tuple[str, ...]) -> Any:
    for key_path, kind in _leaf_paths(Settings):
        if key_path == path:
            return kind
    return None


def validate(settings: Settings) -> None:
    """Reject values that would only fail later, naming the AOSM key."""
    registry = settings.cluster_registry
    cadence = registry.cluster_registry_gc_cadence.strip()
    if cadence and not croniter.is_valid(cadence):
        raise ConfigError(
            f"clusterRegistry.clusterRegistryGCCadence: {cadence!r} is not a cron expression "
            "(five fields, e.g. '0 0 * * *'; empty turns scheduled GC off)"
        )
    threshold = registry.cluster_registry_gc_threshold
    if not 0 <= threshold <= 100:
        raise ConfigError(
            f"clusterRegistry.clusterRegistryGCThreshold: {threshold} is not a percentage "
            "between 0 and 100"
        )
    try:
        size = parse_quantity(registry.storage_size)
    except ValueError as exc:
        raise ConfigError(f"clusterRegistry.storageSize: {exc}") from exc
    if size <= 0:
        raise ConfigError("clusterRegistry.storageSize: must be larger than zero")
    if not settings.webhook.pod.mutation.match_condition_expression.strip():
        raise ConfigError("webhook.pod.mutation.matchConditionExpression: must not be empty")
    _validate_webhook(settings.webhook)
    if settings.enable_early_loading and not settings.enable_cluster_registry:
        raise ConfigError("enableEarlyLoading: needs enableClusterRegistry")
    if not settings.nats.servers:
        raise ConfigError("nats.servers: at least one server URL is needed")
    relay = settings.relay
    if relay.batch_size < 1 or relay.queue_size < relay.batch_size:
        raise ConfigError("relay: 1 <= batchSize <= queueSize is required")
    if not relay.retry_period_seconds < relay.renew_deadline_seconds < (
        relay.lease_duration_seconds
    ):
        raise ConfigError(
            "relay: retryPeriodSeconds < renewDeadlineSeconds < leaseDurationSeconds is required"
        )
    tracker = settings.tracker
    if tracker.batch_size < 1:
        raise ConfigError("tracker.batchSize: must be at least 1")
    if tracker.ack_wait_seconds <= 0 or tracker.tombstone_seconds <= 0:
        raise ConfigError("tracker.ackWaitSeconds and tracker.tombstoneSeconds: must be > 0")
    if tracker.max_ack_pending < tracker.batch_size:
        raise ConfigError("tracker.maxAckPending: must be at least tracker.batchSize")
    if not 0 < tracker.retry_initial_seconds <= tracker.retry_max_seconds:
        raise ConfigError("tracker: 0 < retryInitialSeconds <= retryMaxSeconds is required")
    reconciler = settings.reconciler
    if reconciler.batch_size < 1 or reconciler.concurrency < 1:
        raise ConfigError("reconciler.batchSize and reconciler.concurrency: must be at least 1")
    if reconciler.resync_seconds <= 0 or reconciler.mirror_timeout_seconds <= 0:
        raise ConfigError(
            "reconciler.resyncSeconds and reconciler.mirrorTimeoutSeconds: must be > 0")
    if not 0 < reconciler.retry_initial_seconds <= reconciler.retry_max_seconds:
        raise ConfigError("reconciler: 0 < retryInitialSeconds <= retryMaxSeconds is required")
    if not 0 <= reconciler.retry_jitter < 1:
        raise ConfigError("reconciler.retryJitter: must be in [0, 1)")
    if reconciler.refresh_interval_seconds < 0:
        raise ConfigError("reconciler.refreshIntervalSeconds: must be >= 0 (0: never)")
    if reconciler.ack_wait_seconds < 1:
        raise ConfigError("reconciler.ackWaitSeconds: must be at least 1")
    if reconciler.progress_interval_seconds != 0 and reconciler.progress_interval_seconds < 1:
        raise ConfigError("reconciler.progressIntervalSeconds: 0 (never) or at least 1: each "
                          "is a status write to the API server")
    if not 0 <= reconciler.owners_listed <= 20:
        raise ConfigError("reconciler.ownersListed: must be between 0 and 20 (the CRD's bound)")
    if not settings.local_registry or "/" in settings.local_registry:
        raise ConfigError(
            f"localRegistry: {settings.local_registry!r} must be a registry host[:port]"
        )
    if "/" in settings.registry_endpoint:
        raise ConfigError(
            f"registryEndpoint: {settings.registry_endpoint!r} must be a registry host[:port]")
    _validate_gc(settings.gc)
    _validate_mirror(settings.mirror)
    _validate_front(settings.front)


def _validate_front(front: FrontSettings) -> None:
    if not 0 <= front.port <= 65535:
        raise ConfigError(f"front.port: {front.port} is not a TCP port")
    try:
        if parse_quantity(front.spool_limit) < 1:
            raise ValueError("must be larger than zero")
    except ValueError as exc:
        raise ConfigError(f"front.spoolLimit: {exc}") from exc
    for key, value in (("sourceTimeoutSeconds", front.source_timeout_seconds),
                       ("tagTtlSeconds", front.tag_ttl_seconds),
                       ("claimStaleSeconds", front.claim_stale_seconds),
                       ("flightsTtlSeconds", front.flights_ttl_seconds)):
        if value <= 0:
            raise ConfigError(f"front.{key}: must be larger than zero")
    if front.source_timeout_seconds >= 300:
        raise ConfigError("front.sourceTimeoutSeconds: must stay under containerd's 5 minute "
                          "progress timeout, or a kubelet gives up before the error comes")
    if front.advertise_url and not front.advertise_url.startswith(("http://", "https://")):
        raise ConfigError(f"front.advertiseUrl: {front.advertise_url!r} must be an http(s) URL")


def _validate_gc(gc: GcSettings) -> None:
    if gc.grace_period_seconds < 0:
        raise ConfigError("gc.gracePeriodSeconds: must not be negative")
    if gc.lock_ttl_seconds < 1:
        raise ConfigError("gc.lockTtlSeconds: must be at least 1 second")
    if gc.writer_wait_seconds <= 0 or gc.read_only_wait_seconds <= 0:
        raise ConfigError("gc.writerWaitSeconds and gc.readOnlyWaitSeconds must be positive")
    if gc.sweep_timeout_seconds <= 0:
        raise ConfigError("gc.sweepTimeoutSeconds: must be positive")
    if gc.registry_url and not gc.registry_url.startswith(("http://", "https://")):
        raise ConfigError(f"gc.registryUrl: {gc.registry_url!r} must start with http(s)://")


def _validate_mirror(mirror: MirrorSettings) -> None:
    for key, value in (("concurrency", mirror.concurrency),
                       ("blobConcurrency", mirror.blob_concurrency),
                       ("maxConnectionsPerRegistry", mirror.max_connections_per_registry),
                       ("retryAttempts", mirror.retry_attempts + 1),
                       ("blobAttempts", mirror.blob_attempts),
                       ("maxDeliveries", mirror.max_deliveries)):
        if value < 1:
            raise ConfigError(f"mirror.{key}: must be at least 1 (retryAttempts: 0)")
    for key, quantity in (("chunkSize", mirror.chunk_size),
                          ("chunkedThreshold", mirror.chunked_threshold)):
        try:
            if parse_quantity(quantity) < 1:
                raise ValueError("must be larger than zero")
        except ValueError as exc:
            raise ConfigError(f"mirror.{key}: {exc}") from exc
    rates = [("mirror.maxBytesPerSecond", mirror.max_bytes_per_second)] + [
        (f"mirror.registries[{n}].maxBytesPerSecond", access.max_bytes_per_second)
        for n, access in enumerate(mirror.registries)]
    for key, rate in rates:
        try:
            parse_rate(rate)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from exc
    if mirror.ack_wait_seconds < 1:
        raise ConfigError("mirror.ackWaitSeconds: must be at least 1 second")
    if mirror.progress_interval_seconds != 0 and mirror.progress_interval_seconds < 1:
        raise ConfigError("mirror.progressIntervalSeconds: 0 (never) or at least 1 second, "
                          "so that progress cannot flood NATS")
    if mirror.retry_delay_seconds < 0 or mirror.blob_ledger_ttl_seconds <= 0:
        raise ConfigError("mirror.retryDelaySeconds >= 0 and blobLedgerTtlSeconds > 0 required")
    for platform in mirror.platforms:
        if len(platform.split("/")) not in (2, 3) or not all(platform.split("/")):
            raise ConfigError(f"mirror.platforms: {platform!r} is not os/arch[/variant]")
    seen: set[str] = set()
    for n, access in enumerate(mirror.registries):
        if not access.host or "/" in access.host or access.host in seen:
            raise ConfigError(f"mirror.registries[{n}].host: {access.host!r} must be a unique "
                              "registry host[:port]")
        seen.add(access.host)
        if access.password and access.password_file:
            raise ConfigError(f"mirror.registries[{n}]: set password or passwordFile, not both")
        if (access.password or access.password_file) and not access.username:
            raise ConfigError(f"mirror.registries[{n}].username: needed with a password")
        if access.max_connections < 0:
            raise ConfigError(f"mirror.registries[{n}].maxConnections: must not be negative")


def _validate_webhook(webhook: WebhookSettings) -> None:
    if not 0 <= webhook.port <= 65535:
        raise ConfigError(f"webhook.port: {webhook.port} is not a TCP port")
    if webhook.max_body_bytes < 4096:
        raise ConfigError("webhook.maxBodyBytes: at least 4096 bytes are needed")
    if webhook.tls_reload_seconds <= 0:
        raise ConfigError("webhook.tlsReloadSeconds: must be larger than zero")
    if not webhook.self_signed and not (webhook.tls_cert_file and webhook.tls_key_file):
        raise ConfigError("webhook.tlsCertFile and webhook.tlsKeyFile are needed unless "
                          "webhook.selfSigned is true")
    if webhook.self_signed and not webhook.configuration_name:
        raise ConfigError("webhook.configurationName: needed with webhook.selfSigned")
    for key, globs in (("allowHosts", webhook.allow_hosts), ("denyHosts", webhook.deny_hosts),
                       ("allowRepositories", webhook.allow_repositories),
                       ("denyRepositories", webhook.deny_repositories)):
        if any(not glob.strip() for glob in globs):
            raise ConfigError(f"webhook.{key}: empty patterns are not allowed")
