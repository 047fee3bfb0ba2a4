"""An API client from a kubeconfig file, or from the pod's service account in a cluster,
and the translation of its failures into the project's errors (for every kube adapter)."""

from __future__ import annotations

import os
from typing import Final

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from clusterregistry.errors import (
    ConfigError,
    ConflictError,
    NotFoundError,
    PermanentError,
    RetryableError,
)

# the client every kube adapter takes: services name it through this module, not the library
ApiClient = client.ApiClient

# what a call to the API server can raise: its answer, or the transport's failure
TRANSPORT_ERRORS: Final = (ApiException, aiohttp.ClientError, OSError, TimeoutError)


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a failed call; None when it never got an answer."""
    return exc.status if isinstance(exc, ApiException) else None


def _reason(exc: ApiException) -> str:
    body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else exc.body
    return f"{exc.status} {exc.reason}: {(body or '')[:300]}"


def translate(exc: BaseException, what: str) -> Exception:
    """The project's error for a failed call (one of TRANSPORT_ERRORS).

    404 NotFoundError, 409 ConflictError, 5xx, 429 and no answer at all RetryableError,
    any other 4xx PermanentError: the request itself is wrong (RBAC, a schema).
    """
    if isinstance(exc, ApiException):
        text = f"{what}: {_reason(exc)}"
        if exc.status == 404:
            return NotFoundError(text)
        if exc.status == 409:
            return ConflictError(text)
        if exc.status == 429 or exc.status >= 500 or exc.status == 0:
            return RetryableError(text)
        return PermanentError(text)
    return RetryableError(f"{what}: {exc}")


async def api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """A kubernetes-asyncio ApiClient: the given kubeconfig, $KUBECONFIG, or in-cluster."""
    configuration = client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG")
    try:
        if path:
            await config.load_kube_config(config_file=path, client_configuration=configuration)
        else:
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration)
    except (config.ConfigException, OSError) as exc:
        raise ConfigError(f"no Kubernetes configuration ({path or 'in-cluster'}): {exc}") from exc
    return client.ApiClient(configuration)
