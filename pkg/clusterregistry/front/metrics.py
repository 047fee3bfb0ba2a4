"""The registry front's Prometheus metrics, all in one place (names: clusterregistry_front_*).

Labels are bounded: kinds and results are fixed sets; no image, repository or
client is ever a label.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

KINDS: Final = ("manifest", "blob", "other")
# hit: the registry had it; miss_streamed: fetched from the source (or a peer's fetch) and
# served; miss_failed: a miss the source could not serve; joined: a client that shared a
# fetch already under way; refused: a write in a read-only window; passed: anything else
# proxied to the registry as it is (pushes, tags lists, the API root, a registry 404)
RESULTS: Final = ("hit", "miss_streamed", "miss_failed", "joined", "refused", "passed")


class FrontMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.requests = Counter(
            "clusterregistry_front_requests_total",
            "Registry API requests answered, by kind (manifest, blob, other) and result (hit, "
            "miss_streamed, miss_failed, joined, refused, passed)", ["kind", "result"],
            registry=registry)
        self.source_bytes = Counter(
            "clusterregistry_front_source_bytes_total",
            "Bytes fetched from source registries (manifests and blobs)", registry=registry)
        self.served_bytes = Counter(
            "clusterregistry_front_served_bytes_total",
            "Body bytes sent to clients, by result (hit, miss_streamed, joined)", ["result"],
            registry=registry)
        self.source_fetches = Counter(
            "clusterregistry_front_source_fetches_total",
            "Fetches from a source, by kind and outcome (fetched, failed, timeout, corrupt)",
            ["kind", "outcome"], registry=registry)
        self.stored_blobs = Counter(
            "clusterregistry_front_stored_blobs_total",
            "Blobs fetched on a miss and pushed into the registry", registry=registry)
        self.spool_bytes = Gauge(
            "clusterregistry_front_spool_bytes",
            "Bytes reserved in the spool for blobs on their way from a source",
            registry=registry)
        self.read_only_refusals = Counter(
            "clusterregistry_front_read_only_refusals_total",
            "Writes refused because GC is sweeping (read-only window)", registry=registry)
        self.read_only = Gauge(
            "clusterregistry_front_read_only",
            "1 while this front refuses writes for a GC sweep", registry=registry)
        self.read_only_seconds = Histogram(
            "clusterregistry_front_read_only_seconds",
            "Length of each read-only window, as this front saw it",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800), registry=registry)
        for kind in KINDS:
            for result in RESULTS:
                self.requests.labels(kind, result)
        for result in ("hit", "miss_streamed", "joined"):
            self.served_bytes.labels(result)

    def answered(self, kind: str, result: str) -> None:
        self.requests.labels(kind, result).inc()

    def source_fetch(self, kind: str, outcome: str) -> None:
        self.source_fetches.labels(kind, outcome).inc()
