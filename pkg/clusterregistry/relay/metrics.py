"""The relay's Prometheus metrics, all in one place (names: clusterregistry_relay_*)."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
                    60)


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.received = Counter(
            "clusterregistry_relay_events_received_total",
            "Watch events received from the API server (relisted objects as SYNC)",
            ["kind", "type"], registry=registry)
        self.published = Counter(
            "clusterregistry_relay_events_published_total",
            "Events acknowledged by JetStream as newly stored", ["kind", "type"],
            registry=registry)
        self.duplicates = Counter(
            "clusterregistry_relay_duplicates_total",
            "Publishes JetStream acknowledged as duplicates (Nats-Msg-Id), e.g. after a retry",
            ["kind"], registry=registry)
        self.publish_seconds = Histogram(
            "clusterregistry_relay_publish_seconds",
            "Time from publishing to acknowledgement, once per batch of acks (its oldest)",
            ["kind"],
            buckets=_LATENCY_BUCKETS, registry=registry)
        self.lag_seconds = Histogram(
            "clusterregistry_relay_lag_seconds",
            "Time from receiving a change on the watch to its acknowledged publish",
            ["kind"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.publish_retries = Counter(
            "clusterregistry_relay_publish_retries_total",
            "Batches republished after a failure or a missing acknowledgement", ["kind"],
            registry=registry)
        self.watch_restarts = Counter(
            "clusterregistry_relay_watch_restarts_total",
            "Watches restarted (stream ended, connection lost, server error)", ["kind"],
            registry=registry)
        self.relists = Counter(
            "clusterregistry_relay_relists_total", "Relists started", ["kind"],
            registry=registry)
        self.gone = Counter(
            "clusterregistry_relay_gone_total",
            "410 Gone: the resume point was older than the API server's history", ["kind"],
            registry=registry)
        self.oversized = Counter(
            "clusterregistry_relay_oversized_total",
            "Objects whose message exceeded the NATS max payload (published without state)",
            ["kind"], registry=registry)
        self.queue_depth = Gauge(
            "clusterregistry_relay_queue_depth",
            "Events read from the watch and not yet published", ["kind"], registry=registry)
        self.leader = Gauge(
            "clusterregistry_relay_leader", "1 while this relay holds the Lease",
            registry=registry)


class KindMetrics:
    """One kind's metric children, bound once: `labels()` on every event would cost more
    than decoding the event (a few microseconds each, at tens of thousands per second)."""

    TYPES = ("ADDED", "MODIFIED", "DELETED", "SYNC", "MARKER")

    def __init__(self, metrics: RelayMetrics, kind: str) -> None:
        self.received: dict[str, Any] = {t: metrics.received.labels(kind, t) for t in self.TYPES}
        self.published: dict[str, Any] = {
            t: metrics.published.labels(kind, t) for t in self.TYPES}
        self.duplicates = metrics.duplicates.labels(kind)
        self.publish_seconds = metrics.publish_seconds.labels(kind)
        self.lag_seconds = metrics.lag_seconds.labels(kind)
        self.publish_retries = metrics.publish_retries.labels(kind)
        self.watch_restarts = metrics.watch_restarts.labels(kind)
        self.relists = metrics.relists.labels(kind)
        self.gone = metrics.gone.labels(kind)
        self.oversized = metrics.oversized.labels(kind)
        self.queue_depth = metrics.queue_depth.labels(kind)
