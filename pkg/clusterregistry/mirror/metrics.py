"""The mirror's Prometheus metrics, all in one place (names: clusterregistry_mirror_*).

Labels are bounded: outcomes and failure reasons are fixed sets; no image,
registry or user name is ever a label (unbounded, and credentials-adjacent).
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_COPY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class MirrorMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.events = Counter(
            "clusterregistry_mirror_events_total",
            "Kubernetes Events recorded, by outcome: created, patched (a repeat counted on "
            "the Event already written), rate_limited (client-go's per-object token bucket), "
            "dropped (the recorder's queue was full), failed (the API server refused or did "
            "not answer; never retried, never raised)", ["outcome"], registry=registry)
        self.bytes_copied = Counter(
            "clusterregistry_mirror_copied_bytes_total",
            "Blob bytes streamed from a source into the local registry (verified)",
            registry=registry)
        self.blobs = Counter(
            "clusterregistry_mirror_blobs_total",
            "Blobs handled, by how: copied (uploaded), mounted (linked from another "
            "repository) or skipped (already there)", ["how"], registry=registry)
        self.copy_seconds = Histogram(
            "clusterregistry_mirror_copy_seconds",
            "Time to handle one request, by outcome (ok, failed, retry)", ["outcome"],
            buckets=_COPY_BUCKETS, registry=registry)
        self.requests = Counter(
            "clusterregistry_mirror_requests_total",
            "Requests handled, by outcome: ok, failed (final), retry (nak'ed), fenced "
            "(GC holds the registry), invalid", ["outcome"], registry=registry)
        self.failures = Counter(
            "clusterregistry_mirror_failures_total",
            "Copy attempts that failed, by reason (digest_mismatch, authentication, "
            "manifest_unknown, unsupported_manifest, rejected, unavailable, fence_held, "
            "secret, invalid_request, internal)", ["reason"], registry=registry)
        self.in_flight = Gauge(
            "clusterregistry_mirror_copies_in_flight",
            "Copies running now in this worker", registry=registry)
        self.throttled_seconds = Counter(
            "clusterregistry_mirror_throttled_seconds_total",
            "Seconds blob reads waited for the bandwidth limit (mirror.maxBytesPerSecond, "
            "and per source host), all copies of this worker together", registry=registry)
        self.max_bytes_per_second = Gauge(
            "clusterregistry_mirror_max_bytes_per_second",
            "The worker's bandwidth limit for blob reads from sources, bytes per second "
            "(0: unlimited)", registry=registry)
        self.resumed = Counter(
            "clusterregistry_mirror_resumed_total",
            "Interrupted blob transfers taken up again, by what: download (Range from the "
            "byte reached), download_restarted (a source that ignores Range, read again "
            "from byte 0), upload (from the upload session's offset), upload_restarted (a "
            "new upload session)", ["what"], registry=registry)
        # one series per state, never per copy: a label per artifact would grow for ever
        self.in_flight_bytes = Gauge(
            "clusterregistry_mirror_in_flight_bytes",
            "Blob bytes of the copies running now in this worker, by state: done (copied, "
            "mounted or already there) and remaining (of the total their manifests name; a "
            "copy counts once its manifests are read)", ["state"], registry=registry)
        for how in ("copied", "mounted", "skipped"):
            self.blobs.labels(how)
        for what in ("download", "download_restarted", "upload", "upload_restarted"):
            self.resumed.labels(what)
