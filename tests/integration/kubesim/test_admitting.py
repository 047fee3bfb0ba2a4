"""kubesim's mutating admission against real HTTPS webhook servers.

Each test starts aiohttp webhook servers on 127.0.0.1 (port 0) with TLS
material generated here, and drives `MutatingAdmission.admit` the way the
API server does: patches, denials, failure policies on refused connections,
timeouts and TLS failures, selectors, matchConditions, reinvocation and dry
run.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubesim import statuses
from kubesim.admitting import MutatingAdmission
from kubesim.resources import Registry, Resource

pytestmark = pytest.mark.integration


def _pods() -> Resource:
    pods = Registry().lookup("", "v1", "pods")
    assert pods is not None
    return pods


PODS = _pods()

Obj = dict[str, Any]

# -- TLS material --------------------------------------------------------------------------


@dataclass(frozen=True)
class Ca:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def bundle(self) -> str:
        """The CA as a webhook clientConfig.caBundle: base64 of the PEM."""
        return base64.b64encode(self.pem).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str = "test webhook CA") -> Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return Ca(cert, key)


def server_context(ca: Ca, hosts: list[str], directory: Path) -> ssl.SSLContext:
    """A serving context whose certificate, signed by `ca`, is valid for `hosts`."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    stem = uuid.uuid4().hex
    cert_path = directory / f"{stem}.crt"
    key_path = directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


# -- webhook servers -----------------------------------------------------------------------

Reply = Callable[[Obj], Obj | Awaitable[Obj]]


def allow(request: Obj, *, patch: list[Obj] | None = None) -> Obj:
    """An AdmissionReview response allowing `request`, with an optional JSON patch."""
    response: Obj = {"uid": request["uid"], "allowed": True}
    if patch is not None:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": response}


def deny(request: Obj, status: Obj) -> Obj:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": request["uid"], "allowed": False, "status": status}}


def add_label(key: str, value: str) -> Reply:
    """A webhook that sets one label (and patches nothing once it is there)."""

    def reply(request: Obj) -> Obj:
        labels = request["object"]["metadata"].get("labels")
        if labels is None:
            return allow(request, patch=[
                {"op": "add", "path": "/metadata/labels", "value": {key: value}}])
        if labels.get(key) == value:
            return allow(request)
        return allow(request, patch=[
            {"op": "add", "path": f"/metadata/labels/{key.replace('/', '~1')}", "value": value}])

    return reply


@dataclass
class WebhookServer:
    url: str  # https://127.0.0.1:<port>
    port: int
    reviews: list[Obj] = field(default_factory=list)  # AdmissionReviews received
    queries: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    peers: set[tuple[str, int]] = field(default_factory=set)
    hosts: list[str] = field(default_factory=list)

    @property
    def requests(self) -> list[Obj]:
        return [r["request"] for r in self.reviews]


@dataclass
class Servers:
    """Starts webhook servers; stops every one of them at teardown."""

    tmp_path: Path
    ca: Ca
    runners: list[web.AppRunner] = field(default_factory=list)
    # released at teardown, before the servers stop: handlers that never answer wait on it
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(
        self,
        reply: Reply,
        *,
        ca: Ca | None = None,
        hosts: tuple[str, ...] = ("127.0.0.1",),
    ) -> WebhookServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = WebhookServer(url=f"https://127.0.0.1:{port}", port=port)

        async def handle(request: web.Request) -> web.Response:
            review = await request.json()
            server.reviews.append(review)
            server.queries.append(dict(request.query))
            server.paths.append(request.path)
            server.hosts.append(request.host)
            peer = request.transport.get_extra_info("peername") if request.transport else None
            if peer is not None:
                server.peers.add((peer[0], peer[1]))
            answer = reply(review["request"])
            if not isinstance(answer, dict):
                answer = await answer
            return web.json_response(answer)

        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        self.runners.append(runner)
        context = server_context(ca or self.ca, list(hosts), self.tmp_path)
        site = web.SockSite(runner, sock, ssl_context=context)
        await site.start()
        return server

    def never_answer(self) -> Reply:
        async def reply(request: Obj) -> Obj:
            await self.release.wait()
            return allow(request)

        return reply

    async def stop(self) -> None:
        self.release.set()
        for runner in self.runners:
            await runner.cleanup()


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    s = Servers(tmp_path=tmp_path, ca=make_ca())
    try:
        yield s
    finally:
        await s.stop()


