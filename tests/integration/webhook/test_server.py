"""The HTTPS server itself: any bytes get an answer, bodies are bounded, certificates reload,
readiness follows the TLS material."""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterregistry_sandbox.supervising import wait_for
from kubesim.certificates import CertificateAuthority
from tests.integration.webhook.conftest import RunningWebhook, running_webhook

pytestmark = pytest.mark.integration

LOCAL = "edge.local:5000"


class ThreadedWebhook:
    """The webhook on its own event loop in a thread, for synchronous (hypothesis) clients."""

    def __init__(self, tmp_path: Path, ca: CertificateAuthority, **webhook: object) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.running: RunningWebhook | None = None
        self.error: BaseException | None = None
        self._done: asyncio.Event | None = None
        self._args = (tmp_path, ca, webhook)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        tmp_path, ca, webhook = self._args
        self._done = asyncio.Event()
        try:
            async with running_webhook(tmp_path, ca, local_registry=LOCAL,
                                       **webhook) as running:  # type: ignore[arg-type]
                self.running = running
                self.ready.set()
                await self._done.wait()
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    def start(self) -> RunningWebhook:
        self.thread.start()
        self.ready.wait(60)
        if self.running is None:
            raise AssertionError(f"webhook did not start: {self.error!r}")
        return self.running

    def stop(self) -> None:
        if self._done is not None:
            self.loop.call_soon_threadsafe(self._done.set)
        self.thread.join(30)


@pytest.fixture
def threaded(tmp_path: Path, ca: CertificateAuthority) -> Iterator[RunningWebhook]:
    webhook = ThreadedWebhook(tmp_path, ca, maxBodyBytes=64 * 1024)
    try:
        yield webhook.start()
    finally:
        webhook.stop()


def client_context(ca: CertificateAuthority) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca.cert_pem.decode())


def post(port: int, context: ssl.SSLContext, body: bytes,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    try:
        connection.request("POST", "/mutate", body=body,
                           headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


POD_REVIEW = json.dumps({
    "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
    "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "nf", "operation": "CREATE",
                "object": {"kind": "Pod", "metadata": {"namespace": "nf"},
                           "spec": {"containers": [{"name": "c", "image": "acr.io/a:1"}]}}},
}).encode()

# bytes near the real thing are the interesting ones: mutate a real review, or send noise
_mutated = st.builds(
    lambda data, cut, insert: data[:cut] + insert + data[cut + len(insert):],
    st.just(POD_REVIEW), st.integers(0, len(POD_REVIEW)), st.binary(max_size=12))
_json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["apiVersion", "kind", "request", "uid", "object", "spec",
                         "containers", "image", "metadata", "operation", "resource"]),
        children, max_size=5),
    max_leaves=20).map(lambda v: json.dumps(v).encode())


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=300) | _mutated | _json_like)
def test_any_bytes_get_an_answer_and_the_server_stays_up(threaded: RunningWebhook,
                                                        ca: CertificateAuthority,
                                                        body: bytes) -> None:
    context = client_context(ca)
    status, payload = post(threaded.server.port, context, body)
    assert status in (200, 400), payload
    decoded = json.loads(payload)
    if status == 200:
        assert decoded["response"]["allowed"] is True
    else:
        assert decoded["kind"] == "Status" and decoded["message"]
    # and it still answers a real review
    status, payload = post(threaded.server.port, context, POD_REVIEW)
    assert status == 200
    assert json.loads(payload)["response"]["patchType"] == "JSONPatch"


def test_oversized_bodies_get_413_and_the_server_goes_on(threaded: RunningWebhook,
                                                        ca: CertificateAuthority) -> None:
    context = client_context(ca)
    status, _ = post(threaded.server.port, context, b"x" * (64 * 1024 + 1))
    assert status == 413
    # without a Content-Length (chunked): aiohttp stops reading at the limit
    connection = http.client.HTTPSConnection("127.0.0.1", threaded.server.port,
                                             context=context, timeout=30)
    try:
        connection.request("POST", "/mutate", body=iter([b"y" * 8192] * 20),
                           encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
        assert connection.getresponse().status == 413
    finally:
        connection.close()
    assert post(threaded.server.port, context, POD_REVIEW)[0] == 200


async def test_ready_only_once_a_certificate_is_loaded_and_rotation_is_picked_up(
        tmp_path: Path, ca: CertificateAuthority) -> None:
    async with running_webhook(tmp_path, ca, local_registry=LOCAL, issue=False) as webhook:
        probes = f"http://127.0.0.1:{webhook.server._probes.port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{probes}/readyz") as response:
                assert response.status == 503
                assert "tls" in await response.text()
            # cert-manager writes the Secret: picked up without a restart
            first = ca.issue(common_name="first", hosts=["127.0.0.1"])
            first.write(webhook.cert_file.parent, "tls")

            async def ready() -> bool:
                async with session.get(f"{probes}/readyz") as response:
                    return response.status == 200

            await wait_for(ready, timeout=30, description="ready after the certificate")

            async def served_common_name() -> str:
                context = client_context(ca)
                _, writer = await asyncio.open_connection("127.0.0.1", webhook.server.port,
                                                          ssl=context)
                try:
                    cert = writer.get_extra_info("peercert")
                    return dict(item[0] for item in cert["subject"])["commonName"]
                finally:
                    writer.close()

            assert await served_common_name() == "first"
            # rotation: a new pair replaces the files
            ca.issue(common_name="second", hosts=["127.0.0.1"]).write(
                webhook.cert_file.parent, "tls")

            async def rotated() -> bool:
                return await served_common_name() == "second"

            await wait_for(rotated, timeout=30, description="the rotated certificate served")
            # a broken pair keeps the one in service
            webhook.key_file.write_text("not a key")

            async def failed_load() -> bool:
                return webhook.metric("clusterregistry_webhook_tls_reloads_total",
                                      result="failed") >= 1

            await wait_for(failed_load, timeout=30, description="a failed reload counted")
            assert await served_common_name() == "second"
            assert await ready()
            # the HTTPS port answers the probes too
            https = client_context(ca)
            async with session.get(f"https://127.0.0.1:{webhook.server.port}/metrics",
                                   ssl=https) as response:
                text = await response.text()
            assert 'clusterregistry_webhook_tls_reloads_total{result="loaded"} 2.0' in text
