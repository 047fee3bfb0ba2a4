"""Reading image pull secrets (`kubernetes.io/dockerconfigjson`) for the mirror.

A pod's imagePullSecrets are what the kubelet would have used to pull from
the artifact store, so the mirror uses the same ones. Only the one data key
is read and returned; the secret's content never reaches a log line or an
error message (errors name the secret, not what is in it).
"""

from __future__ import annotations

import base64
import binascii

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from clusterregistry.errors import NotFoundError, PermanentError, RetryableError

DOCKER_CONFIG_JSON_TYPE = "kubernetes.io/dockerconfigjson"
DOCKER_CONFIG_JSON_KEY = ".dockerconfigjson"
DOCKER_CFG_TYPE = "kubernetes.io/dockercfg"
DOCKER_CFG_KEY = ".dockercfg"


async def docker_config(api: client.ApiClient, namespace: str, name: str) -> bytes:
    """The docker config JSON held by a pull secret (either secret type kubelet accepts).

    NotFoundError when the secret does not exist, PermanentError when it is not a
    docker config secret, RetryableError when the API server cannot answer now.
    """
    where = f"secret {namespace}/{name}"
    try:
        secret = await client.CoreV1Api(api).read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise NotFoundError(f"{where} does not exist") from None
        if exc.status == 403:
            raise PermanentError(f"{where}: the mirror may not read it (RBAC)") from None
        raise RetryableError(f"{where}: API server answered {exc.status}") from None
    except (OSError, TimeoutError) as exc:
        raise RetryableError(f"{where}: API server unreachable ({type(exc).__name__})") from exc
    data = secret.data or {}
    key = {DOCKER_CONFIG_JSON_TYPE: DOCKER_CONFIG_JSON_KEY, DOCKER_CFG_TYPE: DOCKER_CFG_KEY}.get(
        secret.type or "")
    if key is None or key not in data:
        raise PermanentError(
            f"{where} is of type {secret.type!r}, not {DOCKER_CONFIG_JSON_TYPE} with "
            f"{DOCKER_CONFIG_JSON_KEY}")
    try:
        return base64.b64decode(data[key], validate=True)
    except (binascii.Error, ValueError):
        raise PermanentError(f"{where}: {key} is not base64") from None
