"""The MutatingWebhookConfiguration that registers the webhook, rendered from the settings.

What kube-apiserver filters before calling the webhook, it filters for free, and
a pod it does not send cannot be delayed by it: so the exclusions the webhook
enforces itself are also rendered here — the operator's matchConditionExpression
as a matchCondition, the opt-out label as an objectSelector, the webhook's own
namespace as a namespaceSelector (on the `kubernetes.io/metadata.name` label
every namespace carries since 1.22).

Rules: pod CREATE, and UPDATE of the `pods/ephemeralcontainers` subresource
(kubectl debug). `sideEffects: None` (dry runs are sent, and get the same
answer); `reinvocationPolicy: IfNeeded`, so an image another webhook sets after
this one ran is still rewritten; `failurePolicy` defaults to Ignore: a webhook
that is down must not stop pods from being created, they then pull from their
source as they would without clusterregistry.
"""

from __future__ import annotations

from typing import Any, Final

from clusterregistry import kinds
from clusterregistry.config import Settings

WEBHOOK_NAME: Final = "pods.clusterregistry.io"
MATCH_CONDITION_NAME: Final = "match-condition-expression"


def mutating_webhook_configuration(
    settings: Settings,
    *,
    url: str | None = None,
    ca_bundle: str | None = None,
    failure_policy: str = "Ignore",
    timeout_seconds: int = 5,
    match_conditions: bool = True,
) -> dict[str, Any]:
    """The configuration as a Kubernetes object (JSON-ready dict).

    `url` points the API server at a URL (outside a cluster); without it, at the Service
    `webhook.serviceName` in `namespace`, port 443, path /mutate. `ca_bundle` is base64 PEM
    (left out in self-signed mode: the webhook writes it). `match_conditions=False` renders
    for clusters older than matchConditions (the webhook still enforces the expression).
    """
    webhook = settings.webhook
    client_config: dict[str, Any]
    if url is not None:
        client_config = {"url": url}
    else:
        client_config = {"service": {"namespace": settings.namespace,
                                     "name": webhook.service_name, "path": "/mutate",
                                     "port": 443}}
    if ca_bundle:
        client_config["caBundle"] = ca_bundle
    hook: dict[str, Any] = {
        "name": WEBHOOK_NAME,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": failure_policy,
        "reinvocationPolicy": "IfNeeded",
        "timeoutSeconds": timeout_seconds,
        "clientConfig": client_config,
        "rules": [
            {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
             "resources": ["pods"], "scope": "Namespaced"},
            {"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
             "resources": ["pods/ephemeralcontainers"], "scope": "Namespaced"},
        ],
        "namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
             "values": [settings.namespace]}]},
        "objectSelector": {"matchExpressions": [
            {"key": kinds.MUTATE_LABEL, "operator": "NotIn", "values": ["false"]}]},
    }
    if match_conditions:
        hook["matchConditions"] = [{
            "name": MATCH_CONDITION_NAME,
            "expression": webhook.pod.mutation.match_condition_expression,
        }]
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": webhook.configuration_name,
                     "labels": {"app.kubernetes.io/name": "clusterregistry"}},
        "webhooks": [hook],
    }
