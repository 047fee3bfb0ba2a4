"""Manifest media types and parsing: what an image is made of, for the mirror and for GC.

A registry serves four kinds of manifest clusterregistry copies: OCI image
manifests and indexes, Docker v2 schema 2 manifests and manifest lists. An
index (or list) names child manifests, one per platform; an image manifest
names a config blob and layer blobs. Manifests are kept as the exact bytes the
registry served: their digest is the sha256 of those bytes, so re-encoding one
would change every `@sha256:` pin that refers to it.

Docker schema 1 (signed or not) is refused: it has no content-addressable config,
distribution 2.8 no longer accepts it on push, and Docker removed it in 2019.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Final

from clusterregistry.errors import DigestMismatchError, UnsupportedManifestError

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1: Final = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED: Final = "application/vnd.docker.distribution.manifest.v1+prettyjws"

INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
SCHEMA1_TYPES: Final = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
# What a client sends in Accept. Distribution rewrites an index into one child for a client
# that does not accept index types, so all four are always sent.
ACCEPT: Final = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

# Layers a registry must not be asked for: Windows base layers served from `urls` elsewhere.
_NON_DISTRIBUTABLE: Final = frozenset({
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
})

SHA256_PREFIX: Final = "sha256:"


def digest_of(data: bytes) -> str:
    return SHA256_PREFIX + hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    """The digest if it is a well-formed sha256 digest, else ValueError."""
    algorithm, _, hexpart = digest.partition(":")
    if algorithm != "sha256" or len(hexpart) != 64 or not all(
        c in "0123456789abcdef" for c in hexpart
    ):
        raise ValueError(f"{digest!r} is not a sha256 digest")
    return digest


@dataclass(frozen=True)
class Descriptor:
    """A reference to content by digest: a child manifest, a config or a layer."""

    media_type: str
    digest: str
    size: int
    # `os/arch[/variant]` of an index entry, "" elsewhere
    platform: str = ""
    urls: tuple[str, ...] = ()

    @property
    def distributable(self) -> bool:
        """False for foreign layers, which registries never hold."""
        return not (self.media_type in _NON_DISTRIBUTABLE and self.urls)


@dataclass(frozen=True)
class Manifest:
    """One manifest: its exact bytes, and the descriptors it points to."""

    media_type: str
    digest: str
    data: bytes
    # an index's child manifests
    children: tuple[Descriptor, ...] = ()
    # an image manifest's config and layers
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = field(default=())

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """Config then layers, the blobs a registry must hold before the manifest is pushed."""
        found = ((self.config,) if self.config else ()) + self.layers
        return tuple(blob for blob in found if blob.distributable)


def platform_of(value: Any) -> str:
    """`os/arch[/variant]` from an index entry's `platform` object ("" without one)."""
    if not isinstance(value, dict):
        return ""
    parts = [str(value.get("os", "")), str(value.get("architecture", ""))]
    if value.get("variant"):
        parts.append(str(value["variant"]))
    return "/".join(parts) if all(parts[:2]) else ""


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise UnsupportedManifestError(f"{where} is not a descriptor object")
    try:
        digest = check_digest(str(value["digest"]))
        size = int(value["size"])
    except (KeyError, ValueError, TypeError) as exc:
        raise UnsupportedManifestError(f"{where}: bad or missing digest/size ({exc})") from exc
    if size < 0:
        raise UnsupportedManifestError(f"{where}: negative size")
    urls = value.get("urls") or ()
    return Descriptor(
        media_type=str(value.get("mediaType", "")),
        digest=digest,
        size=size,
        platform=platform_of(value.get("platform")),
        urls=tuple(str(url) for url in urls) if isinstance(urls, list) else (),
    )


def parse(data: bytes, *, media_type: str = "", digest: str | None = None) -> Manifest:
    """A manifest from the bytes a registry served and its Content-Type.

    `digest` (the one asked for, or Docker-Content-Digest) is checked against the
    bytes: DigestMismatchError when they differ. UnsupportedManifestError for
    schema 1, an unknown media type, or a document that is not a manifest.
    """
    actual = digest_of(data)
    if digest is not None and digest.startswith(SHA256_PREFIX) and digest != actual:
        raise DigestMismatchError(f"manifest bytes have digest {actual}, expected {digest}")
    header_type = media_type.split(";", 1)[0].strip()
    if header_type in SCHEMA1_TYPES:
        raise UnsupportedManifestError(
            "Docker schema 1 manifests are not supported (convert the image to schema 2 or OCI)"
        )
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsupportedManifestError(f"manifest is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise UnsupportedManifestError("manifest is not a JSON object")
    if document.get("schemaVersion") == 1:
        raise UnsupportedManifestError(
            "Docker schema 1 manifests are not supported (convert the image to schema 2 or OCI)"
        )
    kind = str(document.get("mediaType") or "")
    if not kind:
        # OCI makes mediaType optional; the Content-Type, else the shape, decides
        if header_type in INDEX_TYPES | IMAGE_TYPES:
            kind = header_type
        elif "manifests" in document:
            kind = OCI_INDEX
        elif "config" in document:
            kind = OCI_MANIFEST
    if kind in INDEX_TYPES:
        entries = document.get("manifests")
        if not isinstance(entries, list):
            raise UnsupportedManifestError(f"{kind} without a manifests list")
        children = tuple(
            _descriptor(entry, f"manifests[{n}]") for n, entry in enumerate(entries)
        )
        return Manifest(media_type=kind, digest=actual, data=data, children=children)
    if kind in IMAGE_TYPES:
        layers = document.get("layers")
        if not isinstance(layers, list):
            raise UnsupportedManifestError(f"{kind} without a layers list")
        return Manifest(
            media_type=kind,
            digest=actual,
            data=data,
            config=_descriptor(document.get("config"), "config"),
            layers=tuple(_descriptor(layer, f"layers[{n}]") for n, layer in enumerate(layers)),
        )
    raise UnsupportedManifestError(f"unsupported manifest media type {kind or header_type!r}")