NamespaceLabels = Callable[[str], dict[str, str] | None]
NAMESPACES: dict[str, dict[str, str]] = {
    "default": {"kubernetes.io/metadata.name": "default"},
    "kube-system": {"kubernetes.io/metadata.name": "kube-system"},
    "injected": {"kubernetes.io/metadata.name": "injected", "inject": "enabled"},
}


@dataclass
class Admissions:
    """Builds MutatingAdmission instances over given configurations; closes them all."""

    made: list[MutatingAdmission] = field(default_factory=list)

    def __call__(
        self,
        *configurations: Obj,
        resolver: Callable[[str, str, int], str | None] | None = None,
    ) -> MutatingAdmission:
        admission = MutatingAdmission(
            configurations=lambda: list(configurations),
            namespace_labels=NAMESPACES.get,
            service_resolver=resolver,
        )
        self.made.append(admission)
        return admission


@pytest.fixture
async def admissions() -> AsyncIterator[Admissions]:
    a = Admissions()
    try:
        yield a
    finally:
        for admission in a.made:
            await admission.close()


def webhook(
    name: str,
    *,
    url: str | None = None,
    ca: Ca | None = None,
    service: Obj | None = None,
    failure_policy: str = "Fail",
    side_effects: str = "None",
    timeout: int | None = None,
    reinvocation: str | None = None,
    namespace_selector: Obj | None = None,
    object_selector: Obj | None = None,
    match_conditions: list[Obj] | None = None,
) -> Obj:
    client: Obj = {}
    if url is not None:
        client["url"] = url
    if service is not None:
        client["service"] = service
    if ca is not None:
        client["caBundle"] = ca.bundle
    hook: Obj = {
        "name": name,
        "clientConfig": client,
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""],
                   "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}],
        "failurePolicy": failure_policy,
        "sideEffects": side_effects,
        "admissionReviewVersions": ["v1"],
    }
    if timeout is not None:
        hook["timeoutSeconds"] = timeout
    if reinvocation is not None:
        hook["reinvocationPolicy"] = reinvocation
    if namespace_selector is not None:
        hook["namespaceSelector"] = namespace_selector
    if object_selector is not None:
        hook["objectSelector"] = object_selector
    if match_conditions is not None:
        hook["matchConditions"] = match_conditions
    return hook


def configuration(name: str, *hooks: Obj) -> Obj:
    return {"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration", "metadata": {"name": name},
            "webhooks": list(hooks)}


def pod(
    name: str = "web", *, namespace: str = "default", labels: dict[str, str] | None = None
) -> Obj:
    meta: Obj = {"name": name, "namespace": namespace}
    if labels is not None:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}


async def create(
    admission: MutatingAdmission, obj: Obj, *, dry_run: bool = False
) -> Obj:
    meta = obj["metadata"]
    return await admission.admit(
        resource=PODS, subresource="", operation="CREATE", obj=obj, old_obj=None,
        namespace=meta["namespace"], name=meta["name"], dry_run=dry_run,
    )


