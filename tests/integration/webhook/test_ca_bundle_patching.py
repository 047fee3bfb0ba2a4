"""kube.admission against kubesim over HTTPS: the webhook's CA written into every webhook of
its MutatingWebhookConfiguration, never over a change another replica made in between."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from kubernetes_asyncio import client

from clusterregistry.errors import RetryableError
from clusterregistry.kube.admission import patch_ca_bundles
from clusterregistry.kube.clients import api_client
from clusterregistry.webhook.registrations import mutating_webhook_configuration
from kubesim.running import Cluster
from tests.integration.webhook.conftest import webhook_settings
from tests.world.kube import Kubectl

pytestmark = pytest.mark.integration


def _two_webhooks(name: str) -> dict[str, Any]:
    settings = webhook_settings(local_registry="edge.local:5000", selfSigned=True)
    configuration = mutating_webhook_configuration(settings, url="https://127.0.0.1:1/mutate")
    configuration["metadata"]["name"] = name
    second = copy.deepcopy(configuration["webhooks"][0])
    second["name"] = "second.clusterregistry.io"
    second["clientConfig"]["caBundle"] = "b2xk"  # "old"
    configuration["webhooks"].append(second)
    return configuration


def _plus(existing: str | None, pem: bytes) -> str:
    return base64.b64encode(base64.b64decode(existing or "") + pem).decode()


async def _bundles(kubectl: Kubectl, name: str) -> list[str | None]:
    stored = (await kubectl.run("get", "mutatingwebhookconfiguration", name, "-o",
                                "json")).json()
    return [hook["clientConfig"].get("caBundle") for hook in stored["webhooks"]]


async def test_every_webhook_gets_its_new_bundle(kube_api: Cluster) -> None:
    kubectl = Kubectl(kube_api.kubeconfig)
    await kubectl.run("create", "-f", "-", stdin=json.dumps(_two_webhooks("hooks")))
    api = await api_client(str(kube_api.kubeconfig))
    try:
        seen: list[str | None] = []

        def bundle_for(existing: str | None) -> str:
            seen.append(existing)
            return _plus(existing, b"new")

        assert await patch_ca_bundles(api, "hooks", bundle_for) == 2
        assert seen == [None, "b2xk"]  # the second one's "old"
        assert [base64.b64decode(b or "") for b in await _bundles(kubectl, "hooks")] == [
            b"new", b"oldnew"]
    finally:
        await api.close()


async def test_a_missing_configuration_and_a_lost_race_are_retryable(
    kube_api: Cluster, monkeypatch: pytest.MonkeyPatch,
) -> None:
    kubectl = Kubectl(kube_api.kubeconfig)
    api = await api_client(str(kube_api.kubeconfig))
    try:
        # not created yet (the chart may apply it after the webhook's pod starts)
        with pytest.raises(RetryableError, match="does not exist"):
            await patch_ca_bundles(api, "hooks", lambda existing: "bmV3")

        await kubectl.run("create", "-f", "-", stdin=json.dumps(_two_webhooks("hooks")))
        other = _two_webhooks("hooks")["webhooks"][1]["clientConfig"]
        patch = client.AdmissionregistrationV1Api.patch_mutating_webhook_configuration

        async def after_another_replica(self: Any, *args: Any, **kwargs: Any) -> Any:
            # another replica's CA lands between this replica's read and its patch
            await kubectl.run(
                "patch", "mutatingwebhookconfiguration", "hooks", "--type=json", "-p",
                json.dumps([{"op": "replace", "path": "/webhooks/1/clientConfig",
                             "value": {**other, "caBundle": "b3RoZXI="}}]))  # "other"
            return await patch(self, *args, **kwargs)

        monkeypatch.setattr(client.AdmissionregistrationV1Api,
                            "patch_mutating_webhook_configuration", after_another_replica)
        with pytest.raises(RetryableError, match="HTTP 422"):
            await patch_ca_bundles(api, "hooks", lambda existing: "bWluZQ==")  # "mine"
        # the other replica's bundle stands; nothing of this replica's patch was applied
        assert await _bundles(kubectl, "hooks") == [None, "b3RoZXI="]

        # read again (as the webhook's retry does): both CAs end up there
        monkeypatch.setattr(client.AdmissionregistrationV1Api,
                            "patch_mutating_webhook_configuration", patch)
        assert await patch_ca_bundles(api, "hooks", lambda existing: _plus(existing, b"+mine")) == 2
        assert [base64.b64decode(b or "") for b in await _bundles(kubectl, "hooks")] == [
            b"+mine", b"other+mine"]
    finally:
        await api.close()
