"""Pulling images from real registries into a node's content store, as containerd does.

A pull is what containerd's CRI plugin does for the kubelet's PullImage:

1. resolve: `HEAD /v2/<repo>/manifests/<tag or digest>` with the manifest media
   types in Accept; the digest comes from Docker-Content-Digest (a GET when the
   registry sends none);
2. fetch the manifest (or index) by digest, unless the node already holds it;
   for an index, pick the node's platform (containerd's platforms.Only) and
   fetch that manifest too;
3. fetch the config and every layer the node does not hold yet, three at a
   time (containerd's max_concurrent_downloads), verifying size and sha256
   while streaming, committing each blob only once it is verified;
4. record the image names (`host/repo:tag` and `host/repo@digest`).

Registry auth follows the 401 challenge (Basic with the pod's pull-secret
credentials, or the Bearer token flow with realm/service/scope), and the
Authorization that worked is reused for the repository, as containerd's
authorizer does. Errors carry containerd's wording so a pod's ErrImagePull
message and the Failed event read as on a node.

Connections: HTTPS verified against the system roots plus extra CA files,
plain HTTP for hosts configured as insecure (containerd's hosts.toml
`http://` endpoints), one shared aiohttp session so connections are reused.
Per node, pulls run one at a time (the kubelet's serializeImagePulls: true)
or up to maxParallelImagePulls.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import json
import re
import ssl
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp

from kubesim.controllers.contents import CommitError, ContentStore, ImageRecord, blobs_of
from kubesim.controllers.credentials import Credential
from kubesim.controllers.references import ImageRef

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST, "*/*"))
# containerd's [plugins."io.containerd.grpc.v1.cri"] max_concurrent_downloads default
CONCURRENT_DOWNLOADS = 3

_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


class PullError(Exception):
    """A failed pull; `code` is the gRPC code the CRI returns to the kubelet."""

    def __init__(self, message: str, *, code: str = "Unknown") -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    @property
    def not_found(self) -> bool:
        return self.code == "NotFound"


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        return cls(
            os=parts[0] if parts and parts[0] else "linux",
            architecture=parts[1] if len(parts) > 1 else "amd64",
            variant=parts[2] if len(parts) > 2 else "",
        )

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Pulled:
    """A pull's outcome, with what the kubelet reports in its Pulled event."""

    record: ImageRecord
    repo_digest: str  # host/repo@sha256:... (the container status' imageID)
    size: int  # containerd's image size: the target, the platform manifest, config, layers
    fetched: int  # bytes downloaded (blobs the node did not hold yet)
    pull_seconds: float  # the pull itself
    total_seconds: float  # including the wait behind other pulls on the node


@dataclass(frozen=True)
class Challenge:
    scheme: str
    params: dict[str, str]


def parse_challenges(header: str) -> list[Challenge]:
    """WWW-Authenticate: `Bearer realm="...",service="...",scope="..."` or `Basic realm=...`."""
    out: list[Challenge] = []
    for part in re.split(r",\s*(?=(?:Basic|Bearer)\b)", header.strip(), flags=re.IGNORECASE):
        scheme, _, rest = part.strip().partition(" ")
        if scheme.lower() not in ("basic", "bearer"):
            continue
        params = {
            m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3) or "")
            for m in _CHALLENGE_PARAM.finditer(rest)
        }
        out.append(Challenge(scheme=scheme.capitalize(), params=params))
    return out


def basic_authorization(credential: Credential) -> str:
    """An Authorization header value for HTTP Basic (RFC 7617, UTF-8)."""
    raw = f"{credential.username}:{credential.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def sha256_digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def select_platform(index: dict[str, Any], platform: Platform) -> dict[str, Any] | None:
    """containerd's platforms.Only: exact os/arch, the variant if the node has one."""
    candidates = []
    for descriptor in index.get("manifests") or []:
        wanted = descriptor.get("platform") or {}
        if wanted.get("os") != platform.os or wanted.get("architecture") != platform.architecture:
            continue
        variant = wanted.get("variant") or ""
        if platform.variant and variant and variant != platform.variant:
            continue
        candidates.append(descriptor)
    if not candidates:
        return None
    # Prefer the exact variant match when there are several.
    candidates.sort(key=lambda d: (d.get("platform") or {}).get("variant", "") != platform.variant)
    result: dict[str, Any] = candidates[0]
    return result