def free_port() -> int:
    """A port nothing listens on (bound, then closed), so connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- tests ---------------------------------------------------------------------------------


async def test_patch_is_applied_and_the_review_is_what_kube_apiserver_sends(
    servers: Servers, admissions: Admissions
) -> None:
    server = await servers.start(add_label("injected", "yes"))
    admission = admissions(configuration("c", webhook(
        "inject.example.com", url=server.url + "/mutate", ca=servers.ca, timeout=5)))
    original = pod()

    out = await create(admission, original)

    assert out["metadata"]["labels"] == {"injected": "yes"}
    assert "labels" not in original["metadata"], "the input object must not be modified"
    [review] = server.reviews
    assert review["apiVersion"] == "admission.k8s.io/v1"
    assert review["kind"] == "AdmissionReview"
    request = review["request"]
    uuid.UUID(request["uid"])
    assert request["kind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert request["resource"] == {"group": "", "version": "v1", "resource": "pods"}
    assert request["requestKind"] == request["kind"]
    assert request["requestResource"] == request["resource"]
    assert "subResource" not in request
    assert request["name"] == "web"
    assert request["namespace"] == "default"
    assert request["operation"] == "CREATE"
    assert request["userInfo"]["username"]
    assert request["object"] == original
    assert request["oldObject"] is None
    assert request["dryRun"] is False
    assert request["options"] == {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
    assert server.paths == ["/mutate"]
    assert server.queries == [{"timeout": "5s"}]


async def test_update_sends_old_object_and_update_options(
    servers: Servers, admissions: Admissions
) -> None:
    server = await servers.start(add_label("seen", "update"))
    admission = admissions(configuration("c", webhook("u.example.com", url=server.url,
                                                      ca=servers.ca)))
    old = pod(labels={"v": "1"})
    new = pod(labels={"v": "2"})
    out = await admission.admit(resource=PODS, subresource="", operation="UPDATE", obj=new,
                                old_obj=old, namespace="default", name="web", dry_run=False,
                                user={"username": "alice", "groups": ["devs"]})
    assert out["metadata"]["labels"] == {"v": "2", "seen": "update"}
    [request] = server.requests
    assert request["operation"] == "UPDATE"
    assert request["oldObject"] == old
    assert request["object"] == new
    assert request["options"]["kind"] == "UpdateOptions"
    assert request["userInfo"] == {"username": "alice", "groups": ["devs"]}
    assert server.queries == [{"timeout": "10s"}], "timeoutSeconds defaults to 10"


async def test_denial_becomes_the_webhooks_status(
    servers: Servers, admissions: Admissions
) -> None:
    server = await servers.start(lambda r: deny(r, {"message": "images must be mirrored"}))
    admission = admissions(configuration("c", webhook("deny.example.com", url=server.url,
                                                      ca=servers.ca)))
    with pytest.raises(statuses.ApiError) as err:
        await create(admission, pod())
    assert err.value.code == 403
    assert err.value.reason == "Forbidden"
    assert err.value.message == (
        'admission webhook "deny.example.com" denied the request: images must be mirrored')


async def test_denial_keeps_the_webhooks_code_and_reason(
    servers: Servers, admissions: Admissions
) -> None:
    server = await servers.start(lambda r: deny(r, {"code": 422, "reason": "Invalid"}))
    admission = admissions(configuration("c", webhook("deny.example.com", url=server.url,
                                                      ca=servers.ca)))
    with pytest.raises(statuses.ApiError) as err:
        await create(admission, pod())
    assert (err.value.code, err.value.reason) == (422, "Invalid")
    assert err.value.message == 'admission webhook "deny.example.com" denied the request: Invalid'


async def test_connection_refused_fails_the_request_with_failure_policy_fail(
    admissions: Admissions,
) -> None:
    url = f"https://127.0.0.1:{free_port()}/mutate"
    admission = admissions(configuration("c", webhook("down.example.com", url=url)))
    with pytest.raises(statuses.ApiError) as err:
        await create(admission, pod())
    assert err.value.code == 500
    assert err.value.reason == "InternalError"
    assert err.value.message.startswith(
        'Internal error occurred: failed calling webhook "down.example.com": '
        f'failed to call webhook: Post "{url}?timeout=10s": ')
    assert "connection refused" in err.value.message


async def test_connection_refused_is_skipped_with_failure_policy_ignore(
    servers: Servers, admissions: Admissions
) -> None:
    server = await servers.start(add_label("after", "down"))
    admission = admissions(configuration(
        "c",
        webhook("down.example.com", url=f"https://127.0.0.1:{free_port()}/",
                failure_policy="Ignore"),
        webhook("up.example.com", url=server.url, ca=servers.ca),
    ))
    out = await create(admission, pod())
    assert out["metadata"]["labels"] == {"after": "down"}, "the webhooks after it still run"


@pytest.mark.parametrize("policy", ["Fail", "Ignore"])
async def test_timeout_follows_failure_policy(
    servers: Servers, admissions: Admissions, policy: str
) -> None:
    server = await servers.start(servers.never_answer())
    admission = admissions(configuration("c", webhook(
        "slow.example.com", url=server.url, ca=servers.ca, timeout=1, failure_policy=policy)))
    obj = pod()
    if policy == "Fail":
        with pytest.raises(statuses.ApiError) as err:
            await create(admission, obj)
        assert err.value.code == 500
        assert err.value.message == (
            'Internal error occurred: failed calling webhook "slow.example.com": failed to '
            f'call webhook: Post "{server.url}/?timeout=1s": context deadline exceeded')
    else:
        assert await create(admission, obj) is obj
    assert server.queries == [{"timeout": "1s"}]


async def test_ca_bundle_mismatch_fails_the_tls_handshake(
    servers: Servers, admissions: Admissions
) -> None:
    server = await servers.start(add_label("never", "called"))
    admission = admissions(configuration("c", webhook("tls.example.com", url=server.url,
                                                      ca=make_ca("another CA"))))
    with pytest.raises(statuses.ApiError) as err:
        await create(admission, pod())
    assert err.value.code == 500
    assert "x509: certificate signed by unknown authority" in err.value.message
    assert server.reviews == []


async def test_without_ca_bundle_the_system_roots_do_not_trust_a_private_ca(
    servers: Servers, admissions: Admissions
) -> None:
    server = await servers.start(add_label("never", "called"))
    admission = admissions(configuration("c", webhook("roots.example.com", url=server.url)))
    with pytest.raises(statuses.ApiError) as err:
        await create(admission, pod())
    assert "x509" in err.value.message
    assert server.reviews == []


async def test_certificate_must_be_valid_for_the_url_host(
    servers: Servers, admissions: Admissions
) -> None:
    server = await servers.start(add_label("never", "called"), hosts=("hook.webhooks.svc",))
    admission = admissions(configuration("c", webhook("host.example.com", url=server.url,
                                                      ca=servers.ca)))
    with pytest.raises(statuses.ApiError) as err:
        await create(admission, pod())
    assert "x509: certificate is not valid for" in err.value.message


async def test_service_reference_is_resolved_and_verified_as_the_service_name(
    servers: Servers, admissions: Admissions
) -> None:
    # The certificate is valid only for the in-cluster name, as a real webhook's is.
    server = await servers.start(add_label("via", "service"), hosts=("hook.webhooks.svc",))
    resolved: list[tuple[str, str, int]] = []

    def resolver(namespace: str, name: str, port: int) -> str | None:
        resolved.append((namespace, name, port))
        return server.url

    admission = admissions(
        configuration("c", webhook(
            "svc.example.com", ca=servers.ca,
            service={"namespace": "webhooks", "name": "hook", "port": 8443, "path": "/mutate"})),
        resolver=resolver,
    )
    out = await create(admission, pod())
    assert out["metadata"]["labels"] == {"via": "service"}
    assert resolved == [("webhooks", "hook", 8443)]
    assert server.paths == ["/mutate"]
    assert server.hosts == ["hook.webhooks.svc:8443"]


async def test_unresolvable_service_is_a_call_failure(admissions: Admissions) -> None:
    admission = admissions(
        configuration("c", webhook("svc.example.com",
                                   service={"namespace": "webhooks", "name": "gone"})),
        resolver=lambda namespace, name, port: None,
    )
    with pytest.raises(statuses.ApiError) as err:
        await create(admission, pod())
    assert err.value.code == 500
    assert 'failed calling webhook "svc.example.com"' in err.value.message


async def test_connections_are_reused_across_calls(
    servers: Servers, admissions: Admissions
) -> None:
    server = await servers.start(add_label("a", "b"))
    admission = admissions(configuration("c", webhook("reuse.example.com", url=server.url,
                                                      ca=servers.ca)))
    for i in range(5):
        await create(admission, pod(f"p{i}"))
    assert len(server.reviews) == 5
    assert len(server.peers) == 1, "one kept-alive connection serves every call"


AOSM_DEFAULT = (
    "!(object.metadata.namespace == 'kube-system') || (has(object.metadata.labels) && "
    "((has(object.metadata.labels.app) && object.metadata.labels.app in "
    "['commissioning','descheduler']) || ('name' in object.metadata.labels && "
    "object.metadata.labels['name'] == 'cert-exporter')))"
)


async def test_aosm_default_match_condition(servers: Servers, admissions: Admissions) -> None:
    server = await servers.start(add_label("mutated", "true"))
    admission = admissions(configuration("aosm", webhook(
        "aosm.example.com", url=server.url, ca=servers.ca,
        match_conditions=[{"name": "aosm-default", "expression": AOSM_DEFAULT}])))

    cases = [
        (pod("app", namespace="default"), True),
        (pod("dns", namespace="kube-system", labels={"app": "coredns"}), False),
        (pod("bare", namespace="kube-system"), False),
        (pod("desch", namespace="kube-system", labels={"app": "descheduler"}), True),
        (pod("cert", namespace="kube-system", labels={"name": "cert-exporter"}), True),
    ]
    for obj, called in cases:
        out = await create(admission, obj)
        assert (out["metadata"].get("labels", {}).get("mutated") == "true") is called, obj
    assert [r["name"] for r in server.requests] == ["app", "desch", "cert"]


async def test_match_condition_error_follows_failure_policy(
    servers: Servers, admissions: Admissions
) -> None:
    server = await servers.start(add_label("x", "y"))
    broken = [{"name": "broken", "expression": "object.metadata.labels.app == 'x'"}]
    failing = admissions(configuration("c", webhook(
        "cel.example.com", url=server.url, ca=servers.ca, match_conditions=broken)))
    with pytest.raises(statuses.ApiError) as err:
        await create(failing, pod())
    assert err.value.code == 403
    ignoring = admissions(configuration("c", webhook(
        "cel.example.com", url=server.url, ca=servers.ca, match_conditions=broken,
        failure_policy="Ignore")))
    obj = pod()
    assert await create(ignoring, obj) is obj
    assert server.reviews == []


async def test_namespace_and_object_selectors(servers: Servers, admissions: Admissions) -> None:
    by_namespace = await servers.start(add_label("ns", "selected"))
    by_object = await servers.start(add_label("obj", "selected"))
    admission = admissions(configuration(
        "c",
        webhook("ns.example.com", url=by_namespace.url, ca=servers.ca,
                namespace_selector={"matchLabels": {"inject": "enabled"}}),
        webhook("obj.example.com", url=by_object.url, ca=servers.ca,
                object_selector={"matchExpressions": [
                    {"key": "sidecar", "operator": "In", "values": ["yes"]}]}),
    ))

    plain = await create(admission, pod("plain", namespace="default"))
    in_ns = await create(admission, pod("in-ns", namespace="injected"))
    labelled = await create(admission, pod("labelled", labels={"sidecar": "yes"}))

    assert "labels" not in plain["metadata"]
    assert in_ns["metadata"]["labels"] == {"ns": "selected"}
    assert labelled["metadata"]["labels"] == {"sidecar": "yes", "obj": "selected"}
    assert [r["name"] for r in by_namespace.requests] == ["in-ns"]
    assert [r["name"] for r in by_object.requests] == ["labelled"]

    # an update is selected by the old object's labels too
    await admission.admit(resource=PODS, subresource="", operation="UPDATE",
                          obj=pod("relabel", labels={}), old_obj=pod("relabel",
                                                                     labels={"sidecar": "yes"}),
                          namespace="default", name="relabel", dry_run=False)
    assert [r["name"] for r in by_object.requests] == ["labelled", "relabel"]


async def test_reinvocation_reruns_earlier_if_needed_webhooks_after_a_later_change(
    servers: Servers, admissions: Admissions
) -> None:
    first = await servers.start(add_label("first", "done"))
    second = await servers.start(add_label("second", "done"))
    third = await servers.start(add_label("third", "done"))
    never = await servers.start(add_label("never", "done"))
    admission = admissions(
        configuration("a-first", webhook("first.example.com", url=first.url, ca=servers.ca,
                                         reinvocation="IfNeeded"),
                      webhook("never.example.com", url=never.url, ca=servers.ca,
                              reinvocation="Never")),
        configuration("b-second", webhook("second.example.com", url=second.url,
                                          ca=servers.ca)),
        configuration("c-third", webhook("third.example.com", url=third.url, ca=servers.ca,
                                         reinvocation="IfNeeded")),
    )

    out = await create(admission, pod())

    assert out["metadata"]["labels"] == {
        "first": "done", "never": "done", "second": "done", "third": "done"}
    # "first" ran before "never" and "second" changed the object: it runs again and sees
    # their changes. "third" changed it last, so nothing after it asks for a rerun, and
    # "never" does not want one.
    assert len(first.reviews) == 2
    assert first.requests[1]["object"]["metadata"]["labels"]["second"] == "done"
    assert len(never.reviews) == 1
    assert len(second.reviews) == 1
    assert len(third.reviews) == 1


async def test_no_reinvocation_without_a_later_change(
    servers: Servers, admissions: Admissions
) -> None:
    first = await servers.start(add_label("first", "done"))
    noop = await servers.start(allow)
    admission = admissions(configuration(
        "c",
        webhook("first.example.com", url=first.url, ca=servers.ca, reinvocation="IfNeeded"),
        webhook("noop.example.com", url=noop.url, ca=servers.ca),
    ))
    await create(admission, pod())
    assert len(first.reviews) == 1
    assert len(noop.reviews) == 1


@pytest.mark.parametrize("policy", ["Fail", "Ignore"])
async def test_dry_run_never_reaches_a_webhook_with_side_effects(
    servers: Servers, admissions: Admissions, policy: str
) -> None:
    server = await servers.start(add_label("x", "y"))
    admission = admissions(configuration("c", webhook(
        "effects.example.com", url=server.url, ca=servers.ca, side_effects="Some",
        failure_policy=policy)))
    with pytest.raises(statuses.ApiError) as err:
        await create(admission, pod(), dry_run=True)
    assert err.value.code == 400
    assert err.value.reason == "BadRequest"
    assert err.value.message == 'admission webhook "effects.example.com" does not support dry run'
    assert server.reviews == []
    # without dry run it is called
    out = await create(admission, pod())
    assert out["metadata"]["labels"] == {"x": "y"}


@pytest.mark.parametrize("side_effects", ["None", "NoneOnDryRun"])
async def test_dry_run_reaches_a_webhook_without_side_effects(
    servers: Servers, admissions: Admissions, side_effects: str
) -> None:
    server = await servers.start(add_label("x", "y"))
    admission = admissions(configuration("c", webhook(
        "pure.example.com", url=server.url, ca=servers.ca, side_effects=side_effects)))
    out = await create(admission, pod(), dry_run=True)
    assert out["metadata"]["labels"] == {"x": "y"}
    [request] = server.requests
    assert request["dryRun"] is True
    assert request["options"]["dryRun"] == ["All"]


async def test_response_with_another_uid_is_a_call_failure(
    servers: Servers, admissions: Admissions
) -> None:
    server = await servers.start(lambda r: allow({**r, "uid": "not-the-one"}))
    failing = admissions(configuration("c", webhook("uid.example.com", url=server.url,
                                                    ca=servers.ca)))
    with pytest.raises(statuses.ApiError) as err:
        await create(failing, pod())
    assert err.value.code == 500
    assert "received invalid webhook response: expected response.uid=" in err.value.message
    ignoring = admissions(configuration("c", webhook("uid.example.com", url=server.url,
                                                     ca=servers.ca, failure_policy="Ignore")))
    obj = pod()
    assert await create(ignoring, obj) is obj


async def test_patch_that_does_not_apply_fails_whatever_the_failure_policy(
    servers: Servers, admissions: Admissions
) -> None:
    server = await servers.start(lambda r: allow(r, patch=[
        {"op": "remove", "path": "/metadata/annotations/missing"}]))
    admission = admissions(configuration("c", webhook(
        "badpatch.example.com", url=server.url, ca=servers.ca, failure_policy="Ignore")))
    with pytest.raises(statuses.ApiError) as err:
        await create(admission, pod())
    assert err.value.code == 500
    assert err.value.reason == "InternalError"
    assert err.value.message == (
        "Internal error occurred: remove operation does not apply: "
        'doc is missing path: "/metadata/annotations/missing"')


async def test_non_2xx_answer_is_a_call_failure(
    servers: Servers, admissions: Admissions
) -> None:
    async def reply(request: Obj) -> Obj:
        raise web.HTTPServiceUnavailable(text="overloaded")

    server = await servers.start(reply)
    admission = admissions(configuration("c", webhook("busy.example.com", url=server.url,
                                                      ca=servers.ca)))
    with pytest.raises(statuses.ApiError) as err:
        await create(admission, pod())
    assert err.value.code == 500
    assert "overloaded" in err.value.message
