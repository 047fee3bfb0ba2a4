"""The one error tree of clusterregistry.

Adapters translate library errors (nats, aiohttp, kubernetes-asyncio) into
these at their boundary with `raise ... from exc` (NATS: `bus.translating`,
Kubernetes: `kube.clients.translate`); whatever is not a library's or the
network's error is a bug and propagates unchanged. Consumers decide what to
do with a message from the class alone: a RetryableError is nak'ed with a
delay and redelivered, a PermanentError is terminated and recorded, because
redelivering it could never succeed.
"""

from __future__ import annotations


class ClusterRegistryError(Exception):
    """Base of every error clusterregistry raises on purpose."""


class ConfigError(ClusterRegistryError):
    """The settings are invalid; the process must not start."""


class RetryableError(ClusterRegistryError):
    """A transient failure: the same work may succeed later (nak with delay)."""

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(ClusterRegistryError):
    """A failure that retrying cannot fix (term the message and record why)."""


class TimedOutError(RetryableError):
    """No answer came in the time allowed (a NATS request, a fetch, a flush): the other side
    is slow, away, or had nothing to say. A pull consumer's fetch that times out is simply
    an empty batch; anywhere else it is retried like any RetryableError."""


class ConflictError(RetryableError):
    """An optimistic-concurrency write lost (HTTP 409, a KV revision mismatch): re-read, retry."""


class NotFoundError(PermanentError):
    """The object to change does not exist (HTTP 404): writing it again cannot succeed."""


class FenceHeldError(RetryableError):
    """The registry fence is held by the other side (GC's lock, or mirror writes in flight)."""


class FenceLostError(RetryableError):
    """A fence entry this process held expired or was taken: the work inside it was aborted."""


# -- registries (the oci adapter) ---------------------------------------------------------------


class RegistryError(RetryableError):
    """A registry failed in a way that may pass: 5xx, 429, a dropped connection, read-only."""


class RegistryRejectedError(PermanentError):
    """A registry refused a request for good (a 4xx other than auth): asking again is futile."""


class ManifestUnknownError(RegistryRejectedError):
    """The registry has no manifest for this tag or digest (404)."""


class BlobUnknownError(RegistryRejectedError):
    """The registry has no such blob (404 BLOB_UNKNOWN)."""


class UnsupportedManifestError(RegistryRejectedError):
    """A manifest clusterregistry does not copy (Docker schema 1, an unknown media type)."""


class AuthenticationError(PermanentError):
    """Credentials missing, refused (401) or not allowed (403). Never carries a secret."""


class InvalidReferenceError(PermanentError, ValueError):
    """Not a valid image reference (`references.parse`); the message says why, in
    distribution's words. Parsing it again cannot succeed."""


class DigestMismatchError(PermanentError):
    """Bytes did not match their digest or size: a corrupt source or a broken proxy."""
