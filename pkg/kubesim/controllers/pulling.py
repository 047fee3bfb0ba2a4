"""Resolving image manifests from real registries, as containerd does before a pull.

The simulated kubelet does not download layers, but it does everything that
decides whether a real pull would succeed: it asks the registry the
reference names for the manifest (OCI and Docker media types), follows the
registry's 401 challenge (Basic with the pod's pull-secret credentials, or
the Bearer token flow with realm/service/scope), picks the node's platform
out of an index and resolves that child manifest too. Errors carry
containerd's wording so a pod's ErrImagePull message reads as on a node.

Connections: HTTPS verified against the system roots plus extra CA files,
plain HTTP for hosts configured as insecure (containerd's hosts.toml
`http://` endpoints), one shared aiohttp session so connections are reused.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import re
import ssl
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import aiohttp

from kubesim.controllers.credentials import Credential
from kubesim.controllers.references import ImageRef

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST, "*/*"))

_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


class PullError(Exception):
    """A failed resolution; `not_found` maps to gRPC NotFound in the kubelet's message."""

    def __init__(self, message: str, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.not_found = not_found


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
class Resolved:
    """The outcome of resolving a reference: the digest a tag pointed at, and for an
    index the platform manifest chosen from it."""

    digest: str  # of what the reference resolved to (index or manifest): the repo digest
    media_type: str
    manifest_digest: str  # of the platform manifest (== digest for a plain manifest)
    config_digest: str


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
    """Resolves references against registries; caches manifests by (registry, repo, digest)."""

    def __init__(
        self,
        *,
        ca_files: Sequence[str] = (),
        insecure_registries: Iterable[str] = (),
        timeout: float = 30.0,
    ) -> None:
        self.ca_files = tuple(ca_files)
        self.insecure = frozenset(insecure_registries)
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | None = None
        # (host, repo, digest) -> (media type, parsed body)
        self.manifests: dict[tuple[str, str, str], tuple[str, dict[str, Any]]] = {}
        # (host, scope, credential key) -> (token, expiry)
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self.requests = 0  # manifest GETs sent, for tests and curiosity

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
                timeout=aiohttp.ClientTimeout(
                    total=self.timeout, sock_connect=min(10.0, self.timeout)
                ),
                connector=aiohttp.TCPConnector(ssl=self._context(), limit=64),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def scheme(self, host: str) -> str:
        return "http" if host in self.insecure else "https"

    async def resolve(
        self,
        image: ImageRef,
        *,
        credentials: Sequence[Credential] = (),
        platform: Platform = Platform(),
    ) -> Resolved:
        host = image.api_host
        repo = image.path
        try:
            media_type, body, digest = await self._manifest(
                host, repo, reference=image.reference, credentials=credentials, image=image
            )
            if media_type in INDEX_TYPES:
                child = select_platform(body, platform)
                if child is None:
                    raise PullError(
                        f"no match for platform in manifest {digest}: not found", not_found=True
                    )
                _, child_body, child_digest = await self._manifest(
                    host,
                    repo,
                    reference=str(child.get("digest")),
                    credentials=credentials,
                    image=image,
                )
                config = (child_body.get("config") or {}).get("digest", "")
                return Resolved(digest, media_type, child_digest, str(config))
            config = (body.get("config") or {}).get("digest", "")
            return Resolved(digest, media_type, digest, str(config))
        except PullError as err:
            raise PullError(
                f'failed to resolve reference "{image}": {err.message}', not_found=err.not_found
            ) from None

    async def _manifest(
        self,
        host: str,
        repo: str,
        *,
        reference: str,
        credentials: Sequence[Credential],
        image: ImageRef,
    ) -> tuple[str, dict[str, Any], str]:
        if reference.startswith("sha256:"):
            cached = self.manifests.get((host, repo, reference))
            if cached is not None:
                return cached[0], cached[1], reference
        url = f"{self.scheme(host)}://{host}/v2/{repo}/manifests/{reference}"
        status, headers, body = await self._get_authorized(
            url, host=host, repo=repo, credentials=credentials
        )
        if status == 404:
            raise PullError(f"{image}: not found", not_found=True)
        if status == 401:
            raise PullError(
                "pull access denied, repository does not exist or may require authorization: "
                f"{self._server_message(body)}"
            )
        if status != 200:
            raise PullError(
                f"unexpected status from GET request to {url}: {status} {_reason(status)}"
            )
        digest = sha256_digest(body)
        if reference.startswith("sha256:") and digest != reference:
            raise PullError(f"content digest {digest} does not match {reference}")
        try:
            parsed = json.loads(body)
        except ValueError:
            raise PullError(f"failed to decode manifest {digest}: invalid JSON") from None
        if not isinstance(parsed, dict):
            raise PullError(f"failed to decode manifest {digest}: not an object")
        content_type = headers.get("Content-Type", "").split(";")[0].strip()
        media_type = str(parsed.get("mediaType") or content_type)
        if media_type not in INDEX_TYPES and media_type not in MANIFEST_TYPES:
            if "manifests" in parsed:
                media_type = OCI_INDEX
            elif "config" in parsed and "layers" in parsed:
                media_type = OCI_MANIFEST
            else:
                raise PullError(f"unsupported manifest media type {media_type!r}")
        self.manifests[(host, repo, digest)] = (media_type, parsed)
        return media_type, parsed, digest

    @staticmethod
    def _server_message(body: bytes) -> str:
        try:
            errors = json.loads(body).get("errors") or []
            first = errors[0]
            code = str(first.get("code", "")).lower()
            return f"server message: {code}: {first.get('message', '')}"
        except (ValueError, AttributeError, IndexError, TypeError):
            return "server message: unauthorized"

    async def _get_authorized(
        self, url: str, *, host: str, repo: str, credentials: Sequence[Credential]
    ) -> tuple[int, dict[str, str], bytes]:
        status, headers, body = await self._get(url, {})
        if status != 401:
            return status, headers, body
        challenges = parse_challenges(headers.get("WWW-Authenticate", ""))
        attempts: list[Credential | None] = list(credentials) or [None]
        for challenge in challenges:
            for credential in attempts:
                if challenge.scheme == "Basic":
                    if credential is None:
                        continue
                    status, headers, body = await self._get(
                        url, {"Authorization": basic_authorization(credential)}
                    )
                elif challenge.scheme == "Bearer":
                    token = await self._token(
                        challenge, host=host, repo=repo, credential=credential
                    )
                    status, headers, body = await self._get(
                        url, {"Authorization": f"Bearer {token}"}
                    )
                else:
                    continue
                if status != 401:
                    return status, headers, body
        return status, headers, body

    async def _token(
        self, challenge: Challenge, *, host: str, repo: str, credential: Credential | None
    ) -> str:
        realm = challenge.params.get("realm")
        if not realm:
            raise PullError("failed to authorize: no realm in the Bearer challenge")
        scope = challenge.params.get("scope") or f"repository:{repo}:pull"
        cache_key = (host, scope, credential.key + credential.username if credential else "")
        cached = self._tokens.get(cache_key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        params = {"scope": scope}
        if challenge.params.get("service"):
            params["service"] = challenge.params["service"]
        headers = {"Authorization": basic_authorization(credential)} if credential else {}
        try:
            async with self.session().get(realm, params=params, headers=headers) as response:
                self.requests += 1
                payload = await response.read()
                if response.status != 200:
                    what = "fetch oauth token" if credential else "fetch anonymous token"
                    raise PullError(
                        f"failed to authorize: failed to {what}: unexpected status from GET "
                        f"request to {response.url}: {response.status} {_reason(response.status)}"
                    )
        except aiohttp.ClientError as err:
            raise PullError(f"failed to authorize: {_describe(err, realm)}") from None
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

    async def _get(self, url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        try:
            async with self.session().get(
                url, headers={"Accept": ACCEPT, **headers}, allow_redirects=True
            ) as response:
                self.requests += 1
                body = await response.read()
                return response.status, dict(response.headers), body
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError, OSError) as err:
            raise PullError(f"failed to do request: {_describe(err, url)}") from None


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _describe(err: BaseException, url: str) -> str:
    """Go's net/http error shape: `Get "URL": <cause>`."""
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
    return f'Get "{url}": {cause}'
