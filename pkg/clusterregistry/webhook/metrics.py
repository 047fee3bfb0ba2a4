"""The webhook's Prometheus metrics, all in one place (names: clusterregistry_webhook_*).

Label values are bounded (outcomes, container kinds, reasons are fixed sets) and
the children used on every admission are bound once: `labels()` per request
would cost as much as the rewrite itself.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

# admission outcomes
PATCHED = "patched"
UNCHANGED = "unchanged"
EXCLUDED = "excluded"
NOT_A_POD = "not-a-pod"
UNREADABLE_POD = "unreadable-pod"
BAD_REQUEST = "bad-request"
ERROR = "error"
OUTCOMES = (PATCHED, UNCHANGED, EXCLUDED, NOT_A_POD, UNREADABLE_POD, BAD_REQUEST, ERROR)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.admissions = Counter(
            "clusterregistry_webhook_admissions_total",
            "AdmissionReviews answered, by outcome", ["outcome"], registry=registry)
        self.rewritten = Counter(
            "clusterregistry_webhook_images_rewritten_total",
            "Images rewritten to the local registry, by container kind", ["kind"],
            registry=registry)
        self.skipped = Counter(
            "clusterregistry_webhook_images_skipped_total",
            "Images left as they are, by reason (pod exclusions count every image of the pod)",
            ["reason"], registry=registry)
        self.fallback = Counter(
            "clusterregistry_webhook_fallback_total",
            "IfAvailable decisions made by the fallback because the artifact view was not in "
            "sync with NATS, by fallback (Always: rewritten, Never: left)", ["fallback"],
            registry=registry)
        self.latency = Histogram(
            "clusterregistry_webhook_admission_seconds",
            "Time from a complete request body to the encoded answer", buckets=_LATENCY_BUCKETS,
            registry=registry)
        self.artifacts_synced = Gauge(
            "clusterregistry_webhook_artifacts_synced",
            "1 while the IfAvailable artifact view is in sync with clusterregistry-artifacts",
            registry=registry)
        self.artifacts_known = Gauge(
            "clusterregistry_webhook_artifacts_known",
            "Artifact records in the webhook's view", registry=registry)
        self.tls_reloads = Counter(
            "clusterregistry_webhook_tls_reloads_total",
            "Serving certificate loads, by result (loaded, failed)", ["result"],
            registry=registry)
        self.tls_ready = Gauge(
            "clusterregistry_webhook_tls_ready",
            "1 once a serving certificate is loaded", registry=registry)
        self.outcome: dict[str, Any] = {o: self.admissions.labels(o) for o in OUTCOMES}
        self.rewritten_by_kind: dict[str, Any] = {
            k: self.rewritten.labels(k)
            for k in ("containers", "initContainers", "ephemeralContainers")}
        self._skipped_children: dict[str, Any] = {}

    def skipped_for(self, reason: str) -> Any:
        child = self._skipped_children.get(reason)
        if child is None:
            child = self._skipped_children[reason] = self.skipped.labels(reason)
        return child
