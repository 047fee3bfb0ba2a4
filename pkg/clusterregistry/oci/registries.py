"""A client for the OCI distribution API, over aiohttp: one per registry host.

It speaks the registry protocol and nothing more: manifests, tags, the
catalog, blob reads and the three upload forms (monolithic PUT, chunked PATCH,
cross-repository mount). It owns what every caller would otherwise repeat:

- authentication (`authenticating.Authenticator`): the 401 challenge, tokens per
  scope, basic credentials;
- TLS: verification on by default, a custom CA bundle, plain HTTP only when asked;
- a connection limit per registry (the aiohttp connector's `limit`);
- retries with exponential back-off for replayable requests that met a dropped
  connection, 429 or a 5xx, honouring Retry-After. A streamed upload is never
  replayed here: the copier resumes it (`oci/copying.py`): a download with a
  Range request (`open_blob(start=)`), an upload after asking the session how
  much it holds (`upload_status`);
- translation of everything that goes wrong into `clusterregistry.errors`:
  `RegistryError` (retryable: 5xx, 429, network, 405 from a registry in read-only
  maintenance), `AuthenticationError`, `ManifestUnknownError`, `DigestMismatchError`
  and `RegistryRejectedError` (permanent). Messages name the registry, the
  repository and the user, never a password or a token.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import re
import ssl
import time
from collections.abc import AsyncIterable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from yarl import URL

from clusterregistry.errors import (
    AuthenticationError,
    DigestMismatchError,
    ManifestUnknownError,
    RegistryError,
    RegistryRejectedError,
)
from clusterregistry.oci.authenticating import DOCKER_HUB, Authenticator, Credentials
from clusterregistry.oci.manifests import ACCEPT, digest_of
from clusterregistry.oci.resuming import held_bytes

log = logging.getLogger(__name__)

__all__ = ["RegistryClient", "Retry", "ssl_context"]

_RETRY_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
_NEXT_LINK: Final = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
_ERROR_BODY_LIMIT: Final = 4096
_DIGEST_ERRORS: Final = frozenset({"DIGEST_INVALID", "SIZE_INVALID", "BLOB_UPLOAD_INVALID"})
DEFAULT_READ_BUFFER: Final = 1 << 20


@dataclass(frozen=True)
class Retry:
    """Back-off for replayable requests: `attempts` retries after the first try."""

    attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 10.0

    def delay(self, attempt: int) -> float:
        """Full-jitter exponential back-off (attempt counts from 0)."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** attempt))
        return random.uniform(ceiling / 2, ceiling)


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def ssl_context(*, ca_file: str | None = None, ca_data: str | None = None,
                verify: bool = True) -> ssl.SSLContext:
    """TLS for a registry: the system trust, plus a CA bundle when given; verification on
    unless explicitly turned off."""
    context = ssl.create_default_context(cafile=ca_file, cadata=ca_data)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _resolve(base: URL, location: str) -> URL:
    target = URL(location, encoded=True)
    return target if target.is_absolute() else base.join(target)


