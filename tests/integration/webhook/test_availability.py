"""IfAvailable against a real nats-server: the KV view, its updates, and the fallback when NATS
goes away (and its recovery), all through HTTPS reviews."""

from __future__ import annotations

import base64
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from clusterregistry import references, schemas, subjects
from clusterregistry.bus.connecting import connect
from clusterregistry.bus.streams import ensure_bucket
from clusterregistry_sandbox.natsservers import NatsServer
from clusterregistry_sandbox.supervising import free_port, wait_for
from kubesim.certificates import CertificateAuthority
from tests.integration.webhook.conftest import RunningWebhook, running_webhook
from tests.world.nats import jetstream

pytestmark = pytest.mark.integration

LOCAL = "edge.local:5000"
IMAGES = ["nginx:1.25", "acr.io/nf/upf:1.2", "quay.io/x/y:3"]


def record(source: str, phase: str) -> tuple[str, bytes]:
    ref = references.parse(source)
    name = references.artifact_name(ref)
    value = schemas.ArtifactRecord(name=name, source=source,
                                   local=str(references.to_local(ref, LOCAL)),
                                   phase=phase)  # type: ignore[arg-type]
    return name, msgspec.json.encode(value)


def review(*images: str) -> bytes:
    return json.dumps({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "namespace": "nf", "operation": "CREATE",
                    "object": {"kind": "Pod", "metadata": {"namespace": "nf"},
                               "spec": {"containers": [{"name": f"c{i}", "image": image}
                                                       for i, image in enumerate(images)]}}},
    }).encode()


async def rewritten(webhook: RunningWebhook, ca: CertificateAuthority) -> list[str]:
    """Which of IMAGES the webhook rewrites right now."""
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    async with aiohttp.ClientSession() as session, session.post(
            webhook.url, data=review(*IMAGES), ssl=context) as response:
        assert response.status == 200
        answer: dict[str, Any] = (await response.json())["response"]
    ops = json.loads(base64.b64decode(answer["patch"])) if "patch" in answer else []
    paths = {op["path"] for op in ops}
    return [image for i, image in enumerate(IMAGES) if f"/spec/containers/{i}/image" in paths]


async def test_if_available_follows_the_bucket_and_falls_back_without_nats(
        tmp_path: Path, ca: CertificateAuthority, nats_server: NatsServer) -> None:
    # the reconciler's bucket, written as a plain KV client would
    async with await connect([nats_server.url], name="test-reconciler") as bus:
        await ensure_bucket(bus, name=subjects.ARTIFACTS_BUCKET)
    async with jetstream(nats_server.url) as js:
        kv = await js.key_value(subjects.ARTIFACTS_BUCKET)
        for source, phase in (("nginx:1.25", "Available"), ("acr.io/nf/upf:1.2", "Mirroring")):
            await kv.put(*record(source, phase))
    async with running_webhook(tmp_path, ca, local_registry=LOCAL, policy="IfAvailable",
                               unavailableFallback="Always",
                               nats_servers=[nats_server.url]) as webhook:

        async def synced() -> bool:
            return webhook.metric("clusterregistry_webhook_artifacts_synced") == 1

        await wait_for(synced, timeout=30, description="artifact view in sync")
        assert await rewritten(webhook, ca) == ["nginx:1.25"]
        assert webhook.metric("clusterregistry_webhook_images_skipped_total",
                              reason="not-available") == 2

        # the reconciler finishes a copy, and removes another record
        async with jetstream(nats_server.url) as js:
            kv = await js.key_value(subjects.ARTIFACTS_BUCKET)
            await kv.put(*record("acr.io/nf/upf:1.2", "Available"))
            await kv.delete(record("nginx:1.25", "Available")[0])

        async def updated() -> bool:
            return await rewritten(webhook, ca) == ["acr.io/nf/upf:1.2"]

        await wait_for(updated, timeout=30, description="view updated by the watch")

        # NATS goes away: the view is not trusted, the fallback (Always) rewrites everything
        await nats_server.kill()

        async def fell_back() -> bool:
            return await rewritten(webhook, ca) == IMAGES

        await wait_for(fell_back, timeout=30, description="fallback while NATS is down")
        assert webhook.metric("clusterregistry_webhook_artifacts_synced") == 0
        assert webhook.metric("clusterregistry_webhook_fallback_total", fallback="Always") >= 3

        # NATS is back: the view is rebuilt from the bucket
        await nats_server.restart()
        await wait_for(updated, timeout=60, description="view rebuilt after NATS restart")
        await wait_for(synced, timeout=30, description="in sync again")


async def test_fallback_never_rewrites_nothing_while_nats_is_unreachable(
        tmp_path: Path, ca: CertificateAuthority) -> None:
    async with running_webhook(tmp_path, ca, local_registry=LOCAL, policy="IfAvailable",
                               unavailableFallback="Never",
                               nats_servers=[f"nats://127.0.0.1:{free_port()}"]) as webhook:
        # answered at once, NATS or not
        assert await rewritten(webhook, ca) == []
        assert webhook.metric("clusterregistry_webhook_fallback_total", fallback="Never") == 3
        assert webhook.metric("clusterregistry_webhook_images_skipped_total",
                              reason="availability-unknown") == 3
