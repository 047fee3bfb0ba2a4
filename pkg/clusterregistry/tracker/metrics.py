"""The tracker's Prometheus metrics, all in one place (names: clusterregistry_tracker_*)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_BATCH_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class TrackerMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.events = Counter(
            "clusterregistry_tracker_events_total",
            "Relayed events applied, by kind and outcome (write, delete, or why skipped)",
            ["kind", "outcome"], registry=registry)
        self.kv_writes = Counter(
            "clusterregistry_tracker_kv_writes_total",
            "Owner records written or deleted in KV", ["operation"], registry=registry)
        self.conflicts = Counter(
            "clusterregistry_tracker_conflicts_total",
            "KV writes that lost to a concurrent writer and were decided again",
            registry=registry)
        self.retries = Counter(
            "clusterregistry_tracker_retries_total",
            "Attempts repeated after a transient failure (NATS unavailable)",
            registry=registry)
        self.relists = Counter(
            "clusterregistry_tracker_relists_total",
            "Completed relists applied, by kind", ["kind"], registry=registry)
        self.dereferenced = Counter(
            "clusterregistry_tracker_dereferenced_total",
            "Owners a completed relist proved gone (their DELETED event was missed)",
            ["kind"], registry=registry)
        self.relist_waits = Counter(
            "clusterregistry_tracker_relist_waits_total",
            "Relist end markers put back because messages before them were still "
            "unacknowledged (held by another replica, or awaiting redelivery)",
            registry=registry)
        self.invalid = Counter(
            "clusterregistry_tracker_invalid_messages_total",
            "Messages that could not be decoded (terminated, never redelivered)",
            registry=registry)
        self.owners = Gauge(
            "clusterregistry_tracker_owners",
            "Owners with a record (as this tracker last saw them)", registry=registry)
        self.batch_seconds = Histogram(
            "clusterregistry_tracker_batch_seconds",
            "Time to apply one fetched batch of messages", buckets=_BATCH_BUCKETS,
            registry=registry)