class RegistryClient:
    """The distribution API of one registry (`host[:port]`).

    `actions` are the repository actions asked of a token service (`pull` for a
    source, `pull,push` for a destination, `pull,push,delete` or `*` for GC).
    Use as an async context manager, or call `close()`.
    """

    def __init__(
        self,
        host: str,
        *,
        credentials: Credentials | None = None,
        plain_http: bool = False,
        ssl_ctx: ssl.SSLContext | None = None,
        actions: str = "pull",
        max_connections: int = 8,
        retry: Retry | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        read_buffer: int = DEFAULT_READ_BUFFER,
        connector: aiohttp.BaseConnector | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        self.headers = dict(headers or {})  # sent with every request
        # Docker Hub's API lives on another name than its references use
        api_host = "registry-1.docker.io" if host == DOCKER_HUB else host
        self.base = URL(f"{'http' if plain_http else 'https'}://{api_host}")
        self.actions = actions
        self.retry = retry or Retry()
        # a shared connector (one per registry host, whatever the credentials) makes
        # `max_connections` a limit per registry rather than per client
        owned = connector is None
        if connector is None:
            connector = aiohttp.TCPConnector(
                limit=max_connections, ssl=False if plain_http else (ssl_ctx or True))
        self.session = aiohttp.ClientSession(
            connector=connector,
            connector_owner=owned,
            # blobs are copied as stored: never inflate a gzip layer on the way
            auto_decompress=False,
            read_bufsize=read_buffer,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=connect_timeout, sock_read=read_timeout),
        )
        self.auth = Authenticator(host, credentials, session=self.session)
        self.requests = 0
        self.sleep = asyncio.sleep  # the back-off's clock, replaceable in tests

    async def close(self) -> None:
        await self.session.close()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"RegistryClient({self.base}, {self.auth.credentials or 'anonymous'})"

    # -- scopes ---------------------------------------------------------------------------

    def scope(self, repository: str, actions: str | None = None) -> str:
        return f"repository:{repository}:{actions or self.actions}"

    # -- the request loop -----------------------------------------------------------------

    async def request(
        self,
        method: str,
        url: URL | str,
        *,
        scopes: Iterable[str],
        what: str,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        data: Any = None,
        replayable: bool = True,
    ) -> aiohttp.ClientResponse:
        """Send with auth and retries; the caller owns (and must release) the response.

        Returns any response that is not a 401 answered or a retried failure: the
        caller checks its status (`raise_for`). `what` names the operation in errors.
        """
        target = url if isinstance(url, URL) else self.base.join(URL(url, encoded=True))
        wanted = tuple(scopes)
        attempt = 0
        answered = 0
        while True:
            sent = {**self.headers, **(headers or {})}
            authorization = self.auth.header(wanted)
            if authorization is not None:
                sent["Authorization"] = authorization
            self.requests += 1
            try:
                response = await self.session.request(
                    method, target, headers=sent, params=params, data=data)
            except (aiohttp.ClientError, TimeoutError) as exc:
                if replayable and attempt < self.retry.attempts:
                    await self.sleep(self.retry.delay(attempt))
                    attempt += 1
                    continue
                raise RegistryError(
                    f"registry {self.host}: {what}: {type(exc).__name__}: "
                    f"{exc or 'connection failed'}") from exc
            if response.status == 401 and answered < 2:
                challenge = response.headers.get("WWW-Authenticate", "")
                response.release()
                if not replayable:
                    raise RegistryError(
                        f"registry {self.host}: {what}: token expired during an upload")
                await self.auth.answer(challenge, wanted, stale=authorization)
                answered += 1
                continue
            if response.status in _RETRY_STATUSES and replayable and (
                attempt < self.retry.attempts
            ):
                delay = retry_after(response.headers.get("Retry-After"))
                response.release()
                await self.sleep(min(delay, self.retry.max_delay * 6) if delay is not None
                                 else self.retry.delay(attempt))
                attempt += 1
                continue
            return response

    async def raise_for(self, response: aiohttp.ClientResponse, what: str) -> None:
        """Translate a failed response into the error tree (reads and releases it)."""
        status = response.status
        try:
            body = await response.content.read(_ERROR_BODY_LIMIT)
        except (aiohttp.ClientError, TimeoutError):
            body = b""
        finally:
            response.release()
        codes, detail = _error_details(body)
        suffix = f" ({detail})" if detail else ""
        prefix = f"registry {self.host}: {what}"
        if status == 401:
            who = self.auth.credentials or "anonymous access"
            raise AuthenticationError(f"{prefix}: authentication failed for {who}{suffix}")
        if status == 403:
            who = self.auth.credentials or "anonymous access"
            raise AuthenticationError(f"{prefix}: access denied to {who}{suffix}")
        if status == 404 and ("MANIFEST_UNKNOWN" in codes or "NAME_UNKNOWN" in codes or (
            not codes and "manifest" in what
        )):
            raise ManifestUnknownError(f"{prefix}: not found{suffix}")
        if status == 400 and codes & _DIGEST_ERRORS:
            raise DigestMismatchError(f"{prefix}: the registry rejected the content{suffix}")
        if status == 405:
            # distribution in read-only maintenance (GC) does not register write routes
            raise RegistryError(f"{prefix}: the registry refuses writes now (HTTP 405, "
                                f"read-only maintenance?){suffix}", delay=5.0)
        if status in _RETRY_STATUSES or status >= 500:
            raise RegistryError(f"{prefix}: HTTP {status}{suffix}",
                                delay=retry_after(response.headers.get("Retry-After")))
        raise RegistryRejectedError(f"{prefix}: HTTP {status}{suffix}")

    # -- manifests ------------------------------------------------------------------------

    async def get_manifest(self, repository: str, reference: str) -> tuple[str, str, bytes]:
        """(media type, digest, exact bytes) of a manifest by tag or digest."""
        what = f"get manifest {repository}:{reference}"
        response = await self.request(
            "GET", f"/v2/{repository}/manifests/{reference}", scopes=[self.scope(repository)],
            what=what, headers={"Accept": ACCEPT})
        if response.status != 200:
            await self.raise_for(response, what)
        try:
            async with response:
                data = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RegistryError(f"registry {self.host}: {what}: {type(exc).__name__}") from exc
        media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        digest = response.headers.get("Docker-Content-Digest", "")
        if reference.startswith("sha256:"):
            digest = reference
        actual = digest_of(data)
        if digest and digest.startswith("sha256:") and digest != actual:
            raise DigestMismatchError(
                f"registry {self.host}: {what}: served bytes have digest {actual}, "
                f"expected {digest}")
        return media_type, actual, data

    async def head_manifest(self, repository: str, reference: str) -> str | None:
        """The digest of a manifest, or None when the registry has none by that reference."""
        what = f"head manifest {repository}:{reference}"
        response = await self.request(
            "HEAD", f"/v2/{repository}/manifests/{reference}",
            scopes=[self.scope(repository)], what=what, headers={"Accept": ACCEPT})
        if response.status == 404:
            response.release()
            return None
        if response.status != 200:
            await self.raise_for(response, what)
        response.release()
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:
            # HEAD without the digest header (some registries): fall back to a GET
            return (await self.get_manifest(repository, reference))[1]
        return digest

    async def put_manifest(self, repository: str, reference: str, *, media_type: str,
                           data: bytes) -> str:
        """Push a manifest's exact bytes under a tag or its digest; returns the digest."""
        what = f"put manifest {repository}:{reference}"
        response = await self.request(
            "PUT", f"/v2/{repository}/manifests/{reference}",
            scopes=[self.scope(repository)], what=what,
            headers={"Content-Type": media_type}, data=data)
        if response.status not in (200, 201):
            await self.raise_for(response, what)
        response.release()
        expected = digest_of(data)
        served = response.headers.get("Docker-Content-Digest", expected)
        if served != expected:
            raise DigestMismatchError(
                f"registry {self.host}: {what}: stored as {served}, expected {expected}")
        return expected

    async def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete a manifest by digest (untags every tag pointing at it)."""
        what = f"delete manifest {repository}@{digest}"
        response = await self.request(
            "DELETE", f"/v2/{repository}/manifests/{digest}",
            scopes=[self.scope(repository)], what=what)
        if response.status not in (200, 202):
            await self.raise_for(response, what)
        response.release()

    # -- listings -------------------------------------------------------------------------

    async def _paginate(self, path: str, key: str, *, scopes: list[str], what: str,
                        page_size: int) -> list[str]:
        found: list[str] = []
        url: URL | None = self.base.join(URL(path)).with_query({"n": str(page_size)})
        while url is not None:
            response = await self.request("GET", url, scopes=scopes, what=what)
            if response.status != 200:
                await self.raise_for(response, what)
            async with response:
                body = await response.json(content_type=None)
            found.extend(str(item) for item in (body or {}).get(key) or [])
            match = _NEXT_LINK.search(response.headers.get("Link", ""))
            url = _resolve(self.base, match.group(1)) if match else None
        return found

    async def list_tags(self, repository: str, *, page_size: int = 1000) -> list[str]:
        """Every tag of a repository ([] for a repository without tags)."""
        what = f"list tags of {repository}"
        try:
            return await self._paginate(
                f"/v2/{repository}/tags/list", "tags", scopes=[self.scope(repository)],
                what=what, page_size=page_size)
        except ManifestUnknownError:
            return []

    async def catalog(self, *, page_size: int = 1000) -> list[str]:
        """Every repository, following the Link header's pages."""
        return await self._paginate("/v2/_catalog", "repositories",
                                    scopes=["registry:catalog:*"], what="catalog",
                                    page_size=page_size)

    # -- blobs ----------------------------------------------------------------------------

    async def head_blob(self, repository: str, digest: str) -> int | None:
        """The size of a blob linked in this repository, or None."""
        what = f"head blob {repository}@{digest}"
        response = await self.request(
            "HEAD", f"/v2/{repository}/blobs/{digest}", scopes=[self.scope(repository)],
            what=what)
        if response.status == 404:
            response.release()
            return None
        if response.status != 200:
            await self.raise_for(response, what)
        response.release()
        return int(response.headers.get("Content-Length", "-1"))

    async def open_blob(self, repository: str, digest: str, *,
                        start: int = 0) -> aiohttp.ClientResponse:
        """A blob's response, to stream its body; the caller releases it.

        With `start`, asks for the rest from that byte (`Range: bytes=start-`); the answer
        is a 206 from a source that supports ranges (redirects to blob storage are
        followed, the Range with them), or a 200 with the whole blob from one that
        does not: the caller tells them apart (`resuming.body_start`)."""
        what = f"get blob {repository}@{digest}"
        response = await self.request(
            "GET", f"/v2/{repository}/blobs/{digest}", scopes=[self.scope(repository)],
            what=what, headers={"Range": f"bytes={start}-"} if start > 0 else None)
        if response.status not in (200, 206):
            await self.raise_for(response, what)
        return response

    async def delete_blob(self, repository: str, digest: str) -> None:
        what = f"delete blob {repository}@{digest}"
        response = await self.request(
            "DELETE", f"/v2/{repository}/blobs/{digest}", scopes=[self.scope(repository)],
            what=what)
        if response.status not in (200, 202):
            await self.raise_for(response, what)
        response.release()

    async def start_upload(self, repository: str, *, mount: str | None = None,
                           mount_from: str | None = None) -> tuple[bool, URL]:
        """Open an upload session; with `mount`, first ask to link the blob from another
        repository. (True, blob URL) when mounted, else (False, upload URL)."""
        what = f"start upload to {repository}"
        scopes = [self.scope(repository)]
        params: dict[str, str] | None = None
        if mount and mount_from:
            params = {"mount": mount, "from": mount_from}
            if mount_from != repository:
                scopes.append(self.scope(mount_from, "pull"))
        response = await self.request(
            "POST", f"/v2/{repository}/blobs/uploads/", scopes=scopes, what=what,
            params=params, headers={"Content-Length": "0"})
        if response.status not in (201, 202):
            await self.raise_for(response, what)
        response.release()
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(f"registry {self.host}: {what}: no Location in the answer")
        return response.status == 201, _resolve(self.base, location)

    async def put_blob(self, location: URL, *, repository: str, digest: str, size: int,
                       body: AsyncIterable[bytes | memoryview] | bytes) -> None:
        """Finish an upload: the whole body in one PUT (or none after PATCHes, size 0)."""
        what = f"upload blob {repository}@{digest}"
        response = await self.request(
            "PUT", location.update_query({"digest": digest}),
            scopes=[self.scope(repository)], what=what,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            data=body, replayable=isinstance(body, bytes))
        if response.status not in (201, 204):
            await self.raise_for(response, what)
        response.release()

    async def patch_blob(self, location: URL, *, repository: str, start: int, length: int,
                         body: AsyncIterable[bytes | memoryview] | bytes) -> URL:
        """Append one chunk to an upload; returns the location for the next request."""
        what = f"upload chunk to {repository}"
        response = await self.request(
            "PATCH", location, scopes=[self.scope(repository)], what=what,
            headers={"Content-Type": "application/octet-stream",
                     "Content-Length": str(length),
                     "Content-Range": f"{start}-{start + length - 1}"},
            data=body, replayable=isinstance(body, bytes))
        if response.status != 202:
            await self.raise_for(response, what)
        response.release()
        return _resolve(self.base, response.headers.get("Location") or str(location))

    async def upload_status(self, location: URL, *, repository: str) -> tuple[int, URL] | None:
        """How many bytes an upload session holds, and the location to continue it at;
        None when the session is gone (404: expired, cancelled, or, in distribution,
        invalidated by a request cut mid-body, see `oci/copying.py`)."""
        what = f"upload status in {repository}"
        response = await self.request("GET", location, scopes=[self.scope(repository)],
                                      what=what)
        if response.status == 404:
            response.release()
            return None
        if response.status not in (200, 204):
            await self.raise_for(response, what)
        response.release()
        held = held_bytes(response.headers.get("Range"))
        return held, _resolve(self.base, response.headers.get("Location") or str(location))

    async def cancel_upload(self, location: URL, *, repository: str) -> None:
        """Abandon an upload session; best effort (the registry purges stale ones anyway)."""
        try:
            response = await self.request(
                "DELETE", location, scopes=[self.scope(repository)],
                what=f"cancel upload to {repository}", replayable=False)
            response.release()
        except (RegistryError, AuthenticationError) as exc:
            log.debug("cancelling an upload failed: %s", exc)

    async def ping(self) -> None:
        """GET /v2/: reachable, and the credentials (if any) are good."""
        response = await self.request("GET", "/v2/", scopes=[], what="ping")
        if response.status != 200:
            await self.raise_for(response, "ping")
        response.release()


def _error_details(body: bytes) -> tuple[set[str], str]:
    """Error codes and a short message from a distribution error body."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return set(), ""
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, list):
        return set(), ""
    codes = {str(e.get("code", "")) for e in errors if isinstance(e, dict)}
    messages = [f"{e.get('code', '')}: {e.get('message', '')}" for e in errors
                if isinstance(e, dict)]
    return codes, "; ".join(messages)[:300]
