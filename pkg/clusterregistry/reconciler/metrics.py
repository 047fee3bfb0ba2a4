"""The reconciler's Prometheus metrics, all in one place (names: clusterregistry_reconciler_*)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
PHASES = ("Pending", "Mirroring", "Available", "Failed", "Deleting")


class ReconcilerMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.events = Counter(
            "clusterregistry_reconciler_events_total",
            "Kubernetes Events recorded, by outcome: created, patched (a repeat counted on "
            "the Event already written), rate_limited (client-go's per-object token bucket), "
            "dropped (the recorder's queue was full), failed (the API server refused or did "
            "not answer; never retried, never raised)", ["outcome"], registry=registry)
        self.artifacts = Gauge(
            "clusterregistry_reconciler_artifacts",
            "Artifacts by phase, as this reconciler last saw them", ["phase"], registry=registry)
        self.references = Gauge(
            "clusterregistry_reconciler_references",
            "Owner-to-image references (an image used by 3 owners counts 3)", registry=registry)
        self.mirror_requests = Counter(
            "clusterregistry_reconciler_mirror_requests_total",
            "Copies requested, by why: first, retry (after a failure), timeout (no answer), "
            "refresh (a mutable tag)", ["reason"], registry=registry)
        self.retries = Counter(
            "clusterregistry_reconciler_retries_total",
            "Copies requested again after a failure or a timeout", registry=registry)
        self.mirror_results = Counter(
            "clusterregistry_reconciler_mirror_results_total",
            "Mirror results applied, by outcome: ok, failed, stale (another generation, or "
            "an Artifact gone or being deleted)", ["outcome"], registry=registry)
        self.api_writes = Counter(
            "clusterregistry_reconciler_api_writes_total",
            "Writes to the API server, by operation (create, status)", ["operation"],
            registry=registry)
        self.conflicts = Counter(
            "clusterregistry_reconciler_conflicts_total",
            "Writes that lost to a concurrent writer (409, KV revision) and were decided again",
            registry=registry)
        self.errors = Counter(
            "clusterregistry_reconciler_errors_total",
            "Reconciles that failed, by kind (retryable, permanent)", ["kind"],
            registry=registry)
        self.reconcile_seconds = Histogram(
            "clusterregistry_reconciler_reconcile_seconds",
            "Time to reconcile one Artifact (read, decide, write)", buckets=_LATENCY_BUCKETS,
            registry=registry)
        self.queue_depth = Gauge(
            "clusterregistry_reconciler_queue_depth",
            "Artifacts waiting to be reconciled now", registry=registry)

    def set_phases(self, counts: dict[str, int]) -> None:
        for phase in PHASES:
            self.artifacts.labels(phase).set(counts.get(phase, 0))
