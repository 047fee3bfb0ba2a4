"""The simulated kubelet against registries the test controls.

An in-process aiohttp registry (manifests only) lets these tests see each
request: the Bearer token flow with pull-secret credentials, TLS verified
against KubeletSettings.ca_files, platform selection from an index, and the
pull policies' use of the node's image store. Pods are created bound
(spec.nodeName set), so only the kubelet acts on them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from kubesim.apiserver import ApiServer
from kubesim.certificates import CertificateAuthority
from kubesim.controllers import ControllerManager, KubeletSettings
from kubesim.resources import Resource

pytestmark = pytest.mark.integration

T = TypeVar("T")
Obj = dict[str, Any]
NS = "default"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_bytes(tag: str) -> bytes:
    config = digest_of(tag.encode())
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config,
                   "size": 2},
        "layers": [],
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
    host: str = ""
    scheme: str = "http"

    def add(self, repo: str, ref: str, media_type: str, body: bytes) -> str:
        digest = digest_of(body)
        self.manifests[(repo, ref)] = (media_type, body)
        self.manifests[(repo, digest)] = (media_type, body)
        return digest

    def manifest_requests(self) -> list[str]:
        return [path for path, _ in self.requests if "/manifests/" in path]

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

    async def manifest(self, request: web.Request) -> web.Response:
        repo, ref = request.match_info["repo"], request.match_info["ref"]
        header = request.headers.get("Authorization", "")
        self.requests.append((request.path, header))
        if self.auth == "bearer" and header != f"Bearer token-for-repository:{repo}:pull":
            challenge = (f'Bearer realm="{self.scheme}://{self.host}/token",'
                         f'service="fake",scope="repository:{repo}:pull"')
            return web.json_response(
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                status=401, headers={"WWW-Authenticate": challenge})
        if self.auth == "basic" and not self._basic_ok(header):
            return web.json_response({"errors": [{"code": "UNAUTHORIZED"}]}, status=401,
                                     headers={"WWW-Authenticate": 'Basic realm="fake"'})
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


class Cluster:
    def __init__(self, api: ApiServer, manager: ControllerManager) -> None:
        self.api = api
        self.manager = manager
        self.changed = asyncio.Event()
        api.subscribe(self._record)

    def _record(self, event: str, resource: Resource, obj: Obj) -> None:
        self.changed.set()

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

    async def wait_for(self, predicate: Callable[[], T | None], *, timeout: float = 10.0,
                       what: str = "condition") -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self.changed.clear()
            value = predicate()
            if value:
                return value
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.1))

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
            assert f'Get "https://{registry.host}/v2/secure/app/manifests/1"' in waiting[
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
