"""GC's Prometheus metrics, all in one place (names: clusterregistry_gc_*)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_SECONDS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800)


class GcMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.events = Counter(
            "clusterregistry_gc_events_total",
            "Kubernetes Events recorded, by outcome: created, patched (a repeat counted on "
            "the Event already written), rate_limited (client-go's per-object token bucket), "
            "dropped (the recorder's queue was full), failed (the API server refused or did "
            "not answer; never retried, never raised)", ["outcome"], registry=registry)
        self.runs = Counter(
            "clusterregistry_gc_runs_total",
            "GC runs by outcome (finished, skipped, failed) and dry run", ["outcome", "dry_run"],
            registry=registry)
        self.artifacts_deleted = Counter(
            "clusterregistry_gc_artifacts_deleted_total",
            "Artifacts collected (manifests, record and Artifact deleted)", registry=registry)
        self.manifests_deleted = Counter(
            "clusterregistry_gc_manifests_deleted_total",
            "Manifests deleted through the registry API", registry=registry)
        self.kept_on_recheck = Counter(
            "clusterregistry_gc_kept_on_recheck_total",
            "Artifacts marked Deleting and then kept: a reference appeared meanwhile",
            registry=registry)
        self.bytes_freed = Counter(
            "clusterregistry_gc_freed_bytes_total", "Storage bytes freed by GC runs",
            registry=registry)
        self.read_only_seconds = Histogram(
            "clusterregistry_gc_read_only_seconds",
            "Length of each sweep's window: registry writes fenced until released (with "
            "fronts: from all fronts refusing writes to the last taking them again)",
            buckets=_SECONDS, registry=registry)
        self.last_read_only_seconds = Gauge(
            "clusterregistry_gc_last_read_only_seconds",
            "The last sweep's read-only window", registry=registry)
        self.run_seconds = Histogram(
            "clusterregistry_gc_run_seconds", "Duration of GC runs that collected",
            buckets=_SECONDS, registry=registry)
        self.used_bytes = Gauge(
            "clusterregistry_gc_storage_used_bytes", "Registry storage in use (last measured)",
            registry=registry)
        self.capacity_bytes = Gauge(
            "clusterregistry_gc_storage_capacity_bytes", "Registry storage capacity",
            registry=registry)
        self.threshold_percent = Gauge(
            "clusterregistry_gc_threshold_percent",
            "clusterRegistryGCThreshold: storage use (percent) above which a run collects",
            registry=registry)
        self.last_success = Gauge(
            "clusterregistry_gc_last_success_timestamp_seconds",
            "When the last GC run finished successfully (UNIX time)", registry=registry)
        self.lock_held = Gauge(
            "clusterregistry_gc_lock_held", "1 while this process holds the GC lock",
            registry=registry)
