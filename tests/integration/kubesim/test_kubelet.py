"""The simulated kubelet against registries the test controls.

An in-process aiohttp registry lets these tests see each request: the
Bearer token flow with pull-secret credentials, TLS verified against
KubeletSettings.ca_files, platform selection from an index, the pull
policies' use of the node's content store, and every blob fetched. Pods are
created bound (spec.nodeName set), so only the kubelet acts on them.

Speed-up, named: `fast()` shortens the kubelet's image pull back-off (10 s
doubling to 300 s on a node) to 0.1 s..0.4 s so failure paths settle within
a test's time; the back-off's real timing is checked with an injected clock
in test_pull_backoff_timing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from kubesim.apiserver import ApiServer
from kubesim.certificates import CertificateAuthority
from kubesim.controllers import ControllerManager, KubeletSettings
from kubesim.controllers.contents import ContentStore
from kubesim.resources import Resource
from tests.world.kube import ApiChanges

pytestmark = pytest.mark.integration

T = TypeVar("T")
Obj = dict[str, Any]
NS = "default"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# Every blob the fake registries serve, by digest (content addressed, so shared).
CONTENT: dict[str, bytes] = {}


def blob(data: bytes) -> dict[str, Any]:
    CONTENT[digest_of(data)] = data
    return {"digest": digest_of(data), "size": len(data)}


def manifest_bytes(tag: str, *, layers: int = 2, layer_size: int = 4096) -> bytes:
    """An OCI image manifest whose config and layers are in CONTENT."""
    config = blob(json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode())
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
             **blob(hashlib.sha256(f"{tag}/{i}".encode()).digest() * (layer_size // 32))}
            for i in range(layers)
        ],
    }).encode()


@dataclass
class FakeRegistry:
    """Serves /v2/<repo>/manifests/<ref>; optional Bearer (token at /token) or Basic auth."""

    auth: str = ""  # "", "bearer", "basic"
    username: str = "robot"
    password: str = "hunter2"
    anonymous_token: bool = False  # bearer: may the token endpoint hand out tokens anonymously
    manifests: dict[tuple[str, str], tuple[str, bytes]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Authorization)
    methods: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    missing: set[str] = field(default_factory=set)  # blob digests answered with 404
    corrupt: set[str] = field(default_factory=set)  # blob digests served with a flipped byte
    cut: set[str] = field(default_factory=set)  # blob digests whose connection is cut midway
    host: str = ""
    scheme: str = "http"

    def add(self, repo: str, ref: str, media_type: str, body: bytes) -> str:
        digest = digest_of(body)
        self.manifests[(repo, ref)] = (media_type, body)
        self.manifests[(repo, digest)] = (media_type, body)
        return digest

    def manifest_requests(self) -> list[str]:
        return [path for path, _ in self.requests if "/manifests/" in path]

    def blob_requests(self) -> list[str]:
        return [path for path, _ in self.requests if "/blobs/" in path]

    def _basic_ok(self, header: str) -> bool:
        expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return header == f"Basic {expected}"

    async def token(self, request: web.Request) -> web.Response:
        self.requests.append((request.path_qs, request.headers.get("Authorization", "")))
        if not self._basic_ok(request.headers.get("Authorization", "")) and not (
            self.anonymous_token and "Authorization" not in request.headers
        ):
            return web.json_response({"errors": [{"code": "UNAUTHORIZED"}]}, status=401)
        scope = request.query.get("scope", "")
        return web.json_response({"token": f"token-for-{scope}", "expires_in": 300})

    def _unauthorized(self, request: web.Request, repo: str) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        self.requests.append((request.path, header))
        self.methods.append((request.method, request.path))
        if self.auth == "bearer" and header != f"Bearer token-for-repository:{repo}:pull":
            challenge = (f'Bearer realm="{self.scheme}://{self.host}/token",'
                         f'service="fake",scope="repository:{repo}:pull"')
            return web.json_response(
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                status=401, headers={"WWW-Authenticate": challenge})
        if self.auth == "basic" and not self._basic_ok(header):
            return web.json_response({"errors": [{"code": "UNAUTHORIZED"}]}, status=401,
                                     headers={"WWW-Authenticate": 'Basic realm="fake"'})
        return None

    async def blob(self, request: web.Request) -> web.StreamResponse:
        repo, digest = request.match_info["repo"], request.match_info["digest"]
        denied = self._unauthorized(request, repo)
        if denied is not None:
            return denied
        data = CONTENT.get(digest)
        if data is None or digest in self.missing:
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
        if digest in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        response = web.StreamResponse(headers={"Docker-Content-Digest": digest,
                                               "Content-Type": "application/octet-stream"})
        response.content_length = len(data)
        await response.prepare(request)
        if digest in self.cut:
            await response.write(data[: len(data) // 2])
            assert request.transport is not None
            request.transport.close()  # the connection drops midway through the blob
            return response
        await response.write(data)
        await response.write_eof()
        return response

    async def manifest(self, request: web.Request) -> web.Response:
        repo, ref = request.match_info["repo"], request.match_info["ref"]
        denied = self._unauthorized(request, repo)
        if denied is not None:
            return denied
        found = self.manifests.get((repo, ref))
        if found is None:
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status=404)
        media_type, body = found
        return web.Response(body=body, headers={"Content-Type": media_type,
                                                "Docker-Content-Digest": digest_of(body)})


@contextlib.asynccontextmanager
async def serve(registry: FakeRegistry, *, ssl_context: ssl.SSLContext | None = None
                ) -> AsyncIterator[FakeRegistry]:
    app = web.Application()
    app.router.add_get("/token", registry.token)
    app.router.add_get("/v2/{repo:.+}/manifests/{ref}", registry.manifest)
    app.router.add_get("/v2/{repo:.+}/blobs/{digest}", registry.blob)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    registry.host = f"127.0.0.1:{port}"
    registry.scheme = "https" if ssl_context else "http"
    try:
        yield registry
    finally:
        await runner.cleanup()


class Cluster(ApiChanges):
    def __init__(self, api: ApiServer, manager: ControllerManager) -> None:
        super().__init__(api)
        self.manager = manager

    @property
    def pods(self) -> Resource:
        return self.api.resource("v1", "Pod")

    def pod(self, name: str) -> Obj | None:
        try:
            return self.api.get(self.pods, namespace=NS, name=name)
        except Exception:
            return None

    async def create_pod(self, name: str, image: str, *, node: str = "node-1",
                         **spec: Any) -> Obj:
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
                "spec": {"nodeName": node, "containers": [{"name": "app", "image": image}],
                         **spec}}
        return await self.api.create(self.pods, body, namespace=NS)

    async def running(self, name: str, **kwargs: Any) -> Obj:
        return await self.wait_for(
            lambda: p if (p := self.pod(name)) is not None
            and p["status"].get("phase") == "Running" else None,
            what=f"pod {name} Running", **kwargs)

    async def waiting(self, name: str) -> dict[str, Any]:
        def reason() -> dict[str, Any] | None:
            pod = self.pod(name)
            for status in (pod or {}).get("status", {}).get("containerStatuses") or []:
                waiting = (status.get("state") or {}).get("waiting")
                if waiting and waiting.get("reason") not in (None, "ContainerCreating"):
                    result: dict[str, Any] = waiting
                    return result
            return None

        return await self.wait_for(reason, what=f"pod {name} waiting")


@contextlib.asynccontextmanager
async def cluster_with(settings: KubeletSettings, *, nodes: tuple[str, ...] = ("node-1",)
                       ) -> AsyncIterator[Cluster]:
    api = ApiServer()
    await api.start()
    manager = ControllerManager(api, nodes=nodes, kubelet=settings)
    cluster = Cluster(api, manager)
    await manager.start()
    try:
        yield cluster
    finally:
        await manager.stop()
        await api.stop()


def fast(**kwargs: Any) -> KubeletSettings:
    return KubeletSettings(backoff_initial=0.1, backoff_max=0.4, **kwargs)


async def pull_secret(cluster: Cluster, name: str, host: str, user: str, password: str) -> None:
    config = {"auths": {host: {"username": user, "password": password}}}
    await cluster.api.create(cluster.api.resource("v1", "Secret"), {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name, "namespace": NS},
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    }, namespace=NS)


# --- tests --------------------------------------------------------------------------------


async def test_bearer_token_flow_with_pull_secret() -> None:
    async with serve(FakeRegistry(auth="bearer")) as registry:
        digest = registry.add("org/app", "v1", OCI_MANIFEST, manifest_bytes("v1"))
        async with cluster_with(fast(insecure_registries=[registry.host])) as cluster:
            await pull_secret(cluster, "creds", registry.host, registry.username,
                              registry.password)
            await cluster.create_pod("with-secret", f"{registry.host}/org/app:v1",
                                     imagePullSecrets=[{"name": "creds"}])
            await cluster.create_pod("without", f"{registry.host}/org/app:v1")
            pod = await cluster.running("with-secret")
            status = pod["status"]["containerStatuses"][0]
            assert status["imageID"] == f"{registry.host}/org/app@{digest}"
            token_requests = [p for p, _ in registry.requests if p.startswith("/token")]
            assert token_requests and "scope=repository:org/app:pull" in token_requests[0]
            assert "service=fake" in token_requests[0]
            waiting = await cluster.waiting("without")
            assert waiting["reason"] in ("ErrImagePull", "ImagePullBackOff")
            assert "failed to fetch anonymous token" in waiting["message"]
            assert "401 Unauthorized" in waiting["message"]


async def test_anonymous_bearer_token() -> None:
    async with serve(FakeRegistry(auth="bearer", anonymous_token=True)) as registry:
        registry.add("library/public", "1", OCI_MANIFEST, manifest_bytes("1"))
        async with cluster_with(fast(insecure_registries=[registry.host])) as cluster:
            await cluster.create_pod("anon", f"{registry.host}/library/public:1")
            await cluster.running("anon")


async def test_tls_registry_verified_with_extra_ca(tmp_path: Path) -> None:
    ca = CertificateAuthority.create("kubelet test CA")
    ca_path = ca.write(tmp_path / "ca.crt")
    cert, key = ca.issue(common_name="registry", hosts=["127.0.0.1"]).write(tmp_path, "registry")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    async with serve(FakeRegistry(), ssl_context=context) as registry:
        registry.add("secure/app", "1", OCI_MANIFEST, manifest_bytes("1"))
        image = f"{registry.host}/secure/app:1"
        async with cluster_with(fast(ca_files=[str(ca_path)])) as cluster:
            await cluster.create_pod("trusted", image)
            await cluster.running("trusted")
        async with cluster_with(fast()) as cluster:
            await cluster.create_pod("untrusted", image)
            waiting = await cluster.waiting("untrusted")
            # containerd resolves a tag with HEAD first
            assert f'Head "https://{registry.host}/v2/secure/app/manifests/1"' in waiting[
                "message"]
            assert "certificate" in waiting["message"]


async def test_index_resolves_the_node_platform() -> None:
    async with serve(FakeRegistry()) as registry:
        amd64 = registry.add("multi/app", "amd64-only", OCI_MANIFEST, manifest_bytes("amd64"))
        arm64 = registry.add("multi/app", "arm64-only", OCI_MANIFEST, manifest_bytes("arm64"))
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": arm64, "size": 10,
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": OCI_MANIFEST, "digest": amd64, "size": 10,
             "platform": {"os": "linux", "architecture": "amd64"}},
        ]}).encode()
        index_digest = registry.add("multi/app", "1.0", OCI_INDEX, index)
        async with cluster_with(fast(insecure_registries=[registry.host])) as cluster:
            await cluster.create_pod("multi", f"{registry.host}/multi/app:1.0")
            pod = await cluster.running("multi")
            # imageID is the repo digest of what the tag resolved to: the index
            assert pod["status"]["containerStatuses"][0]["imageID"] == (
                f"{registry.host}/multi/app@{index_digest}")
            paths = registry.manifest_requests()
            assert f"/v2/multi/app/manifests/{amd64}" in paths
            assert f"/v2/multi/app/manifests/{arm64}" not in paths
        async with cluster_with(fast(insecure_registries=[registry.host],
                                     default_platform="linux/s390x")) as cluster:
            await cluster.create_pod("nomatch", f"{registry.host}/multi/app:1.0")
            waiting = await cluster.waiting("nomatch")
            assert "no match for platform in manifest" in waiting["message"]
            assert waiting["message"].startswith("rpc error: code = NotFound")


async def test_pull_policies_and_the_node_image_store() -> None:
    async with serve(FakeRegistry()) as registry:
        registry.add("cache/app", "1.2", OCI_MANIFEST, manifest_bytes("1.2"))
        registry.add("cache/app", "latest", OCI_MANIFEST, manifest_bytes("latest"))
        async with cluster_with(fast(insecure_registries=[registry.host])) as cluster:
            await cluster.create_pod("a", f"{registry.host}/cache/app:1.2")
            await cluster.running("a")
            await cluster.create_pod("b", f"{registry.host}/cache/app:1.2")  # IfNotPresent
            await cluster.running("b")
            assert registry.manifest_requests().count("/v2/cache/app/manifests/1.2") == 1
            await cluster.create_pod("c", f"{registry.host}/cache/app")  # latest: Always
            await cluster.running("c")
            await cluster.create_pod("d", f"{registry.host}/cache/app:latest")
            await cluster.running("d")
            assert registry.manifest_requests().count("/v2/cache/app/manifests/latest") == 2
            # Never: present on the node
            await cluster.create_pod(
                "e", f"{registry.host}/cache/app:1.2",
                containers=[{"name": "app", "image": f"{registry.host}/cache/app:1.2",
                             "imagePullPolicy": "Never"}])
            await cluster.running("e")
            await cluster.create_pod(
                "f", f"{registry.host}/cache/app:9",
                containers=[{"name": "app", "image": f"{registry.host}/cache/app:9",
                             "imagePullPolicy": "Never"}])
            waiting = await cluster.waiting("f")
            assert waiting["reason"] == "ErrImageNeverPull"


async def test_init_containers_invalid_names_and_run_to_completion() -> None:
    async with serve(FakeRegistry()) as registry:
        registry.add("tools/init", "1", OCI_MANIFEST, manifest_bytes("init"))
        registry.add("tools/job", "1", OCI_MANIFEST, manifest_bytes("job"))
        async with cluster_with(fast(insecure_registries=[registry.host])) as cluster:
            await cluster.create_pod(
                "with-init", f"{registry.host}/tools/job:1",
                initContainers=[{"name": "setup", "image": f"{registry.host}/tools/init:1"}])
            pod = await cluster.running("with-init")
            init = pod["status"]["initContainerStatuses"][0]
            assert init["state"]["terminated"]["reason"] == "Completed"
            assert pod["status"]["hostIP"] and pod["status"]["startTime"]

            await cluster.create_pod("bad-name", "team/Bad:1")
            waiting = await cluster.waiting("bad-name")
            assert waiting["reason"] == "InvalidImageName"

            await cluster.create_pod(
                "batch", f"{registry.host}/tools/job:1", restartPolicy="Never")
            done = await cluster.wait_for(
                lambda: (p := cluster.pod("batch")) is not None
                and p["status"].get("phase") == "Succeeded" and p, what="Succeeded")
            assert done["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0

            pod = await cluster.api.create(cluster.pods, {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "crashy", "namespace": NS,
                             "annotations": {"kubesim.io/exit-code": "2"}},
                "spec": {"nodeName": "node-1", "restartPolicy": "OnFailure",
                         "containers": [{"name": "app", "image": f"{registry.host}/tools/job:1"}]},
            }, namespace=NS)
            restarted = await cluster.wait_for(
                lambda: (p := cluster.pod("crashy")) is not None
                and (p["status"].get("containerStatuses") or [{}])[0].get("restartCount", 0) >= 2
                and p, what="OnFailure restarts")
            assert restarted["status"]["phase"] == "Running"
            last = restarted["status"]["containerStatuses"][0]["lastState"]["terminated"]
            assert last["exitCode"] == 2


async def test_deletion_and_cordoned_nodes() -> None:
    async with serve(FakeRegistry()) as registry:
        registry.add("svc/app", "1", OCI_MANIFEST, manifest_bytes("svc"))
        image = f"{registry.host}/svc/app:1"
        async with cluster_with(fast(insecure_registries=[registry.host]),
                                nodes=("node-1", "node-2")) as cluster:
            await cluster.create_pod("victim", image)
            await cluster.running("victim")
            await cluster.api.delete(cluster.pods, namespace=NS, name="victim")
            await cluster.wait_for(lambda: cluster.pod("victim") is None, what="pod removed")

            nodes = cluster.api.resource("v1", "Node")
            await cluster.api.patch(nodes, namespace=None, name="node-2",
                                    patch={"spec": {"unschedulable": True}},
                                    patch_type="application/merge-patch+json")
            await cluster.create_pod("stuck", image, node="node-2")
            await cluster.create_pod("free", image, node="node-1")
            await cluster.running("free")
            stuck = cluster.pod("stuck")
            assert stuck is not None and not stuck["status"].get("containerStatuses")
            await cluster.api.patch(nodes, namespace=None, name="node-2",
                                    patch={"spec": {"unschedulable": False}},
                                    patch_type="application/merge-patch+json")
            await cluster.running("stuck")


async def test_restarted_manager_takes_over_running_pods() -> None:
    async with serve(FakeRegistry()) as registry:
        registry.add("keep/app", "1", OCI_MANIFEST, manifest_bytes("keep"))
        api = ApiServer()
        await api.start()
        settings = fast(insecure_registries=[registry.host])
        first = ControllerManager(api, nodes=("node-1",), kubelet=settings)
        cluster = Cluster(api, first)
        await first.start()
        try:
            await cluster.create_pod("steady", f"{registry.host}/keep/app:1")
            before = await cluster.running("steady")
            await first.stop()
            second = ControllerManager(api, nodes=("node-1",), kubelet=settings)
            await second.start()
            try:
                # a bare pod created meanwhile is picked up; the running one is left alone
                await cluster.create_pod("later", f"{registry.host}/keep/app:1")
                await cluster.running("later")
                after = cluster.pod("steady")
                assert after is not None
                assert after["metadata"]["resourceVersion"] == before["metadata"][
                    "resourceVersion"]
                assert len(api.list(api.resource("v1", "Node"))["items"]) == 1
            finally:
                await second.stop()
        finally:
            await first.stop()
            await api.stop()


# --- layers, content stores, policies, serialization, back-off -----------------------------


def node_store(cluster: Cluster, node: str = "node-1") -> ContentStore:
    kubelet = cluster.manager.kubelet
    assert kubelet is not None
    return kubelet.puller.store(node)


def layer_digests(body: bytes) -> list[str]:
    manifest = json.loads(body)
    return [manifest["config"]["digest"]] + [layer["digest"] for layer in manifest["layers"]]


async def test_a_pull_fetches_every_blob_into_the_node_store_once() -> None:
    async with serve(FakeRegistry()) as registry:
        first = manifest_bytes("layers-1")
        registry.add("nf/upf", "1", OCI_MANIFEST, first)
        # a second image sharing its base layer with the first
        second = json.loads(manifest_bytes("layers-2"))
        second["layers"][0] = json.loads(first)["layers"][0]
        second_body = json.dumps(second).encode()
        registry.add("nf/upf", "2", OCI_MANIFEST, second_body)
        async with cluster_with(fast(insecure_registries=[registry.host]),
                                nodes=("node-1", "node-2")) as cluster:
            await cluster.create_pod("a", f"{registry.host}/nf/upf:1")
            await cluster.running("a")
            wanted = layer_digests(first)
            assert sorted(registry.blob_requests()) == sorted(
                f"/v2/nf/upf/blobs/{d}" for d in wanted)
            store = node_store(cluster)
            for digest in wanted:
                assert store.blob_path(digest).read_bytes() == CONTENT[digest]
            assert store.present(f"{registry.host}/nf/upf:1") is not None

            # same node, policy Always: the tag is resolved again, nothing is downloaded
            registry.requests.clear()
            await cluster.create_pod("b", f"{registry.host}/nf/upf:1", containers=[
                {"name": "app", "image": f"{registry.host}/nf/upf:1",
                 "imagePullPolicy": "Always"}])
            await cluster.running("b")
            assert registry.methods[-1] == ("HEAD", "/v2/nf/upf/manifests/1")
            assert registry.blob_requests() == []

            # the second image on the same node fetches only what the node lacks
            registry.requests.clear()
            await cluster.create_pod("c", f"{registry.host}/nf/upf:2")
            await cluster.running("c")
            shared = second["layers"][0]["digest"]
            assert sorted(registry.blob_requests()) == sorted(
                f"/v2/nf/upf/blobs/{d}" for d in layer_digests(second_body) if d != shared)

            # another node holds nothing: it downloads every blob itself
            registry.requests.clear()
            await cluster.create_pod("d", f"{registry.host}/nf/upf:1", node="node-2")
            await cluster.running("d")
            assert sorted(registry.blob_requests()) == sorted(
                f"/v2/nf/upf/blobs/{d}" for d in wanted)


async def test_if_not_present_uses_a_whole_image_without_any_request() -> None:
    async with serve(FakeRegistry()) as registry:
        body = manifest_bytes("present")
        registry.add("nf/smf", "1", OCI_MANIFEST, body)
        image = f"{registry.host}/nf/smf:1"
        async with cluster_with(fast(insecure_registries=[registry.host])) as cluster:
            await cluster.create_pod("first", image)
            await cluster.running("first")
            registry.requests.clear()
            await cluster.create_pod("second", image)
            await cluster.running("second")
            assert registry.requests == []

            # a layer lost from the node's store: the image is no longer present, and
            # IfNotPresent pulls again, fetching only that layer
            lost = layer_digests(body)[-1]
            node_store(cluster).blob_path(lost).unlink()
            assert node_store(cluster).present(image) is None
            await cluster.create_pod("third", image)
            await cluster.running("third")
            assert registry.blob_requests() == [f"/v2/nf/smf/blobs/{lost}"]

            # Never: present now, so it runs; a lost layer makes it ErrImageNeverPull
            never = [{"name": "app", "image": image, "imagePullPolicy": "Never"}]
            await cluster.create_pod("fourth", image, containers=never)
            await cluster.running("fourth")
            node_store(cluster).blob_path(lost).unlink()
            await cluster.create_pod("fifth", image, containers=never)
            waiting = await cluster.waiting("fifth")
            assert waiting["reason"] == "ErrImageNeverPull"


@pytest.mark.parametrize(("fault", "code", "words"), [
    ("missing", "NotFound", "failed to copy: httpReadSeeker: failed open: content at "
                            "http://{host}/v2/nf/amf/blobs/{digest} not found: not found"),
    ("corrupt", "FailedPrecondition", 'failed commit on ref "layer-{digest}": unexpected '
                                      "commit digest sha256:"),
    ("cut", "Unknown", "failed to copy: unexpected EOF"),
])
async def test_a_bad_layer_fails_the_pull_with_containerds_words(
        fault: str, code: str, words: str) -> None:
    async with serve(FakeRegistry()) as registry:
        body = manifest_bytes(f"bad-{fault}", layer_size=256 * 1024)
        registry.add("nf/amf", "1", OCI_MANIFEST, body)
        bad = layer_digests(body)[-1]
        getattr(registry, fault).add(bad)
        image = f"{registry.host}/nf/amf:1"
        async with cluster_with(fast(insecure_registries=[registry.host])) as cluster:
            await cluster.create_pod("victim", image)
            waiting = await cluster.waiting("victim")
            assert waiting["reason"] in ("ErrImagePull", "ImagePullBackOff")
            message = waiting["message"]
            assert f"rpc error: code = {code} desc = failed to pull and unpack image " \
                   f'"{image}": ' in message
            assert words.format(host=registry.host, digest=bad) in message
            store = node_store(cluster)
            assert not store.has(bad)
            assert not list((store.root / "content" / "ingest").iterdir())
            assert store.present(image) is None
            # the registry heals: the next attempt after the back-off fetches what is missing
            getattr(registry, fault).discard(bad)
            await cluster.running("victim")
            assert store.blob_path(bad).read_bytes() == CONTENT[bad]


@dataclass
class HeldRegistry(FakeRegistry):
    """Holds every blob response until `release` is set."""

    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def blob(self, request: web.Request) -> web.StreamResponse:
        await self.release.wait()
        return await super().blob(request)


@pytest.mark.parametrize("serialize", [True, False])
async def test_pulls_on_a_node_are_serialized_unless_configured(serialize: bool) -> None:
    async with serve(HeldRegistry()) as registry:
        registry.add("nf/one", "1", OCI_MANIFEST, manifest_bytes("one"))
        registry.add("nf/two", "1", OCI_MANIFEST, manifest_bytes("two"))
        settings = fast(insecure_registries=[registry.host], serialize_image_pulls=serialize,
                        max_parallel_image_pulls=2)
        async with cluster_with(settings) as cluster:
            await cluster.create_pod("one", f"{registry.host}/nf/one:1")
            await cluster.wait_for(lambda: ("HEAD", "/v2/nf/one/manifests/1") in registry.methods,
                                   what="the first pull to start")
            await cluster.create_pod("two", f"{registry.host}/nf/two:1")
            if serialize:
                # the second pull queues behind the first: its manifest is not even asked
                # for while the first pull's blobs are held
                assert cluster.manager.kubelet is not None
                puller = cluster.manager.kubelet.puller
                await cluster.wait_for(lambda: puller.waiting("node-1") == 1,
                                       what="the second pull to queue")
                assert ("HEAD", "/v2/nf/two/manifests/1") not in registry.methods
                registry.release.set()
                await cluster.running("one")
                await cluster.running("two")
                first_two = registry.methods.index(("HEAD", "/v2/nf/two/manifests/1"))
                one_blobs = [i for i, (_, p) in enumerate(registry.methods)
                             if p.startswith("/v2/nf/one/blobs/")]
                assert max(one_blobs) < first_two
            else:
                await cluster.wait_for(
                    lambda: ("HEAD", "/v2/nf/two/manifests/1") in registry.methods,
                    what="the second pull to start beside the first")
                registry.release.set()
                await cluster.running("one")
                await cluster.running("two")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_pull_backoff_timing_doubles_per_pod_and_image() -> None:
    """The kubelet's real back-off (10 s, 20 s, 40 s ... per pod and image), read from an
    injected clock: a sync inside the window reports ImagePullBackOff and asks no registry;
    the first sync after it pulls again."""
    clock = FakeClock()
    async with serve(FakeRegistry()) as registry:
        image = f"{registry.host}/nf/gone:1"
        settings = KubeletSettings(insecure_registries=[registry.host], clock=clock)
        assert (settings.backoff_initial, settings.backoff_max) == (10.0, 300.0)
        async with cluster_with(settings) as cluster:
            kubelet = cluster.manager.kubelet
            assert kubelet is not None
            pod = await cluster.create_pod("patient", image)
            key = f"{NS}/patient"

            def attempts() -> int:
                return registry.manifest_requests().count("/v2/nf/gone/manifests/1")

            async def sync_at(offset: float, *, reason: str) -> None:
                clock.now = 1000.0 + offset
                before = cluster.pod("patient")
                version = (before or {}).get("metadata", {}).get("resourceVersion")
                kubelet.queue.add(key)
                await cluster.wait_for(
                    lambda: (p := cluster.pod("patient")) is not None
                    and p["metadata"]["resourceVersion"] != version
                    and p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                    == reason, what=f"{reason} at +{offset}s")

            await cluster.wait_for(lambda: attempts() == 1, what="the first attempt")
            await cluster.waiting("patient")
            assert kubelet.backoff.delay(f"{pod['metadata']['uid']}_{image}") == 10.0
            await sync_at(9.5, reason="ImagePullBackOff")
            assert attempts() == 1
            await sync_at(10.5, reason="ErrImagePull")
            assert attempts() == 2
            assert kubelet.backoff.delay(f"{pod['metadata']['uid']}_{image}") == 20.0
            await sync_at(30.0, reason="ImagePullBackOff")  # 19.5 s after the second failure
            assert attempts() == 2
            await sync_at(31.0, reason="ErrImagePull")
            assert attempts() == 3
            assert kubelet.backoff.delay(f"{pod['metadata']['uid']}_{image}") == 40.0
            # another pod with the same image has its own back-off
            await cluster.create_pod("fresh", image)
            await cluster.wait_for(lambda: attempts() == 4, what="the other pod's own attempt")


async def test_node_status_lists_the_images_present() -> None:
    async with serve(FakeRegistry()) as registry:
        body = manifest_bytes("listed", layers=3, layer_size=8192)
        digest = registry.add("nf/nrf", "3.1", OCI_MANIFEST, body)
        settings = fast(insecure_registries=[registry.host],
                        node_status_update_frequency=0.05)  # 10 s on a node
        async with cluster_with(settings) as cluster:
            await cluster.create_pod("nrf", f"{registry.host}/nf/nrf:3.1")
            await cluster.running("nrf")
            nodes = cluster.api.resource("v1", "Node")
            images = await cluster.wait_for(
                lambda: cluster.api.get(nodes, namespace=None, name="node-1")["status"].get(
                    "images"), what="node status images")
            manifest = json.loads(body)
            size = len(body) + manifest["config"]["size"] + sum(
                layer["size"] for layer in manifest["layers"])
            assert images == [{"names": [f"{registry.host}/nf/nrf@{digest}",
                                         f"{registry.host}/nf/nrf:3.1"], "sizeBytes": size}]


async def test_a_node_created_through_the_api_is_registered_by_its_kubelet() -> None:
    async with serve(FakeRegistry()) as registry:
        registry.add("nf/ausf", "1", OCI_MANIFEST, manifest_bytes("joined"))
        async with cluster_with(fast(insecure_registries=[registry.host])) as cluster:
            nodes = cluster.api.resource("v1", "Node")
            await cluster.api.create(nodes, {"apiVersion": "v1", "kind": "Node",
                                             "metadata": {"name": "joined"}})
            node = await cluster.wait_for(
                lambda: (n := cluster.api.get(nodes, namespace=None, name="joined"))
                and any(c["type"] == "Ready" and c["status"] == "True"
                        for c in n.get("status", {}).get("conditions") or []) and n,
                what="the joined node Ready")
            assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "joined"
            assert node["status"]["nodeInfo"]["kubeletVersion"]
            await cluster.create_pod("there", f"{registry.host}/nf/ausf:1", node="joined")
            await cluster.running("there")
            assert node_store(cluster, "joined").present(f"{registry.host}/nf/ausf:1")
