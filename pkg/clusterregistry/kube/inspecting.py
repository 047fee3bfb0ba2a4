"""Read-only looks at clusterregistry's own workloads: their readiness, and their metrics.

`clusterregistry status` (and `kubectl clusterregistry status`) runs on an
operator's machine as often as in the cluster, where Service names do not
resolve and pod addresses are not routable. So it asks the API server, which
reaches both: the Deployments' and StatefulSets' ready replicas say what the
kubelets' readiness probes say, and the API server's service proxy
(`/api/v1/namespaces/<ns>/services/<name>:<port>/proxy/metrics`) fetches a
process's /metrics through the Service the deployment already has for
Prometheus. Errors are translated as in every kube adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client

from clusterregistry.kube.clients import TRANSPORT_ERRORS as _TRANSPORT
from clusterregistry.kube.clients import translate as _translate

__all__ = ["Workload", "service_get", "workloads"]

# every workload of the deployment carries it (deploy/kustomize/base)
PART_OF_SELECTOR = "app.kubernetes.io/name=clusterregistry"
_COMPONENT_LABEL = "app.kubernetes.io/component"


@dataclass(frozen=True)
class Workload:
    kind: str
    name: str
    component: str
    replicas: int
    ready: int


def _workload(kind: str, item: Any) -> Workload:
    labels = item.metadata.labels or {}
    replicas = item.spec.replicas if item.spec and item.spec.replicas is not None else 1
    ready = (item.status.ready_replicas if item.status else 0) or 0
    return Workload(kind, item.metadata.name, labels.get(_COMPONENT_LABEL, ""),
                    int(replicas), int(ready))


async def workloads(api: client.ApiClient, namespace: str) -> list[Workload]:
    """clusterregistry's Deployments and StatefulSets in `namespace`, by name."""
    apps = client.AppsV1Api(api)
    try:
        deployments = await apps.list_namespaced_deployment(
            namespace, label_selector=PART_OF_SELECTOR)
        sets = await apps.list_namespaced_stateful_set(
            namespace, label_selector=PART_OF_SELECTOR)
    except _TRANSPORT as exc:
        raise _translate(exc, f"list workloads in {namespace}") from exc
    found = [_workload("Deployment", d) for d in deployments.items or []]
    found += [_workload("StatefulSet", s) for s in sets.items or []]
    return sorted(found, key=lambda w: w.name)


async def service_get(api: client.ApiClient, namespace: str, service: str, path: str) -> str:
    """GET `path` of a Service's port through the API server's proxy (`service` may be
    `name:port`); the body as text."""
    core = client.CoreV1Api(api)
    try:
        body = await core.connect_get_namespaced_service_proxy_with_path(
            service, namespace, path.lstrip("/"))
    except _TRANSPORT as exc:
        raise _translate(exc, f"GET {path} of service {namespace}/{service}") from exc
    return body if isinstance(body, str) else str(body)
