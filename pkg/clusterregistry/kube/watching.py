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
from typing import Any, TypeVar

import aiohttp
import msgspec
from kubernetes_asyncio import client

from clusterregistry.errors import PermanentError, RetryableError
from clusterregistry.kube.objects import (
    Bookmark,
    RawWatchEvent,
    Status,
    TypedList,
    TypedWatchEvent,
)

T = TypeVar("T")

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


# an ADDED, MODIFIED or DELETED event with its object, or a BOOKMARK: no object, and the
# resourceVersion to resume from
WatchEvent = TypedWatchEvent


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
    api: client.ApiClient, target: Target, *, object_type: type[T], limit: int = 500,
    continue_token: str = "", timeout: float = 60.0,
) -> tuple[list[T], str, str]:
    """One page: (items decoded into `object_type`, the list's resourceVersion, the
    continue token)."""
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
    try:
        page = _typed_list(object_type).decode(body)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise RetryableError(f"GET {target.path}: undecodable list: {exc}") from exc
    return page.items, page.metadata.resourceVersion, page.metadata.continue_


_typed_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def _typed(object_type: type[T]) -> msgspec.json.Decoder[TypedWatchEvent[T]]:
    decoder = _typed_decoders.get(object_type)
    if decoder is None:
        decoder = _typed_decoders[object_type] = msgspec.json.Decoder(
            TypedWatchEvent[object_type])  # type: ignore[valid-type]
    return decoder


def _typed_list(object_type: type[T]) -> msgspec.json.Decoder[TypedList[T]]:
    key = ("list", object_type)
    decoder = _typed_decoders.get(key)
    if decoder is None:
        decoder = _typed_decoders[key] = msgspec.json.Decoder(
            TypedList[object_type])  # type: ignore[valid-type]
    return decoder


_OBJECT_EVENTS = frozenset(("ADDED", "MODIFIED", "DELETED"))


def _decode_line(line: bytes, typed: msgspec.json.Decoder[TypedWatchEvent[T]],
                 target: Target) -> WatchEvent[T]:
    """One event line, the careful way: ERROR, BOOKMARK or an object event."""
    try:
        decoded = typed.decode(line)
    except msgspec.ValidationError:
        decoded = None  # not this type: an ERROR's Status, read below
    except msgspec.DecodeError as exc:
        raise RetryableError(f"watch {target.path}: not JSON: {line[:200]!r}") from exc
    if decoded is not None and decoded.type in _OBJECT_EVENTS and decoded.object is not None:
        return decoded
    try:
        event = _event_decoder.decode(line)
        if event.type == "ERROR":
            status = _status_decoder.decode(event.object)
            text = f"watch {target.path}: {status.code} {status.reason}: {status.message}"
            if status.code == 410:
                raise GoneError(text)
            raise RetryableError(text)
        if event.type == "BOOKMARK":
            rv = _bookmark_decoder.decode(event.object).metadata.resourceVersion
            return WatchEvent("BOOKMARK", None, rv)
    except msgspec.DecodeError as exc:
        raise RetryableError(f"watch {target.path}: not a watch event: {exc}") from exc
    raise RetryableError(f"watch {target.path}: cannot decode a {event.type} event")


async def watch(
    api: client.ApiClient, target: Target, *, resource_version: str, object_type: type[T],
    timeout_seconds: int = 300, read_timeout: float = 90.0,
) -> AsyncIterator[list[WatchEvent[T]]]:
    """Events after `resource_version`, with bookmarks, until the server ends the stream;
    in batches: every complete event line that has arrived, in order.

    A batch is decoded in one call straight into `object_type` (a partial view), which at
    tens of thousands of events a second costs a fraction of a line-by-line read. A batch
    holding anything but object events (an ERROR's Status does not fit the view, a
    BOOKMARK has no object) is read again line by line, which is rare."""
    typed = _typed(object_type)
    query = [("watch", "1"), ("resourceVersion", resource_version),
             ("allowWatchBookmarks", "true"), ("timeoutSeconds", str(timeout_seconds))]
    response = await _request(api, target, query, timeout=read_timeout)
    await _raise_for(response, target)
    rest = b""
    try:
        while True:
            try:
                chunk = await response.content.readany()
            except (aiohttp.ClientError, OSError, TimeoutError, asyncio.IncompleteReadError) \
                    as exc:
                raise RetryableError(f"watch {target.path}: {exc}") from exc
            if not chunk:
                if rest.strip():  # the server closed the stream in the middle of an event
                    raise RetryableError(f"watch {target.path}: stream ended mid-event")
                return
            data = rest + chunk if rest else chunk
            end = data.rfind(b"\n") + 1
            if end == 0:
                rest = data
                continue
            rest = data[end:]
            lines = data[:end] if end < len(data) else data
            try:
                batch: list[WatchEvent[T]] | None = typed.decode_lines(lines)
            except msgspec.DecodeError:  # ValidationError included: read line by line
                batch = None
            if batch is not None and all(event.type in _OBJECT_EVENTS
                                         and event.object is not None for event in batch):
                if batch:
                    yield batch
                continue
            batch = []
            fault: Exception | None = None
            for line in lines.split(b"\n"):
                if line.strip():
                    try:
                        batch.append(_decode_line(line, typed, target))
                    except RetryableError as exc:  # after the events before it
                        fault = exc
                        break
            if batch:
                yield batch
            if fault is not None:
                raise fault
    finally:
        response.release()
