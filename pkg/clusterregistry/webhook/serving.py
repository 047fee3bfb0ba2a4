"""The webhook process: settings in, an HTTPS admission endpoint, probes and metrics out.

`POST /mutate` answers AdmissionReviews (see `admitting`); `/healthz`, `/readyz`
and `/metrics` are served on the HTTPS port too (a kubelet probe can use either
port) and on the plain probe port every clusterregistry process has. Ready means
a serving certificate is loaded (and, in self-signed mode, its CA published in
the caBundle): before that kube-apiserver could not verify the webhook, so a
Service must not send it traffic. The artifact view (IfAvailable) is no part of
readiness: without it the configured fallback answers, which is the point.

With `enableClusterRegistry: false` the runner starts `serve_disabled` instead:
the same server, certificate and caBundle, answering every AdmissionReview
with the pod allowed unchanged (and a warning saying why), so a configuration
left registered, even with failurePolicy Fail, never blocks a pod.

Request bodies above `webhook.maxBodyBytes` get HTTP 413 from aiohttp before
they are read whole. The rewrite is synchronous and short (tens of
microseconds): it runs on the event loop, no executor hop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from clusterregistry.config import Settings
from clusterregistry.errors import RetryableError
from clusterregistry.kube.clients import api_client
from clusterregistry.runtime.lifecycle import cancel_and_wait, wait_stopped
from clusterregistry.runtime.probes import ProbeServer
from clusterregistry.runtime.running import ENABLE_KEY, Service
from clusterregistry.sources import SourceRules
from clusterregistry.webhook import metrics as outcomes
from clusterregistry.webhook.admitting import Admitter, bad_request
from clusterregistry.webhook.availability import ArtifactView
from clusterregistry.webhook.certificates import (
    Material,
    ServingCertificate,
    patch_ca_bundle,
    self_signed,
    service_hosts,
)
from clusterregistry.webhook.metrics import WebhookMetrics
from clusterregistry.webhook.mutation import Rules
from clusterregistry.webhook.policies import MatchCondition
from clusterregistry.webhook.reviews import (
    AdmissionResponse,
    ReviewError,
    decode_review,
    encode_response,
)

log = logging.getLogger(__name__)

MUTATE_PATH = "/mutate"


def build_admitter(settings: Settings, *, metrics: WebhookMetrics,
                   artifacts: ArtifactView | None = None) -> Admitter:
    """The admission logic the settings describe."""
    webhook = settings.webhook
    sources = SourceRules(settings.local_registry, allow_hosts=webhook.allow_hosts,
                          deny_hosts=webhook.deny_hosts,
                          allow_repositories=webhook.allow_repositories,
                          deny_repositories=webhook.deny_repositories)
    rules = Rules(local_registry=settings.local_registry, sources=sources,
                  policy=webhook.policy,
                  artifacts=artifacts,
                  fallback=webhook.unavailable_fallback)
    match = None
    if webhook.enforce_match_condition:
        match = MatchCondition(webhook.pod.mutation.match_condition_expression)
    return Admitter(rules=rules, own_namespace=settings.namespace, metrics=metrics, match=match)


class Reviewer(Protocol):
    def review(self, body: bytes) -> tuple[int, bytes]:
        """(HTTP status, body) for one AdmissionReview request body."""


class AllowEverything:
    """The answer while the cluster registry is disabled: every pod allowed, unchanged."""

    WARNING = (f"clusterregistry: disabled ({ENABLE_KEY}: false); image references left as "
               "they are")

    def __init__(self, metrics: WebhookMetrics) -> None:
        self.metrics = metrics

    def review(self, body: bytes) -> tuple[int, bytes]:
        started = time.perf_counter()
        try:
            request = decode_review(body)
        except ReviewError as exc:
            self.metrics.outcome[outcomes.BAD_REQUEST].inc()
            return 400, bad_request(str(exc))
        self.metrics.outcome[outcomes.UNCHANGED].inc()
        payload = encode_response(AdmissionResponse(uid=request.uid, allowed=True,
                                                    warnings=[self.WARNING]))
        self.metrics.latency.observe(time.perf_counter() - started)
        return 200, payload


class WebhookServer:
    """aiohttp over TLS: /mutate, plus the probes; `port=0` binds a free port (see `.port`)."""

    def __init__(self, admitter: Reviewer, certificate: ServingCertificate, probes: ProbeServer,
                 *, host: str, port: int, max_body_bytes: int,
                 registry: CollectorRegistry = REGISTRY) -> None:
        self._admitter = admitter
        self._certificate = certificate
        self._probes = probes
        self._host = host
        self._requested_port = port
        self._max_body = max_body_bytes
        self._registry = registry
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application(client_max_size=self._max_body)
        app.router.add_post(MUTATE_PATH, self._mutate)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._requested_port,
                               ssl_context=self._certificate.context, backlog=1024)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("webhook listening on https://%s:%d%s", self._host, self.port, MUTATE_PATH)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _mutate(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > self._max_body:
            raise web.HTTPRequestEntityTooLarge(max_size=self._max_body,
                                                actual_size=request.content_length)
        body = await request.read()  # HTTPRequestEntityTooLarge beyond client_max_size
        status, payload = self._admitter.review(body)
        return web.Response(status=status, body=payload, content_type="application/json")

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, _: web.Request) -> web.Response:
        failing = self._probes.failing_checks()
        if failing:
            return web.Response(status=503, text="not ready: " + ", ".join(failing))
        return web.Response(text="ok")

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self._registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _publish_ca(settings: Settings, material: Material, published: asyncio.Event, *,
                      kubeconfig: str | None, retry_seconds: float = 2.0) -> None:
    """Write the CA into the caBundle, retrying until it is in (the configuration may be
    applied after the webhook starts); a PermanentError (RBAC) ends the process."""
    api = await api_client(kubeconfig)
    try:
        while True:
            try:
                await patch_ca_bundle(api, settings.webhook.configuration_name, material.ca_pem)
            except RetryableError as exc:
                log.warning("caBundle not written yet: %s", exc)
                await asyncio.sleep(retry_seconds)
                continue
            published.set()
            return
    finally:
        await api.close()


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    kubeconfig: str | None = None,
    probe_host: str | None = None,
    metrics_registry: CollectorRegistry = REGISTRY,
    started: asyncio.Future[WebhookServer] | None = None,
    freeze_heap: bool = True,
    rewriting: bool = True,
) -> None:
    """Run the webhook until `stop`; `started` (tests) receives the listening server.

    `freeze_heap=False` for a webhook run inside another program (tests): freezing is
    process-wide. `rewriting=False` allows every pod unchanged (`serve_disabled`).
    """
    webhook = settings.webhook
    metrics = WebhookMetrics(metrics_registry)
    view: ArtifactView | None = None
    admitter: Reviewer = AllowEverything(metrics)
    if rewriting:
        if webhook.policy == "IfAvailable":
            view = ArtifactView(settings.nats.servers, metrics=metrics)
        admitter = build_admitter(settings, metrics=metrics, artifacts=view)
    certificate = ServingCertificate(metrics)
    probes = ProbeServer(probe_host or settings.probe_host, settings.probe_port,
                         registry=metrics_registry)
    probes.add_check("tls", lambda: certificate.ready)
    tasks: list[asyncio.Task[None]] = []
    published = asyncio.Event()
    if webhook.self_signed:
        hosts = service_hosts(webhook.service_name, settings.namespace, webhook.extra_hosts)
        material = self_signed(hosts)
        certificate.load_material(material)
        probes.add_check("caBundle", published.is_set)
        tasks.append(asyncio.create_task(
            _publish_ca(settings, material, published, kubeconfig=kubeconfig),
            name="webhook-ca-bundle"))
    else:
        # missing files are not fatal: cert-manager may not have issued yet; not ready until
        certificate.load_files(webhook.tls_cert_file, webhook.tls_key_file)
        tasks.append(asyncio.create_task(
            certificate.watch(webhook.tls_cert_file, webhook.tls_key_file,
                              interval=webhook.tls_reload_seconds, stop=stop),
            name="webhook-tls-reload"))
    if view is not None:
        tasks.append(asyncio.create_task(view.run(stop), name="webhook-artifact-view"))
    server = WebhookServer(admitter, certificate, probes, host=webhook.host, port=webhook.port,
                           max_body_bytes=webhook.max_body_bytes, registry=metrics_registry)
    try:
        await server.start()
        await probes.start()
        # what start made (imports, kubernetes-asyncio's models, the compiled expression)
        # lives as long as the process: frozen, the collector's full passes no longer walk
        # it, which would otherwise show as millisecond pauses in admission latency
        if freeze_heap:
            gc.collect()
            gc.freeze()
        if started is not None and not started.done():
            started.set_result(server)
        await wait_stopped(stop, *tasks)
    finally:
        await cancel_and_wait(*tasks)
        await server.stop()
        await probes.stop()


async def serve_disabled(settings: Settings, stop: asyncio.Event, *,
                         kubeconfig: str | None = None,
                         metrics_registry: CollectorRegistry = REGISTRY) -> None:
    """enableClusterRegistry false: answer every admission request, allowing the pod unchanged."""
    await serve(settings, stop, kubeconfig=kubeconfig, metrics_registry=metrics_registry,
                rewriting=False)


SERVICE = Service(
    name="webhook",
    summary="clusterregistry webhook: rewrites pod images to the in-cluster registry at "
            "admission.",
    serve=serve, disabled=serve_disabled,
    kubeconfig_help="for webhook.selfSigned only (the caBundle write)")
