"""The webhook as the ha overlay deploys it: its MutatingWebhookConfiguration applied to kubesim
with kubectl, and `cmd/webhook.py` started with the overlay's own settings file (self-signed
mode: it makes its CA and patches the configuration's caBundle). kubesim then calls it through
the configuration's Service reference, verifying the certificate for
`clusterregistry-webhook.clusterregistry.svc`, as kube-apiserver does.

Only what a cluster provides differently is overridden, through the environment as a pod's
spec could: the listen address (127.0.0.1 and free ports) and the kubeconfig.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from clusterregistry_sandbox.supervising import Process, free_port
from kubesim.running import Cluster, ClusterSettings
from tests.world.kube import Kubectl

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
HA = ROOT / "deploy" / "kustomize" / "overlays" / "ha"
NAMESPACE = "clusterregistry"
WEBHOOK_PORT = free_port()
IMAGE = "docker.io/library/nginx:1.25"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """kubesim (API only), with the webhook Service's port 443 reaching the webhook process."""
    settings = ClusterSettings(controllers=False, service_endpoints={
        (NAMESPACE, "clusterregistry-webhook", 443): f"https://127.0.0.1:{WEBHOOK_PORT}"})
    instance = Cluster(tmp_path / "kubesim", settings)
    try:
        await instance.start()
        yield instance
    finally:
        await instance.stop()


def pod(name: str, namespace: str, labels: dict[str, str] | None = None) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"containers": [{"name": "app", "image": IMAGE}]},
    })


async def test_pods_are_rewritten_by_the_deployed_webhook(
    cluster: Cluster, tmp_path: Path
) -> None:
    kubectl = Kubectl(cluster.kubeconfig)
    objects = [d for d in yaml.safe_load_all((await kubectl.run("kustomize", str(HA))).stdout)
               if d]
    wanted = [o for o in objects
              if o["kind"] in ("Namespace", "MutatingWebhookConfiguration")]
    await kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump_all(wanted))
    (settings,) = [o for o in objects if o["kind"] == "ConfigMap"
                   and o["metadata"]["name"].startswith("clusterregistry-settings")]
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text(settings["data"]["settings.yaml"])
    local_registry = yaml.safe_load(settings_file.read_text())["localRegistry"]

    probe_port = free_port()
    webhook = Process(
        [sys.executable, str(ROOT / "cmd" / "webhook.py"), "--config", str(settings_file),
         "--kubeconfig", str(cluster.kubeconfig), "--identity", "webhook-0"],
        name="webhook", log_path=tmp_path / "webhook.log", cwd=ROOT,
        env={"CLUSTERREGISTRY_WEBHOOK_HOST": "127.0.0.1",
             "CLUSTERREGISTRY_WEBHOOK_PORT": str(WEBHOOK_PORT),
             "CLUSTERREGISTRY_PROBEPORT": str(probe_port),
             "CLUSTERREGISTRY_PROBEHOST": "127.0.0.1"})
    await webhook.start()
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                url = f"http://127.0.0.1:{probe_port}/readyz"
                async with session.get(url) as response:
                    return response.status == 200

            # ready only once its CA is in the caBundle (its one API call)
            await webhook.wait_ready(ready, timeout=60)
        mwc = (await kubectl.run("get", "mutatingwebhookconfiguration",
                                 "clusterregistry-webhook", "-o", "json")).json()
        bundle = base64.b64decode(mwc["webhooks"][0]["clientConfig"]["caBundle"])
        assert b"BEGIN CERTIFICATE" in bundle

        await kubectl.run("create", "namespace", "nf")
        cases: list[tuple[str, str, dict[str, str], bool]] = [
            ("app", "nf", {}, True),
            # AOSM's matchConditionExpression: kube-system only with these labels
            ("plain", "kube-system", {}, False),
            ("descheduler", "kube-system", {"app": "descheduler"}, True),
            # the objectSelector's opt-out, and the webhook's own namespace
            ("opted-out", "nf", {"clusterregistry.io/mutate": "false"}, False),
            ("own", NAMESPACE, {}, False),
        ]
        for name, namespace, labels, _ in cases:
            await kubectl.run("create", "-f", "-", stdin=pod(name, namespace, labels))
        for name, namespace, _, rewritten in cases:
            stored: dict[str, Any] = (await kubectl.run(
                "get", "pod", name, "-n", namespace, "-o", "json")).json()
            image = stored["spec"]["containers"][0]["image"]
            annotations = stored["metadata"].get("annotations", {})
            if rewritten:
                assert image == f"{local_registry}/{IMAGE}", (name, image)
                assert IMAGE in annotations["clusterregistry.io/original-images"]
            else:
                assert image == IMAGE, (name, image)
                assert "clusterregistry.io/original-images" not in annotations

        async def admissions() -> dict[str, float]:
            url = f"http://127.0.0.1:{probe_port}/metrics"
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                text = await response.text()
            prefix = 'clusterregistry_webhook_admissions_total{outcome="'
            return {line[len(prefix):].split('"')[0]: float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines() if line.startswith(prefix)}

        # The configuration sent exactly the two pods to rewrite: the others were filtered by
        # the API server (namespaceSelector, objectSelector, matchConditions), not by the
        # webhook's own exclusions, which would count them as "excluded".
        counts = await admissions()
        assert counts["patched"] == 2
        assert sum(counts.values()) == 2, counts
    finally:
        await webhook.stop()
