"""An API client from a kubeconfig file, or from the pod's service account in a cluster."""

from __future__ import annotations

import os

from kubernetes_asyncio import client, config

from clusterregistry.errors import ConfigError


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
