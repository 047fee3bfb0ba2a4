"""The one error tree of clusterregistry.

Adapters translate library errors (nats, aiohttp, kubernetes-asyncio) into
these at their boundary with `raise ... from exc`. Consumers decide what to
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
