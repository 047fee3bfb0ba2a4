"""The sample images the sandbox's artifact store is filled with.

A network function's images come in every flavour a publisher uses, and the
copy must keep each byte-identical, so the sandbox holds one of each: a
multi-arch OCI index (the user-plane function), a Docker v2 schema 2 image
(the session manager, built by an older toolchain) and a single-platform
OCI image (the init job). They are built on the spot from seeded layers
(the same bytes, hence the same digests, on every run) and pushed with
skopeo, an independent client, over TLS with basic auth.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clusterregistry_sandbox.images import BuiltImage, ImageBuilder, ImageFormat, push
from clusterregistry_sandbox.registries import Registry

__all__ = ["SAMPLES", "PushedSample", "Sample", "fill"]


@dataclass(frozen=True)
class Sample:
    """One image of the demo network function, as its publisher built it."""

    repository: str
    tag: str
    image_format: ImageFormat
    platforms: tuple[str, ...]
    layer_sizes: tuple[int, ...]
    description: str


@dataclass(frozen=True)
class PushedSample:
    """A sample in the artifact store: where it is and what its top-level digest is."""

    sample: Sample
    reference: str  # HOST:PORT/REPOSITORY:TAG, the reference pods use
    digest: str
    size: int  # bytes of every manifest and blob it has
    built: BuiltImage


SAMPLES: tuple[Sample, ...] = (
    Sample(
        repository="nf/upf",
        tag="1.4.2",
        image_format=ImageFormat.OCI,
        platforms=("linux/amd64", "linux/arm64"),
        layer_sizes=(384 * 1024, 96 * 1024),
        description="multi-arch OCI index (linux/amd64, linux/arm64)",
    ),
    Sample(
        repository="nf/smf",
        tag="2.1.0",
        image_format=ImageFormat.DOCKER,
        platforms=("linux/amd64",),
        layer_sizes=(256 * 1024, 64 * 1024),
        description="Docker v2 schema 2 image",
    ),
    Sample(
        repository="nf/amf-init",
        tag="0.9.1",
        image_format=ImageFormat.OCI,
        platforms=("linux/amd64",),
        layer_sizes=(128 * 1024,),
        description="single-platform OCI image",
    ),
    # not part of the demo's network function: the tests deploy it to see a new image
    # arrive while a part of the system is down
    Sample(
        repository="nf/nrf",
        tag="3.0.0",
        image_format=ImageFormat.OCI,
        platforms=("linux/amd64",),
        layer_sizes=(64 * 1024,),
        description="single-platform OCI image (a late arrival)",
    ),
)


def _total_size(image: BuiltImage) -> int:
    size = sum(blob.size for blob in image.blobs)
    size += sum(manifest.size for manifest in image.manifests)
    return size + (image.size if image.is_index else 0)


async def fill(
    store: Registry,
    work_dir: Path,
    *,
    samples: Sequence[Sample] = SAMPLES,
    seed: int = 7,
    reference_host: str | None = None,
) -> list[PushedSample]:
    """Build every sample and push it to `store` (TLS and basic auth as configured).

    The references name `reference_host` (default the store's own): the address the edge
    knows the store by, a flaky link's in front of it (`System.store_host`)."""
    builder = ImageBuilder(work_dir, seed=seed)

    async def one(index: int, sample: Sample) -> PushedSample:
        built = builder.build(
            sample.repository,
            tag=sample.tag,
            image_format=sample.image_format,
            platforms=sample.platforms,
            layer_sizes=sample.layer_sizes,
            # distinct layers per image: GC's bytes freed are then each image's own
            seed=seed * 100 + index,
        )
        reference = f"{reference_host or store.host}/{sample.repository}:{sample.tag}"
        await push(
            built,
            dest_ref=f"{store.host}/{sample.repository}:{sample.tag}",
            credentials=store.credentials,
            ca_dir=store.cert_dir,
        )
        return PushedSample(
            sample=sample,
            reference=reference,
            digest=built.digest,
            size=_total_size(built),
            built=built,
        )

    return list(await asyncio.gather(*(one(i, s) for i, s in enumerate(samples))))
