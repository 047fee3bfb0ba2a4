"""cmd/webhook.py as a cluster runs it, in self-signed mode: it makes its CA, writes the caBundle
through the API server, becomes ready, rewrites pods kube-apiserver (kubesim) sends over
HTTPS verified by that bundle, and stops cleanly on SIGTERM."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from clusterregistry import kinds
from clusterregistry.webhook.registrations import mutating_webhook_configuration
from clusterregistry_sandbox.supervising import Process, free_port, wait_for
from kubesim.running import Cluster
from tests.integration.webhook.conftest import webhook_settings
from tests.world.kube import Kubectl

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
LOCAL = "edge.local:5000"


async def test_cmd_webhook_self_signed_publishes_its_ca_and_rewrites(
        kube_api: Cluster, tmp_path: Path) -> None:
    kubectl = Kubectl(kube_api.kubeconfig)
    port, probe_port = free_port(), free_port()
    settings = webhook_settings(local_registry=LOCAL, selfSigned=True)
    # registered without a caBundle: the webhook writes it
    configuration = mutating_webhook_configuration(
        settings, url=f"https://127.0.0.1:{port}/mutate", failure_policy="Fail")
    await kubectl.run("create", "-f", "-", stdin=json.dumps(configuration))
    env = {**os.environ,
           "CLUSTERREGISTRY_ENABLECLUSTERREGISTRY": "true",
           "CLUSTERREGISTRY_WEBHOOK_SELFSIGNED": "true",
           "CLUSTERREGISTRY_WEBHOOK_HOST": "127.0.0.1",
           "CLUSTERREGISTRY_WEBHOOK_PORT": str(port),
           "CLUSTERREGISTRY_WEBHOOK_EXTRAHOSTS": "127.0.0.1",
           "CLUSTERREGISTRY_PROBEPORT": str(probe_port),
           "CLUSTERREGISTRY_PROBEHOST": "127.0.0.1",
           "CLUSTERREGISTRY_LOCALREGISTRY": LOCAL,
           "CLUSTERREGISTRY_LOG_FORMAT": "json"}
    process = Process([sys.executable, str(ROOT / "cmd" / "webhook.py"),
                       "--kubeconfig", str(kube_api.kubeconfig)],
                      name="webhook", log_path=tmp_path / "webhook.log", env=env)
    await process.start()
    try:
        async with aiohttp.ClientSession() as session:
            async def ready() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{probe_port}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(ready, timeout=60, description="webhook /readyz")
            stored = (await kubectl.run("get", "mutatingwebhookconfiguration",
                                        settings.webhook.configuration_name,
                                        "-o", "json")).json()
            bundle = base64.b64decode(stored["webhooks"][0]["clientConfig"]["caBundle"])
            (ca,) = x509.load_pem_x509_certificates(bundle)
            assert ca.subject.rfc4514_string() == "CN=clusterregistry-webhook-ca"

            pod: dict[str, Any] = {
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "upf"},
                "spec": {"containers": [{"name": "upf", "image": "acr.io/nf/upf:1.2"}]}}
            await kubectl.run("create", "-f", "-", stdin=json.dumps(pod))
            got = (await kubectl.run("get", "pod", "upf", "-o", "json")).json()
            assert got["spec"]["containers"][0]["image"] == f"{LOCAL}/acr.io/nf/upf:1.2"
            assert json.loads(got["metadata"]["annotations"][
                kinds.ORIGINAL_IMAGES_ANNOTATION]) == {"upf": "acr.io/nf/upf:1.2"}
            # a dry run is admitted the same way (sideEffects: None)
            dry = await kubectl.run("create", "--dry-run=server", "-o", "json", "-f", "-",
                                    stdin=json.dumps({**pod, "metadata": {"name": "dry"}}))
            assert dry.json()["spec"]["containers"][0]["image"] == f"{LOCAL}/acr.io/nf/upf:1.2"

            async with session.get(f"http://127.0.0.1:{probe_port}/metrics") as resp:
                text = await resp.text()
            assert 'clusterregistry_webhook_admissions_total{outcome="patched"} 2.0' in text
            assert "clusterregistry_webhook_tls_ready 1.0" in text
        await process.stop(grace=20)
        assert process.returncode == 0
    finally:
        if process.running:
            await process.kill()
