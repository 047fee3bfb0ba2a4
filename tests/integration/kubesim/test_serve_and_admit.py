"""kubesim as a process (`python -m kubesim serve`), and pods made by controllers admitted by a
real HTTPS mutating webhook registered through a MutatingWebhookConfiguration."""

from __future__ import annotations

import base64
import json
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from clusterregistry_sandbox.supervising import Process, free_port, wait_for
from kubesim.certificates import CertificateAuthority
from kubesim.running import Cluster
from tests.world.kube import Kubectl

pytestmark = pytest.mark.integration


async def test_serve_process_writes_a_kubeconfig_kubectl_can_use(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    process = Process(
        [sys.executable, "-m", "kubesim", "serve", "--port", str(free_port()),
         "--kubeconfig", str(kubeconfig), "--state-dir", str(tmp_path / "state")],
        name="kubesim", log_path=tmp_path / "kubesim.log",
    )
    await process.start()
    try:
        async def written() -> bool:
            return kubeconfig.exists()

        await wait_for(written, timeout=60, description="kubesim kubeconfig")
        kubectl = Kubectl(kubeconfig)
        nodes = (await kubectl.run("get", "nodes", "-o", "json")).json()["items"]
        assert sorted(n["metadata"]["name"] for n in nodes) == ["node-1", "node-2", "node-3"]
        ready = [c for n in nodes for c in n["status"]["conditions"] if c["type"] == "Ready"]
        assert [c["status"] for c in ready] == ["True"] * 3
        version = (await kubectl.run("version", "-o", "json")).json()
        assert version["serverVersion"]["minor"] == "37"
    finally:
        await process.stop(grace=10)
    assert process.returncode == 0


@pytest.fixture
async def webhook(tmp_path: Path, ca: CertificateAuthority) -> AsyncIterator[
    tuple[str, list[dict[str, Any]]]
]:
    """An HTTPS webhook that prefixes container images and records what it was asked."""
    seen: list[dict[str, Any]] = []

    async def mutate(request: web.Request) -> web.Response:
        review = await request.json()
        req = review["request"]
        seen.append(req)
        containers = req["object"]["spec"]["containers"]
        patch = [{"op": "replace", "path": f"/spec/containers/{i}/image",
                  "value": "edge.local:5000/" + c["image"]} for i, c in enumerate(containers)]
        return web.json_response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                  "response": {"uid": req["uid"], "allowed": True,
                                               "patchType": "JSONPatch",
                                               "patch": base64.b64encode(
                                                   json.dumps(patch).encode()).decode()}})

    cert, key = ca.issue(common_name="webhook", hosts=["127.0.0.1"]).write(tmp_path, "webhook")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_post("/mutate", mutate)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        yield f"https://127.0.0.1:{port}/mutate", seen
    finally:
        await runner.cleanup()


async def test_controller_made_pods_pass_through_the_webhook(
    kube_cluster: Cluster, webhook: tuple[str, list[dict[str, Any]]], ca: CertificateAuthority,
) -> None:
    url, seen = webhook
    kubectl = Kubectl(kube_cluster.kubeconfig)
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "rewrite"},
        "webhooks": [{
            "name": "rewrite.example.com", "sideEffects": "None",
            "admissionReviewVersions": ["v1"], "failurePolicy": "Fail",
            "reinvocationPolicy": "IfNeeded",
            "clientConfig": {"url": url,
                             "caBundle": base64.b64encode(ca.cert_pem).decode()},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "matchConditions": [{"name": "not-kube-system",
                                 "expression": "object.metadata.namespace != 'kube-system'"}],
        }],
    }
    await kubectl.run("create", "-f", "-", stdin=json.dumps(config))
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "upf"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "upf"}},
                 "template": {"metadata": {"labels": {"app": "upf"}},
                              "spec": {"containers": [{"name": "upf",
                                                       "image": "acr.io/nf/upf:1.2"}]}}},
    }
    await kubectl.run("create", "-f", "-", stdin=json.dumps(deployment))

    async def two_pods() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = (await kubectl.run(
            "get", "pods", "-l", "app=upf", "-o", "json")).json()["items"]
        return items if len(items) == 2 else None

    pods = await wait_for(two_pods, timeout=60, description="two pods of the deployment")
    assert [p["spec"]["containers"][0]["image"] for p in pods] == [
        "edge.local:5000/acr.io/nf/upf:1.2"] * 2
    creates = [r for r in seen if r["operation"] == "CREATE"]
    assert len(creates) == 2
    # as on a real cluster: the ReplicaSet's pods reach the webhook unnamed and unbound
    rs_name = creates[0]["object"]["metadata"]["ownerReferences"][0]["name"]
    assert all(r["name"] == "" and r["object"]["metadata"]["generateName"] == f"{rs_name}-"
               for r in creates)
    assert all("nodeName" not in r["object"]["spec"] for r in creates)
    assert all(r["namespace"] == "default" for r in creates)
    # kube-system is excluded by the matchCondition
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sys", "namespace":
                                                           "kube-system"},
           "spec": {"containers": [{"name": "c", "image": "acr.io/sys:1"}]}}
    await kubectl.run("create", "-f", "-", stdin=json.dumps(pod))
    got = (await kubectl.run("get", "pod", "sys", "-n", "kube-system", "-o", "json")).json()
    assert got["spec"]["containers"][0]["image"] == "acr.io/sys:1"
