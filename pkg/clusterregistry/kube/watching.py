"""List and watch of any resource, raw and fast, with kube-apiserver's error semantics.

kubernetes-asyncio's typed models are far too slow for a watch of 100,000
pods, so this module asks the API server through the client's transport
(its TLS, tokens and refresh) with `_preload_content=False`, and decodes
with msgspec into the partial views of kube.objects.

Errors: an expired resourceVersion is `GoneError` (HTTP 410, or a 410 ERROR event
inside a watch stream, which is how kube-apiserver reports compaction), a
missing resource type is `ResourceMissingError` (404: a CRD not installed yet),
transport failures and 5xx are RetryableError.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aiohttp
import msgspec
from kubernetes_asyncio import client

from clusterregistry.errors import PermanentError, RetryableError
from clusterregistry.kube.objects import (
    Bookmark,
    RawList,
    RawWatchEvent,
    Status,
    TypedWatchEvent,
)

T = TypeVar("T")

_list_decoder = msgspec.json.Decoder(RawList)
_event_decoder = msgspec.json.Decoder(RawWatchEvent)
_status_decoder = msgspec.json.Decoder(Status)
_bookmark_decoder = msgspec.json.Decoder(Bookmark)


class GoneError(RetryableError):
    """410: the resourceVersion is older than the API server's history; relist."""


class ResourceMissingError(RetryableError):
    """404 on a collection: the resource type is not served (yet)."""


@dataclass(frozen=True)
class Target:
    """A resource collection across all namespaces."""

    group: str
    version: str
    plural: str

    @property
    def path(self) -> str:
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        return f"{prefix}/{self.plural}"


@dataclass(frozen=True, slots=True)
class WatchEvent(Generic[T]):
    type: str  # ADDED | MODIFIED | DELETED | BOOKMARK
    object: T | None  # the decoded object; None for a BOOKMARK
    resource_version: str  # of a BOOKMARK; "" for object events (read it from the object)


async def _request(
    api: client.ApiClient, target: Target, query: list[tuple[str, str]], *, timeout: float
) -> Any:
    try:
        return await api.call_api(
            target.path, "GET", query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"], _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(total=None, sock_connect=10,
                                                   sock_read=timeout),
        )
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise RetryableError(f"GET {target.path}: {exc}") from exc


async def _raise_for(response: Any, target: Target) -> None:
    if response.status < 300:
        return
    body = await response.read()
    response.release()
    try:
        status = _status_decoder.decode(body)
        message = status.message
    except msgspec.DecodeError:
        message = body[:200].decode(errors="replace")
    text = f"GET {target.path}: {response.status} {message}"
    if response.status == 410:
        raise GoneError(text)
    if response.status == 404:
        raise ResourceMissingError(text)
    if response.status in (401, 403):
        raise PermanentError(text)
    raise RetryableError(text)


async def list_page(
    api: client.ApiClient, target: Target, *, limit: int = 500, continue_token: str = "",
    timeout: float = 60.0,
) -> tuple[list[bytes], str, str]:
    """One page: (items as raw JSON, the list's resourceVersion, the continue token)."""
    query = [("limit", str(limit))]
    if continue_token:
        query.append(("continue", continue_token))
    response = await _request(api, target, query, timeout=timeout)
    await _raise_for(response, target)
    try:
        body = await response.read()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise RetryableError(f"GET {target.path}: {exc}") from exc
    finally:
        response.release()
    page = _list_decoder.decode(body)
    return [bytes(item) for item in page.items], page.metadata.resourceVersion, \
        page.metadata.continue_


_typed_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def _typed(object_type: type[T]) -> msgspec.json.Decoder[TypedWatchEvent[T]]:
    decoder = _typed_decoders.get(object_type)
    if decoder is None:
        decoder = _typed_decoders[object_type] = msgspec.json.Decoder(
            TypedWatchEvent[object_type])  # type: ignore[valid-type]
    return decoder


async def watch(
    api: client.ApiClient, target: Target, *, resource_version: str, object_type: type[T],
    timeout_seconds: int = 300, read_timeout: float = 90.0,
) -> AsyncIterator[WatchEvent[T]]:
    """Events after `resource_version`, with bookmarks, until the server ends the stream.

    Each line is decoded once, straight into `object_type` (a partial view): an ERROR's
    Status or a BOOKMARK's metadata is read again from the same line, which is rare."""
    typed = _typed(object_type)
    query = [("watch", "1"), ("resourceVersion", resource_version),
             ("allowWatchBookmarks", "true"), ("timeoutSeconds", str(timeout_seconds))]
    response = await _request(api, target, query, timeout=read_timeout)
    await _raise_for(response, target)
    try:
        while True:
            try:
                line = await response.content.readline()
            except (aiohttp.ClientError, OSError, TimeoutError, asyncio.IncompleteReadError) \
                    as exc:
                raise RetryableError(f"watch {target.path}: {exc}") from exc
            if not line:
                return
            if line == b"\n":
                continue
            try:
                decoded = typed.decode(line)
            except msgspec.ValidationError:
                decoded = None  # not this type: an ERROR's Status, read below
            if decoded is not None and decoded.type not in ("ERROR", "BOOKMARK"):
                yield WatchEvent(decoded.type, decoded.object, "")
                continue
            event = _event_decoder.decode(line)
            if event.type == "ERROR":
                status = _status_decoder.decode(event.object)
                text = f"watch {target.path}: {status.code} {status.reason}: {status.message}"
                if status.code == 410:
                    raise GoneError(text)
                raise RetryableError(text)
            if event.type == "BOOKMARK":
                rv = _bookmark_decoder.decode(event.object).metadata.resourceVersion
                yield WatchEvent("BOOKMARK", None, rv)
                continue
            raise RetryableError(f"watch {target.path}: cannot decode a {event.type} event")
    finally:
        response.release()
