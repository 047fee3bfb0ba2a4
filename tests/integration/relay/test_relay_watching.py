"""kube.watching against a crafted watch stream: batches decoded in one call must give
exactly what a line-by-line read would, however the bytes arrive, and every stream fault
must be a clear error rather than a lost or invented event."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client

from clusterregistry.errors import RetryableError
from clusterregistry.kube.objects import Pod
from clusterregistry.kube.watching import GoneError, Target, WatchEvent, watch
from clusterregistry_sandbox.supervising import free_port

pytestmark = pytest.mark.integration

PODS = Target("", "v1", "pods")


def _pod_event(kind: str, i: int) -> dict[str, Any]:
    return {"type": kind, "object": {
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": f"p{i}", "namespace": "ns", "uid": f"u{i}",
                     "resourceVersion": str(100 + i)},
        "spec": {"containers": [{"name": "c", "image": f"img:{i}",
                                 "env": [{"name": "SECRET", "value": "never read"}]}]},
        "status": {"phase": "Running"}}}


def _bookmark(rv: str) -> dict[str, Any]:
    return {"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
                                           "metadata": {"resourceVersion": rv}}}


def _gone() -> dict[str, Any]:
    return {"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "too old resource version: 1 (50)", "reason": "Expired", "code": 410}}


def _lines(*events: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(event).encode() + b"\n" for event in events)


async def _serve(body: bytes, pieces: list[int]) -> AsyncIterator[client.ApiClient]:
    """A server whose watch response is `body`, written in pieces of these sizes (the rest
    in one); then an API client for it."""

    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.query["watch"] == "1"
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        at = 0
        for size in [*pieces, len(body)]:
            if at >= len(body):
                break
            await response.write(body[at:at + size])
            at += size
            await asyncio.sleep(0)  # let the pieces leave separately where they can
        return response

    app = web.Application()
    app.router.add_get(PODS.path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    api = client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{port}"))
    try:
        yield api
    finally:
        await api.close()
        await runner.cleanup()


async def _read(body: bytes, pieces: list[int]) -> tuple[list[WatchEvent[Pod]], Exception | None]:
    events: list[WatchEvent[Pod]] = []
    async for api in _serve(body, pieces):
        try:
            async for batch in watch(api, PODS, resource_version="1", object_type=Pod):
                assert batch, "an empty batch"
                events.extend(batch)
        except Exception as exc:  # what the stream ended with, for the test to judge
            return events, exc
    return events, None


def _summary(events: list[WatchEvent[Pod]]) -> list[tuple[str, str]]:
    return [(e.type, e.object.metadata.name if e.object else e.resource_version)
            for e in events]


@pytest.mark.parametrize("pieces", [[], [1, 1, 7, 300, 3], [13] * 300, [2048, 1]])
async def test_batches_hold_every_event_in_order_however_the_bytes_arrive(
        pieces: list[int]) -> None:
    body = (_lines(_pod_event("ADDED", 0), _pod_event("ADDED", 1)) + b"\n"
            + _lines(_bookmark("150"), _pod_event("MODIFIED", 1), _pod_event("DELETED", 0)))
    events, error = await _read(body, pieces)
    assert error is None
    assert _summary(events) == [("ADDED", "p0"), ("ADDED", "p1"), ("BOOKMARK", "150"),
                                ("MODIFIED", "p1"), ("DELETED", "p0")]
    pod = events[3].object
    assert pod is not None
    assert (pod.metadata.uid, pod.metadata.resourceVersion, pod.spec.containers[0].image,
            pod.status.phase) == ("u1", "101", "img:1", "Running")


@pytest.mark.parametrize("pieces", [[], [40] * 100])
async def test_an_expired_version_inside_the_stream_is_gone_after_the_events_before_it(
        pieces: list[int]) -> None:
    events, error = await _read(_lines(_pod_event("ADDED", 0), _gone()), pieces)
    assert isinstance(error, GoneError)
    assert "410" in str(error) and "too old" in str(error)
    assert _summary(events) == [("ADDED", "p0")]


async def test_a_stream_cut_in_the_middle_of_an_event_is_retryable() -> None:
    body = _lines(_pod_event("ADDED", 0), _pod_event("ADDED", 1))
    events, error = await _read(body[:-40], [])
    assert isinstance(error, RetryableError) and not isinstance(error, GoneError)
    assert "mid-event" in str(error)
    assert _summary(events) == [("ADDED", "p0")]


async def test_a_line_that_is_not_json_is_retryable_not_a_crash() -> None:
    body = _lines(_pod_event("ADDED", 0)) + b'{"type": "ADDED", "object": {\n'
    events, error = await _read(body, [])
    assert isinstance(error, RetryableError) and "not JSON" in str(error)
    assert _summary(events) == [("ADDED", "p0")]
