"""A source that fails: down, silent, stalling, refusing the credentials, or serving wrong
bytes. The client gets a registry error naming the source within the configured time,
never a hang, never a password, and nothing wrong is stored."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from clusterregistry_sandbox.images import SkopeoError
from tests.integration.front.conftest import (
    ACCEPT_ALL,
    FrontWorld,
    SlowLink,
    http_session,
    pull,
    silent_server,
    source_requests,
    store_blob_file,
)
from tests.world.images import BuildImage, PushImage

TIMEOUT = 2.0  # front.sourceTimeoutSeconds in these tests
MARGIN = 3.0  # what a loaded machine may add


async def _error(session: aiohttp.ClientSession, method: str, url: str
                 ) -> tuple[int, dict[str, Any], float]:
    """Status, the distribution error entry (GET) and how long the answer took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with session.request(method, url, headers={"Accept": ACCEPT_ALL}) as response:
        body = await response.read()
        took = loop.time() - started
        if method == "HEAD":
            return response.status, {}, took
        assert response.content_type == "application/json", body
        assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        errors = (await response.json())["errors"]
        assert len(errors) == 1 and set(errors[0]) >= {"code", "message"}
        return response.status, errors[0], took


async def test_a_source_that_is_down_is_a_registry_error_naming_it(
    front_world: FrontWorld, build_image: BuildImage, push_image: PushImage,
) -> None:
    image = build_image("down", layer_sizes=[1000])
    await push_image(image, front_world.store, "nf/down", tag="1")
    front = await front_world.start_front(front={"sourceTimeoutSeconds": TIMEOUT})
    await front_world.store.stop()
    path = front_world.path("nf/down")
    layer = image.manifests[0].layers[0].digest
    async with http_session() as session:
        for method, uri in (("GET", "manifests/1"), ("GET", f"manifests/{image.digest}"),
                            ("HEAD", "manifests/1"), ("GET", f"blobs/{layer}"),
                            ("HEAD", f"blobs/{layer}")):
            status, error, took = await _error(session, method, f"{front.url}/v2/{path}/{uri}")
            assert 500 <= status < 600, (method, uri, status)
            assert took < TIMEOUT + MARGIN, (method, uri, took)
            if error:
                assert error["code"] == "UNAVAILABLE"
                assert front_world.store.host in error["message"], error
    assert not await front_world.edge_has_blobs("nf/down", [layer])
    await front_world.wait_spool_empty(front)


async def test_a_source_that_never_answers_is_a_504_within_the_timeout(
    front_world: FrontWorld,
) -> None:
    async with silent_server() as port:
        source = f"127.0.0.1:{port}"
        front_world.extra_registries.append({"host": source, "plainHttp": True})
        front = await front_world.start_front(front={"sourceTimeoutSeconds": TIMEOUT})
        path = front_world.path("nf/silent", source=source)
        blob = "sha256:" + "3" * 64
        asked = (("GET", "manifests/1"), ("HEAD", "manifests/2"),
                 ("GET", f"blobs/{blob}"), ("HEAD", f"blobs/{blob}"))
        async with http_session() as session:
            answers = await asyncio.gather(*(
                _error(session, method, f"{front.url}/v2/{path}/{uri}")
                for method, uri in asked))
            for (method, uri), (status, error, took) in zip(asked, answers, strict=True):
                assert status == 504, (method, uri, status, error)
                assert TIMEOUT * 0.9 <= took < TIMEOUT + MARGIN, (method, uri, took)
                if error:
                    assert error["code"] == "UNAVAILABLE"
                    assert source in error["message"]
                    assert f"{TIMEOUT:g}s" in error["message"]
    assert front.metric("clusterregistry_front_source_fetches_total", kind="blob",
                        outcome="timeout") >= 1
    await front_world.wait_spool_empty(front)


