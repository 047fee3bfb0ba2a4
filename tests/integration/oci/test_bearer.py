"""Bearer tokens against a real registry with token auth and a token server in the test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clusterregistry.errors import AuthenticationError
from clusterregistry.oci.authenticating import Credentials
from clusterregistry.oci.copying import Copier
from clusterregistry.oci.registries import RegistryClient
from clusterregistry_sandbox.registries import Registry
from tests.integration.oci.conftest import client_for, inspect_digest
from tests.integration.oci.tokens import TokenRegistry, TokenServer
from tests.world.images import BuildImage, PushImage

pytestmark = pytest.mark.integration

PASSWORD = "t0ken-s3rver-password"


@pytest.fixture
async def token_registry(tmp_path: Path) -> AsyncIterator[TokenRegistry]:
    server = TokenServer(tmp_path / "tokens", username="mirror", password=PASSWORD)
    await server.start()
    registry = TokenRegistry(tmp_path / "token-registry", server)
    try:
        await registry.start()
        yield registry
    finally:
        await registry.stop()
        await server.stop()


async def test_copies_through_bearer_challenges_on_both_sides_and_reuses_tokens(
    secure_registry: Registry, registry: Registry, token_registry: TokenRegistry,
    build_image: BuildImage, push_image: PushImage,
) -> None:
    image = build_image("nf/upf", platforms=("linux/amd64", "linux/arm64"),
                        layer_sizes=(20_000, 3000))
    await push_image(image, secure_registry, "nf/upf")
    bearer = RegistryClient(token_registry.host, plain_http=True, actions="pull,push",
                            credentials=Credentials("mirror", PASSWORD))
    async with client_for(secure_registry) as src, bearer:
        # destination side: push through the challenge
        pushed = await Copier().copy(src, "nf/upf", "latest", bearer, "nf/upf", tag="latest")
    assert pushed.digest == image.digest and pushed.blobs_copied == len(image.blobs)
    server = token_registry.server
    # one token per scope set (the repository's pull,push), reused for every request after
    assert server.issued == 1, server.scopes_asked
    assert server.scopes_asked == [["repository:nf/upf:pull,push"]]

    source = RegistryClient(token_registry.host, plain_http=True,
                            credentials=Credentials("mirror", PASSWORD))
    async with source, client_for(registry, actions="pull,push") as dst:
        # source side: pull through the challenge
        pulled = await Copier().copy(source, "nf/upf", "latest", dst, "back/nf/upf",
                                     tag="latest")
    assert pulled.digest == image.digest
    assert await inspect_digest(registry, f"{registry.host}/back/nf/upf:latest") == image.digest


async def test_wrong_credentials_fail_clearly_without_the_password(
    token_registry: TokenRegistry,
) -> None:
    wrong = "wr0ng-pa55word-value"
    client = RegistryClient(token_registry.host, plain_http=True,
                            credentials=Credentials("mirror", wrong))
    async with client:
        with pytest.raises(AuthenticationError) as caught:
            await client.get_manifest("nf/upf", "latest")
    text = f"{caught.value} {caught.value!r} {caught.value.__cause__!r}"
    assert "refused user 'mirror'" in str(caught.value) and token_registry.host in text
    assert wrong not in text and PASSWORD not in text
    assert token_registry.server.refused == 1
