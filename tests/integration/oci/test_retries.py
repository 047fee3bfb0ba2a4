"""Retries against a scripted HTTP server: 429 with Retry-After, 5xx, a dropped connection,
and a clear retryable error when they do not stop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from clusterregistry.errors import RegistryError
from clusterregistry.oci import manifests
from clusterregistry.oci.registries import RegistryClient, Retry
from clusterregistry_sandbox.supervising import free_port

pytestmark = pytest.mark.integration

MANIFEST = b'{"schemaVersion":2,"mediaType":"' + manifests.OCI_INDEX.encode() + \
    b'","manifests":[]}'
Step = Callable[[web.Request], web.StreamResponse]


def _drop(request: web.Request) -> web.StreamResponse:
    assert request.transport is not None
    request.transport.close()  # the connection goes away before any answer
    return web.Response(status=500)


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[str, list[Step]]]:
    steps: list[Step] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        step = steps.pop(0) if steps else (lambda _: web.Response(status=503))
        return step(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"127.0.0.1:{port}", steps
    finally:
        await runner.cleanup()


async def test_retries_honour_retry_after_and_survive_drops(
    scripted: tuple[str, list[Step]],
) -> None:
    host, steps = scripted
    steps += [
        lambda _: web.Response(status=429, headers={"Retry-After": "3"}),
        lambda _: web.Response(status=503),
        _drop,
        lambda _: web.Response(body=MANIFEST, content_type=manifests.OCI_INDEX),
    ]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async with RegistryClient(host, plain_http=True,
                              retry=Retry(attempts=4, base_delay=0.5)) as client:
        client.sleep = sleep
        media_type, digest, data = await client.get_manifest("r", "t")
    assert (media_type, data, digest) == (manifests.OCI_INDEX, MANIFEST,
                                          manifests.digest_of(MANIFEST))
    assert slept[0] == 3.0  # the server's Retry-After, not our back-off
    assert not steps  # all four answers were served, the dropped connection included
    # the drop is retried at once by aiohttp on a reused connection, or after our back-off
    assert len(slept) in (2, 3) and all(0.25 <= s <= 2.0 for s in slept[1:])


async def test_a_registry_that_keeps_failing_is_a_retryable_error(
    scripted: tuple[str, list[Step]],
) -> None:
    host, steps = scripted
    steps += [lambda _: web.Response(status=503, headers={"Retry-After": "7"})] * 3

    async def sleep(seconds: float) -> None:
        pass

    async with RegistryClient(host, plain_http=True, retry=Retry(attempts=2)) as client:
        client.sleep = sleep
        with pytest.raises(RegistryError, match="HTTP 503") as caught:
            await client.get_manifest("r", "t")
    assert caught.value.delay == 7.0 and client.requests == 3