class RegistryClient:
    """Talks to registries for every node's pulls; one session, tokens cached by scope."""

    def __init__(
        self,
        *,
        ca_files: Sequence[str] = (),
        insecure_registries: Iterable[str] = (),
        timeout: float = 30.0,
        progress_timeout: float = 300.0,
    ) -> None:
        self.ca_files = tuple(ca_files)
        self.insecure = frozenset(insecure_registries)
        self.timeout = timeout
        # containerd's image_pull_progress_timeout: a blob read that stalls this long fails
        self.progress_timeout = progress_timeout
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | None = None
        # (host, scope, credential key) -> (token, expiry)
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        # (host, repo, credential key) -> the Authorization header that was accepted last
        self._accepted: dict[tuple[str, str, str], str] = {}
        self.requests = 0  # HTTP requests sent, for tests and curiosity

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            context = ssl.create_default_context()
            for path in self.ca_files:
                context.load_verify_locations(cafile=path)
            self._ssl = context
        return self._ssl

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._context(), limit=64),
                # Registries answer gzip-free; containerd does not ask for compression.
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def scheme(self, host: str) -> str:
        return "http" if host in self.insecure else "https"

    # -- the pull ----------------------------------------------------------------------------

    async def pull(
        self,
        image: ImageRef,
        *,
        store: ContentStore,
        credentials: Sequence[Credential] = (),
        platform: Platform = Platform(),
    ) -> tuple[ImageRecord, int, int]:
        """Pull `image` into `store`: (the image record, its size, bytes downloaded)."""
        try:
            digest, media_type = await self._resolve(image, credentials=credentials)
        except PullError as err:
            raise PullError(f'failed to resolve reference "{image}": {err.message}',
                            code=err.code) from None
        target = await self._fetch_manifest(image, digest, credentials=credentials, store=store)
        size = store.blob_path(digest).stat().st_size
        manifest_digest, manifest = digest, target
        if media_type in INDEX_TYPES or "manifests" in target:
            child = select_platform(target, platform)
            if child is None:
                raise PullError(f"no match for platform in manifest {digest}: not found",
                                code="NotFound")
            manifest_digest = str(child.get("digest"))
            manifest = await self._fetch_manifest(
                image, manifest_digest, credentials=credentials, store=store)
            size += store.blob_path(manifest_digest).stat().st_size
        if not isinstance(manifest.get("config"), dict):
            raise PullError(f"unsupported manifest media type in {manifest_digest}: "
                            "no config descriptor")
        blobs = blobs_of(manifest)
        size += sum(int(d.get("size") or 0) for d in blobs)
        fetched = await self._fetch_blobs(image, blobs, credentials=credentials, store=store)
        names = [image.with_digest(digest)]
        if image.digest is None:
            names.append(str(image))
        store.record(names, digest=digest, media_type=media_type, size=size,
                     manifest=manifest_digest)
        return store.records()[names[-1]], size, fetched

    async def _resolve(
        self, image: ImageRef, *, credentials: Sequence[Credential]
    ) -> tuple[str, str]:
        """containerd's docker resolver: HEAD the manifest, read Docker-Content-Digest."""
        host, repo = image.api_host, image.path
        url = f"{self.scheme(host)}://{host}/v2/{repo}/manifests/{image.reference}"
        for method in ("HEAD", "GET"):
            status, headers, body = await self._small(
                method, url, host=host, repo=repo, credentials=credentials)
            if status == 404:
                raise PullError(f"{image}: not found", code="NotFound")
            if status == 401:
                raise PullError(
                    "pull access denied, repository does not exist or may require "
                    f"authorization: {self._server_message(body)}")
            if status == 405 and method == "HEAD":
                continue  # a registry without HEAD on manifests: GET it
            if status != 200:
                raise PullError(
                    f"unexpected status from {method} request to {url}: "
                    f"{status} {_reason(status)}")
            media_type = headers.get("Content-Type", "").split(";")[0].strip()
            digest = headers.get("Docker-Content-Digest", "")
            if method == "GET":
                digest = sha256_digest(body)
            elif not digest:
                continue  # no digest header: containerd GETs the manifest to compute it
            if image.digest is not None and digest != image.digest:
                raise PullError(f"content digest {digest} does not match {image.digest}",
                                code="FailedPrecondition")
            return digest, media_type
        raise PullError(f"unexpected status from GET request to {url}")  # not reached

    async def _fetch_manifest(
        self, image: ImageRef, digest: str, *, credentials: Sequence[Credential],
        store: ContentStore,
    ) -> dict[str, Any]:
        """A manifest or index by digest: from the node's store if it holds it."""
        held = store.read_json(digest)
        if held is not None:
            return held
        host, repo = image.api_host, image.path
        url = f"{self.scheme(host)}://{host}/v2/{repo}/manifests/{digest}"
        status, _, body = await self._small("GET", url, host=host, repo=repo,
                                            credentials=credentials)
        if status == 404:
            raise PullError(f"{image.name}@{digest}: not found", code="NotFound")
        if status != 200:
            raise PullError(
                f"unexpected status from GET request to {url}: {status} {_reason(status)}")
        try:
            store.put(digest, body)
        except CommitError as err:
            raise PullError(str(err), code="FailedPrecondition") from None
        parsed = store.read_json(digest)
        if parsed is None:
            raise PullError(f"failed to decode manifest {digest}: invalid JSON")
        return parsed

    async def _fetch_blobs(
        self, image: ImageRef, blobs: list[dict[str, Any]], *,
        credentials: Sequence[Credential], store: ContentStore,
    ) -> int:
        missing = [d for d in blobs
                   if not store.has(str(d.get("digest")), int(d.get("size", -1)))]
        if not missing:
            return 0
        gate = asyncio.Semaphore(CONCURRENT_DOWNLOADS)

        async def one(descriptor: dict[str, Any]) -> int:
            async with gate:
                return await self._fetch_blob(image, descriptor, credentials=credentials,
                                              store=store)

        tasks = [asyncio.ensure_future(one(d)) for d in missing]
        try:
            return sum(await asyncio.gather(*tasks))
        finally:
            # the first failure fails the pull (containerd cancels its other fetches)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _fetch_blob(
        self, image: ImageRef, descriptor: dict[str, Any], *,
        credentials: Sequence[Credential], store: ContentStore,
    ) -> int:
        digest = str(descriptor.get("digest"))
        size = int(descriptor.get("size", -1))
        host, repo = image.api_host, image.path
        url = f"{self.scheme(host)}://{host}/v2/{repo}/blobs/{digest}"
        ref = store.ref_key(digest, str(descriptor.get("mediaType") or ""))
        response = await self._open("GET", url, host=host, repo=repo, credentials=credentials,
                                    stream=True)
        try:
            if response.status == 404:
                raise PullError(
                    f"failed to copy: httpReadSeeker: failed open: content at {url} not found: "
                    "not found", code="NotFound")
            if response.status != 200:
                raise PullError(
                    f"failed to copy: httpReadSeeker: failed open: unexpected status code "
                    f"{url}: {response.status} {_reason(response.status)}")
            writer = store.ingest(digest, size)
            # The sha256 and the writes (both release the GIL) cost several times what reading
            # the socket does: past the first 4 MiB they run in a thread of the blob's own, a
            # batch at a time, while the event loop reads the next batch, so a pull can use a
            # second core. One batch in flight at most (a blob is never held in memory); a
            # smaller blob stays on the loop, where handing bytes to a thread costs more.
            batch_bytes = 4 << 20
            flusher: ThreadPoolExecutor | None = None
            pending: asyncio.Future[None] | None = None
            batch: list[bytes] = []
            batched = 0

            def flush(chunks: list[bytes]) -> None:
                writer.write_many(chunks)

            try:
                try:
                    async for chunk in response.content.iter_any():
                        batch.append(chunk)
                        batched += len(chunk)
                        if batched < batch_bytes:
                            continue
                        if pending is not None:
                            await pending
                        if flusher is None:
                            flusher = ThreadPoolExecutor(1, thread_name_prefix="pull-blob")
                        pending = asyncio.wrap_future(flusher.submit(flush, batch))
                        batch, batched = [], 0
                    if pending is not None:
                        await pending
                    flush(batch)
                finally:
                    if flusher is not None:
                        # on a failure the batch being written finishes before the ingest is
                        # aborted (its file closed): one batch at most, a few milliseconds
                        flusher.shutdown(wait=True, cancel_futures=True)
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
                writer.abort()
                raise PullError("failed to copy: unexpected EOF") from None
            except (aiohttp.ClientError, OSError) as err:
                writer.abort()
                raise PullError(f"failed to copy: {_cause(err)}") from None
            except TimeoutError:
                writer.abort()
                raise PullError(
                    f'failed to copy: httpReadSeeker: failed read: ref "{ref}": '
                    "context deadline exceeded") from None
            except BaseException:
                writer.abort()
                raise
            try:
                writer.commit()
            except CommitError as err:
                raise PullError(str(err), code="FailedPrecondition") from None
            return writer.written
        finally:
            response.release()

    # -- HTTP with registry auth -------------------------------------------------------------

    async def _small(
        self, method: str, url: str, *, host: str, repo: str, credentials: Sequence[Credential]
    ) -> tuple[int, dict[str, str], bytes]:
        response = await self._open(method, url, host=host, repo=repo, credentials=credentials)
        try:
            try:
                body = await response.read()
            except (aiohttp.ClientError, TimeoutError, OSError) as err:
                raise PullError(f"failed to do request: {_describe(err, url, method)}") from None
            return response.status, dict(response.headers), body
        finally:
            response.release()

    async def _open(
        self, method: str, url: str, *, host: str, repo: str,
        credentials: Sequence[Credential], stream: bool = False,
    ) -> aiohttp.ClientResponse:
        """Send the request, answering a 401 challenge once per credential; the caller
        releases the response. The Authorization accepted last is tried first."""
        attempts: list[Credential | None] = list(credentials) or [None]
        for credential in attempts:
            accepted = self._accepted.get((host, repo, _credential_key(credential)))
            if accepted is None:
                continue
            response = await self._send(method, url, {"Authorization": accepted}, stream=stream)
            if response.status != 401:
                return response
            response.release()
        response = await self._send(method, url, {}, stream=stream)
        if response.status != 401:
            return response
        challenges = parse_challenges(response.headers.get("WWW-Authenticate", ""))
        for challenge in challenges:
            for credential in attempts:
                if challenge.scheme == "Basic":
                    if credential is None:
                        continue
                    header = basic_authorization(credential)
                elif challenge.scheme == "Bearer":
                    token = await self._token(challenge, host=host, repo=repo,
                                              credential=credential)
                    header = f"Bearer {token}"
                else:
                    continue
                retry = await self._send(method, url, {"Authorization": header}, stream=stream)
                if retry.status != 401:
                    response.release()
                    self._accepted[(host, repo, _credential_key(credential))] = header
                    return retry
                response.release()
                response = retry
        return response

    async def _send(
        self, method: str, url: str, headers: dict[str, str], *, stream: bool
    ) -> aiohttp.ClientResponse:
        timeout = (aiohttp.ClientTimeout(total=None, sock_connect=min(10.0, self.timeout),
                                         sock_read=self.progress_timeout)
                   if stream else
                   aiohttp.ClientTimeout(total=self.timeout,
                                         sock_connect=min(10.0, self.timeout)))
        try:
            response = await self.session().request(
                method, url, headers={"Accept": ACCEPT, **headers}, allow_redirects=True,
                timeout=timeout)
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError, OSError) as err:
            raise PullError(f"failed to do request: {_describe(err, url, method)}") from None
        self.requests += 1
        return response

    @staticmethod
    def _server_message(body: bytes) -> str:
        try:
            errors = json.loads(body).get("errors") or []
            first = errors[0]
            code = str(first.get("code", "")).lower()
            return f"server message: {code}: {first.get('message', '')}"
        except (ValueError, AttributeError, IndexError, TypeError):
            return "server message: unauthorized"

    async def _token(
        self, challenge: Challenge, *, host: str, repo: str, credential: Credential | None
    ) -> str:
        realm = challenge.params.get("realm")
        if not realm:
            raise PullError("failed to authorize: no realm in the Bearer challenge")
        scope = challenge.params.get("scope") or f"repository:{repo}:pull"
        cache_key = (host, scope, _credential_key(credential))
        cached = self._tokens.get(cache_key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        params = {"scope": scope}
        if challenge.params.get("service"):
            params["service"] = challenge.params["service"]
        headers = {"Authorization": basic_authorization(credential)} if credential else {}
        try:
            async with self.session().get(
                realm, params=params, headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                self.requests += 1
                payload = await response.read()
                if response.status != 200:
                    what = "fetch oauth token" if credential else "fetch anonymous token"
                    raise PullError(
                        f"failed to authorize: failed to {what}: unexpected status from GET "
                        f"request to {response.url}: {response.status} {_reason(response.status)}"
                    )
        except (aiohttp.ClientError, TimeoutError) as err:
            raise PullError(f"failed to authorize: {_describe(err, realm, 'GET')}") from None
        try:
            document = json.loads(payload)
            token = str(document.get("token") or document.get("access_token") or "")
            expires = float(document.get("expires_in") or 60)
        except (ValueError, AttributeError):
            token, expires = "", 0.0
        if not token:
            raise PullError("failed to authorize: the token server returned no token")
        self._tokens[cache_key] = (token, time.monotonic() + max(expires - 5, 1))
        return token


class Puller:
    """The kubelets' image service: one content store per node under `root`, and the
    kubelet's per-node pull gate (serialized, or up to `max_parallel` at once)."""

    def __init__(self, client: RegistryClient, root: Path, *, serialize: bool = True,
                 max_parallel: int = 0) -> None:
        self.client = client
        self.root = root
        self.limit = 1 if serialize else (max_parallel if max_parallel > 0 else 0)
        self._stores: dict[str, ContentStore] = {}
        self._gates: dict[str, asyncio.Semaphore] = {}
        self._waiting: dict[str, int] = {}  # node -> pulls queued behind the gate

    def store(self, node: str) -> ContentStore:
        store = self._stores.get(node)
        if store is None:
            store = self._stores[node] = ContentStore(self.root / node)
        return store

    def present(self, node: str, image: ImageRef) -> ImageRecord | None:
        return self.store(node).present(str(image))

    def waiting(self, node: str) -> int:
        """Pulls on `node` queued behind the ones in progress."""
        return self._waiting.get(node, 0)

    def forget(self, node: str) -> None:
        self._stores.pop(node, None)
        self._gates.pop(node, None)

    async def pull(
        self, node: str, image: ImageRef, *, credentials: Sequence[Credential] = (),
        platform: Platform = Platform(),
    ) -> Pulled:
        loop = asyncio.get_running_loop()
        queued = loop.time()
        gate = self._gate(node)
        if gate is not None:
            self._waiting[node] = self._waiting.get(node, 0) + 1
            try:
                await gate.acquire()
            finally:
                self._waiting[node] -= 1
        try:
            started = loop.time()
            record, size, fetched = await self.client.pull(
                image, store=self.store(node), credentials=credentials, platform=platform)
        finally:
            if gate is not None:
                gate.release()
        done = loop.time()
        return Pulled(record=record, repo_digest=image.with_digest(record.digest), size=size,
                      fetched=fetched, pull_seconds=done - started, total_seconds=done - queued)

    def _gate(self, node: str) -> asyncio.Semaphore | None:
        if self.limit == 0:
            return None
        gate = self._gates.get(node)
        if gate is None:
            gate = self._gates[node] = asyncio.Semaphore(self.limit)
        return gate


def _credential_key(credential: Credential | None) -> str:
    return credential.key + "\0" + credential.username if credential else ""


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _cause(err: BaseException) -> str:
    if isinstance(err, ConnectionResetError) or (
        isinstance(err, OSError) and err.errno == errno.ECONNRESET
    ):
        return "read: connection reset by peer"
    return str(err) or type(err).__name__


def _describe(err: BaseException, url: str, method: str) -> str:
    """Go's net/http error shape: `Head "URL": <cause>`."""
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        cause = f"tls: failed to verify certificate: {err.certificate_error}"
    elif isinstance(err, aiohttp.ClientConnectorSSLError | ssl.SSLError):
        cause = f"tls: {err}"
    elif isinstance(err, aiohttp.ClientConnectorError):
        code = err.os_error.errno
        why = (
            "connection refused"
            if code == errno.ECONNREFUSED
            else (err.os_error.strerror or str(err.os_error))
        )
        cause = f"dial tcp {err.host}:{err.port}: connect: {why}"
    elif isinstance(err, TimeoutError):
        cause = "context deadline exceeded"
    elif isinstance(err, aiohttp.ServerDisconnectedError):
        cause = "EOF"
    else:
        cause = str(err) or type(err).__name__
    return f'{method.capitalize()} "{url}": {cause}'