async def test_a_source_that_stalls_mid_blob_cuts_the_client_within_the_timeout(
    front_world: FrontWorld, slow_link: SlowLink, build_image: BuildImage,
    push_image: PushImage,
) -> None:
    image = build_image("stall", layer_sizes=[4_000_000])
    await push_image(image, front_world.store, "nf/stall", tag="1")
    front = await front_world.start_front(front={"sourceTimeoutSeconds": TIMEOUT})
    layer = image.manifests[0].layers[0]
    path = front_world.path("nf/stall", source=slow_link.host)
    slow_link.rate = 512 * 1024
    loop = asyncio.get_running_loop()
    async with http_session() as session, session.get(
        f"{front.url}/v2/{path}/blobs/{layer.digest}"
    ) as response:
        assert response.status == 200  # the headers went out with the first bytes
        await response.content.readexactly(64 * 1024)
        slow_link.flowing.clear()  # and then the source falls silent
        stalled = loop.time()
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
        assert loop.time() - stalled < TIMEOUT + MARGIN
    slow_link.flowing.set()
    assert front.metric("clusterregistry_front_source_fetches_total", kind="blob",
                        outcome="timeout") == 1
    await front_world.wait_spool_empty(front)
    assert not await front_world.edge_has_blobs("nf/stall", [layer.digest],
                                                source=slow_link.host)


async def test_bad_credentials_name_the_source_and_user_and_never_the_password(
    front_world: FrontWorld, build_image: BuildImage, push_image: PushImage,
    caplog: pytest.LogCaptureFixture, tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    image = build_image("locked", layer_sizes=[1000])
    await push_image(image, front_world.store, "nf/locked", tag="1")
    store = front_world.store
    user, real_password = store.credentials or ("", "")
    wrong = "Wr0ng-Pa55word-that-must-never-be-shown"
    front = await front_world.start_front(mirror={"registries": [
        {"host": store.host, "caFile": str(store.ca_path), "username": user,
         "password": wrong}]})
    path = front_world.path("nf/locked")
    layer = image.manifests[0].layers[0].digest
    bodies: list[str] = []
    async with http_session() as session:
        for uri in ("manifests/1", f"blobs/{layer}"):
            async with session.get(f"{front.url}/v2/{path}/{uri}",
                                   headers={"Accept": ACCEPT_ALL}) as response:
                assert response.status == 502, uri
                bodies.append(await response.text())
                error = (await response.json())["errors"][0]
            assert error["code"] == "DENIED"
            assert store.host in error["message"] and user in error["message"], error
    # a real client shows the error; the message reaches kubelet events
    with pytest.raises(SkopeoError) as failed:
        await pull(front_world.ref("nf/locked", "1", front=front), tmp_path / "pulled")
    for secret in (wrong, real_password):
        for text in (*bodies, caplog.text, failed.value.output):
            assert secret not in text
    assert front.requests("manifest", "miss_failed") >= 1
    assert source_requests(store) == {}  # nothing was served with the wrong password


async def test_a_corrupt_source_blob_is_never_served_whole_nor_stored(
    front_world: FrontWorld, build_image: BuildImage, push_image: PushImage, tmp_path: Path,
) -> None:
    image = build_image("corrupt", layer_sizes=[600_000])
    await push_image(image, front_world.store, "nf/corrupt", tag="1")
    layer = image.manifests[0].layers[0]
    data = store_blob_file(front_world.store, layer.digest)
    good = data.read_bytes()
    data.write_bytes(bytes(b ^ 0x5A for b in good))  # same length, other bytes
    front = await front_world.start_front()
    url = f"{front.url}/v2/{front_world.path('nf/corrupt')}/blobs/{layer.digest}"
    async with http_session() as session, session.get(url) as response:
        # the headers (and most bytes) went out before the digest could be checked; the
        # client must not get a whole body that it could take for the blob
        if response.status == 200:
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
    with pytest.raises(SkopeoError):
        await pull(front_world.ref("nf/corrupt", "1", front=front), tmp_path / "pulled")

    async def found_corrupt() -> bool:
        return front.metric("clusterregistry_front_source_fetches_total", kind="blob",
                            outcome="corrupt") >= 1

    await front_world.wait(found_corrupt, "the digest mismatch noticed")
    await front_world.wait_spool_empty(front)
    assert not await front_world.edge_has_blobs("nf/corrupt", [layer.digest])
    assert front.metric("clusterregistry_front_stored_blobs_total") == 0
