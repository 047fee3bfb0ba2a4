"""Fixtures: build test images into OCI layouts and push them to a registry with skopeo."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from clusterregistry_sandbox.images import BuiltImage, ImageBuilder, push
from clusterregistry_sandbox.registries import Registry

BuildImage = Callable[..., BuiltImage]
PushImage = Callable[..., Awaitable[str]]


@pytest.fixture
def image_builder(tmp_path: Path) -> ImageBuilder:
    """An ImageBuilder writing under tmp_path (seed 0, so digests repeat across runs)."""
    return ImageBuilder(tmp_path / "images", seed=0)


@pytest.fixture
def build_image(image_builder: ImageBuilder) -> BuildImage:
    """`build_image(name, *, tag=..., image_format=..., platforms=..., layer_sizes=...)`."""
    return image_builder.build


@pytest.fixture
def push_image() -> PushImage:
    """`await push_image(image, registry, repository, tag=None) -> "HOST/REPO:TAG"`.

    Pushes with skopeo using the registry's credentials and CA; digests kept.
    """

    async def push_to(
        image: BuiltImage, registry: Registry, repository: str, tag: str | None = None
    ) -> str:
        reference = f"{registry.host}/{repository}:{tag or image.tag}"
        await push(
            image,
            dest_ref=reference,
            credentials=registry.credentials,
            tls_verify=registry.tls,
            ca_dir=registry.cert_dir,
        )
        return reference

    return push_to
