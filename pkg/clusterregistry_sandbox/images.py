"""Test images made on the spot, written as OCI image layouts and pushed with skopeo.

There is no Docker engine on these machines and no outside registry to pull
from, and clusterregistry's promise (a copy is byte-identical, digests stay
valid) must be checked on every manifest flavour a user has: OCI and Docker
v2 schema 2, single-platform and multi-arch. So images are built here from
seeded pseudo-random layers (real gzip-compressed tars, so registries and
clients treat them as usual), described exactly (every digest and size), and
pushed with skopeo, an independent client, with `--preserve-digests`.

The same seed gives the same bytes, hence the same digests, on every run;
two images built with the same seed share their layers (same platform,
position and size), which is what garbage-collection tests need.

Docker-format images are written to the OCI layout too (index.json carries
their real media types), but skopeo 1.9's `oci:` transport cannot push them
unchanged: it ignores index.json entries whose media type is not an OCI one,
and an OCI-typed entry over a Docker manifest list makes it refuse to write
the list without converting it. They are therefore pushed from a `dir:`
transport view of the same blobs (hard links), which keeps every byte.
"""

from __future__ import annotations

import enum
import gzip
import hashlib
import io
import json
import os
import random
import re
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterregistry_sandbox.supervising import ProcessError, find_executable, run_command

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_MANIFEST",
    "Blob",
    "BuiltImage",
    "ImageBuilder",
    "ImageFormat",
    "Manifest",
    "Platform",
    "SkopeoError",
    "find_skopeo",
    "push",
    "skopeo_copy",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

_REF_NAME = "org.opencontainers.image.ref.name"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ImageFormat(enum.StrEnum):
    """Which family of media types an image uses."""

    OCI = "oci"
    DOCKER = "docker"

    @property
    def manifest_type(self) -> str:
        return OCI_MANIFEST if self is ImageFormat.OCI else DOCKER_MANIFEST

    @property
    def index_type(self) -> str:
        return OCI_INDEX if self is ImageFormat.OCI else DOCKER_MANIFEST_LIST

    @property
    def config_type(self) -> str:
        return OCI_CONFIG if self is ImageFormat.OCI else DOCKER_CONFIG

    @property
    def layer_type(self) -> str:
        return OCI_LAYER if self is ImageFormat.OCI else DOCKER_LAYER


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """`os/arch[/variant]`, e.g. `linux/arm64/v8`."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"not a platform (os/arch[/variant]): {text!r}")
        return cls(
            os=parts[0], architecture=parts[1], variant=parts[2] if len(parts) == 3 else None
        )

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base

    def descriptor_field(self) -> dict[str, str]:
        """The `platform` object of an index entry."""
        field = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            field["variant"] = self.variant
        return field


@dataclass(frozen=True)
class Blob:
    """A content-addressed blob: a layer or a config."""

    digest: str
    size: int
    media_type: str

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Manifest:
    """One single-platform image manifest and the blobs it references."""

    digest: str
    size: int
    media_type: str
    platform: Platform
    config: Blob
    layers: tuple[Blob, ...]

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (self.config, *self.layers)


@dataclass(frozen=True)
class BuiltImage:
    """An image written to an OCI layout under a tag, described down to every blob.

    `digest` is the top-level one: the index (or manifest list) for a
    multi-arch image, else the single manifest, which is then `manifests[0]`.
    """

    name: str
    layout: Path
    tag: str
    digest: str
    media_type: str
    size: int
    manifests: tuple[Manifest, ...]
    is_index: bool
    source_ref: str

    @property
    def oci_ref(self) -> str:
        """The OCI layout reference to this image: `oci:LAYOUT:TAG`."""
        return f"oci:{self.layout}:{self.tag}"

    @property
    def blob_dir(self) -> Path:
        return self.layout / "blobs" / "sha256"

    def read_blob(self, digest: str) -> bytes:
        """The bytes of any blob or manifest of this image."""
        return (self.blob_dir / digest.removeprefix("sha256:")).read_bytes()

    @property
    def platform_digests(self) -> dict[str, str]:
        """`os/arch[/variant]` -> manifest digest."""
        return {str(manifest.platform): manifest.digest for manifest in self.manifests}

    @property
    def blobs(self) -> tuple[Blob, ...]:
        """Every config and layer blob, each once, in manifest order."""
        seen: dict[str, Blob] = {}
        for manifest in self.manifests:
            for blob in manifest.blobs:
                seen.setdefault(blob.digest, blob)
        return tuple(seen.values())

    def manifest_for(self, platform: str | Platform) -> Manifest:
        wanted = str(platform)
        for manifest in self.manifests:
            if str(manifest.platform) == wanted:
                return manifest
        raise KeyError(wanted)


def _digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _canonical_json(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def random_layer(*, seed: str, size: int, directory: str = "data") -> tuple[bytes, bytes]:
    """A reproducible layer: (gzip-compressed tar, uncompressed tar).

    The tar holds one directory and one file of `size` pseudo-random bytes
    (incompressible, so the blob is about `size` bytes), with fixed owners
    and times so the same seed gives the same bytes.
    """
    if size < 0:
        raise ValueError("layer size must be >= 0")
    payload = random.Random(seed).randbytes(size)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        folder = tarfile.TarInfo(directory)
        folder.type = tarfile.DIRTYPE
        folder.mode = 0o755
        archive.addfile(folder)
        member = tarfile.TarInfo(f"{directory}/payload.bin")
        member.size = size
        member.mode = 0o644
        archive.addfile(member, io.BytesIO(payload))
    uncompressed = buffer.getvalue()
    return gzip.compress(uncompressed, compresslevel=1, mtime=0), uncompressed


class ImageBuilder:
    """Builds images into OCI layouts under `root`, one layout directory per image name."""

    def __init__(self, root: Path, *, seed: int = 0) -> None:
        self.root = root
        self.seed = seed

    def layout_for(self, name: str) -> Path:
        return self.root / (_UNSAFE.sub("_", name).strip("_") or "image")

    def build(
        self,
        name: str,
        *,
        tag: str = "latest",
        image_format: ImageFormat | str = ImageFormat.OCI,
        platforms: Sequence[Platform | str] = ("linux/amd64",),
        layer_sizes: Sequence[int] = (4096,),
        index: bool | None = None,
        seed: int | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> BuiltImage:
        """Write an image and return its description.

        - `platforms`: one manifest each; more than one makes a multi-arch
          index (OCI index or Docker manifest list); `index=True` forces an
          index even for one platform.
        - `layer_sizes`: payload bytes of each layer, bottom first.
        - `seed` (default: the builder's) fixes the layer bytes; `name` and
          `labels` go into the config, so images differing only in name share
          layers but not manifests.
        Building the same name again adds (or replaces) a tag in its layout.
        """
        kind = ImageFormat(image_format)
        wanted = [p if isinstance(p, Platform) else Platform.parse(p) for p in platforms]
        if not wanted:
            raise ValueError("an image needs at least one platform")
        if len(set(wanted)) != len(wanted):
            raise ValueError("platforms must be distinct")
        make_index = len(wanted) > 1 if index is None else index
        if len(wanted) > 1 and not make_index:
            raise ValueError("several platforms need an index")
        layout = self.layout_for(name)
        self._init_layout(layout)
        base_seed = self.seed if seed is None else seed
        manifests = tuple(
            self._write_manifest(
                layout,
                kind=kind,
                name=name,
                platform=platform,
                layer_sizes=layer_sizes,
                seed=base_seed,
                labels=labels or {},
            )
            for platform in wanted
        )
        if make_index:
            document = {
                "schemaVersion": 2,
                "mediaType": kind.index_type,
                "manifests": [
                    {
                        "mediaType": manifest.media_type,
                        "digest": manifest.digest,
                        "size": manifest.size,
                        "platform": manifest.platform.descriptor_field(),
                    }
                    for manifest in manifests
                ],
            }
            data = _canonical_json(document)
            top_digest = self._write_blob(layout, data)
            top_size, top_type = len(data), kind.index_type
        else:
            top_digest, top_size = manifests[0].digest, manifests[0].size
            top_type = manifests[0].media_type
        self._tag(layout, tag=tag, digest=top_digest, size=top_size, media_type=top_type)
        if kind is ImageFormat.OCI:
            source_ref = f"oci:{layout}:{tag}"
        else:
            view = self._write_dir_view(
                layout, name=name, tag=tag, top_digest=top_digest, manifests=manifests
            )
            source_ref = f"dir:{view}"
        return BuiltImage(
            name=name,
            layout=layout,
            tag=tag,
            digest=top_digest,
            media_type=top_type,
            size=top_size,
            manifests=manifests,
            is_index=make_index,
            source_ref=source_ref,
        )

    def _write_dir_view(
        self,
        layout: Path,
        *,
        name: str,
        tag: str,
        top_digest: str,
        manifests: Sequence[Manifest],
    ) -> Path:
        """A containers-image `dir:` copy of one tag, blobs hard-linked from the layout."""
        view = self.root / "dir-views" / layout.name / (_UNSAFE.sub("_", tag) or "tag")
        view.mkdir(parents=True, exist_ok=True)
        blobs = layout / "blobs" / "sha256"

        def place(digest: str, target: Path) -> None:
            source = blobs / digest.removeprefix("sha256:")
            target.unlink(missing_ok=True)
            try:
                os.link(source, target)
            except OSError:
                target.write_bytes(source.read_bytes())

        (view / "version").write_text("Directory Transport Version: 1.1\n")
        place(top_digest, view / "manifest.json")
        for manifest in manifests:
            if manifest.digest != top_digest:
                hexdigest = manifest.digest.removeprefix("sha256:")
                place(manifest.digest, view / f"{hexdigest}.manifest.json")
            for blob in manifest.blobs:
                place(blob.digest, view / blob.digest.removeprefix("sha256:"))
        return view

    def _write_manifest(
        self,
        layout: Path,
        *,
        kind: ImageFormat,
        name: str,
        platform: Platform,
        layer_sizes: Sequence[int],
        seed: int,
        labels: Mapping[str, str],
    ) -> Manifest:
        layers: list[Blob] = []
        diff_ids: list[str] = []
        for position, size in enumerate(layer_sizes):
            compressed, uncompressed = random_layer(
                seed=f"{seed}/{platform}/{position}/{size}", size=size, directory=f"layer{position}"
            )
            digest = self._write_blob(layout, compressed)
            layers.append(Blob(digest=digest, size=len(compressed), media_type=kind.layer_type))
            diff_ids.append(_digest(uncompressed))
        config_document: dict[str, Any] = {
            "architecture": platform.architecture,
            "os": platform.os,
            "created": "1970-01-01T00:00:00Z",
            "config": {
                "Cmd": ["/bin/true"],
                "Labels": {"org.opencontainers.image.title": name, **labels},
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [
                {"created": "1970-01-01T00:00:00Z", "created_by": f"clusterregistry test layer {i}"}
                for i in range(len(layers))
            ],
        }
        if platform.variant:
            config_document["variant"] = platform.variant
        config_data = _canonical_json(config_document)
        config = Blob(
            digest=self._write_blob(layout, config_data),
            size=len(config_data),
            media_type=kind.config_type,
        )
        manifest_document = {
            "schemaVersion": 2,
            "mediaType": kind.manifest_type,
            "config": config.descriptor(),
            "layers": [layer.descriptor() for layer in layers],
        }
        data = _canonical_json(manifest_document)
        return Manifest(
            digest=self._write_blob(layout, data),
            size=len(data),
            media_type=kind.manifest_type,
            platform=platform,
            config=config,
            layers=tuple(layers),
        )

    @staticmethod
    def _init_layout(layout: Path) -> None:
        (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        marker = layout / "oci-layout"
        if not marker.exists():
            marker.write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        index = layout / "index.json"
        if not index.exists():
            index.write_bytes(
                _canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
            )

    @staticmethod
    def _write_blob(layout: Path, data: bytes) -> str:
        digest = _digest(data)
        path = layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
        if not path.exists():
            path.write_bytes(data)
        return digest

    @staticmethod
    def _tag(layout: Path, *, tag: str, digest: str, size: int, media_type: str) -> None:
        index_path = layout / "index.json"
        document = json.loads(index_path.read_text())
        entries = [
            entry
            for entry in document.get("manifests", [])
            if entry.get("annotations", {}).get(_REF_NAME) != tag
        ]
        entries.append(
            {
                "mediaType": media_type,
                "digest": digest,
                "size": size,
                "annotations": {_REF_NAME: tag},
            }
        )
        document["manifests"] = entries
        index_path.write_bytes(_canonical_json(document))


class SkopeoError(ProcessError):
    """skopeo exited non-zero; the message carries its output."""

    def __init__(self, message: str, *, output: str, returncode: int) -> None:
        super().__init__(message, log_tail=output[-4000:])
        self.output = output
        self.returncode = returncode


def find_skopeo() -> str:
    return find_executable("skopeo", env_var="SKOPEO_BIN")


_TRANSPORTS = frozenset(
    {"oci", "oci-archive", "dir", "docker-archive", "docker-daemon", "containers-storage"}
)


def _transport_ref(reference: str) -> str:
    """Give a bare `HOST/REPO:TAG` the `docker://` transport; keep any explicit transport."""
    if "://" in reference or reference.split(":", 1)[0] in _TRANSPORTS:
        return reference
    return f"docker://{reference}"


async def skopeo_copy(
    source: str,
    destination: str,
    *,
    src_credentials: tuple[str, str] | None = None,
    src_tls_verify: bool = True,
    src_cert_dir: Path | None = None,
    dest_credentials: tuple[str, str] | None = None,
    dest_tls_verify: bool = True,
    dest_cert_dir: Path | None = None,
    all_images: bool = True,
    preserve_digests: bool = True,
    timeout: float = 300.0,
) -> str:
    """`skopeo copy` between two references; a bare `HOST/REPO:TAG` means `docker://`.

    Runs without a signature policy check (test images are unsigned) and
    returns skopeo's output; raises SkopeoError when it fails.
    """
    argv = [find_skopeo(), "--insecure-policy", "copy", "--retry-times", "0"]
    if all_images:
        argv.append("--all")
    if preserve_digests:
        argv.append("--preserve-digests")
    for prefix, credentials, verify, cert_dir in (
        ("src", src_credentials, src_tls_verify, src_cert_dir),
        ("dest", dest_credentials, dest_tls_verify, dest_cert_dir),
    ):
        if not verify:
            argv.append(f"--{prefix}-tls-verify=false")
        if credentials is not None:
            argv += [f"--{prefix}-creds", f"{credentials[0]}:{credentials[1]}"]
        if cert_dir is not None:
            argv += [f"--{prefix}-cert-dir", str(cert_dir)]
    argv += [_transport_ref(source), _transport_ref(destination)]
    result = await run_command(argv, timeout=timeout)
    if not result.ok:
        raise SkopeoError(
            f"skopeo copy {source} -> {destination} failed with status {result.returncode}",
            output=result.output,
            returncode=result.returncode,
        )
    return result.output


async def push(
    image: BuiltImage | str,
    *,
    dest_ref: str,
    credentials: tuple[str, str] | None = None,
    tls_verify: bool = True,
    ca_dir: Path | None = None,
    timeout: float = 300.0,
) -> str:
    """Push an image (a BuiltImage, or a skopeo source like `oci:DIR:TAG`) to `HOST/REPO:TAG`.

    Every platform of an index is copied, and digests are preserved (skopeo
    fails rather than convert). `tls_verify=False` allows plain HTTP;
    `ca_dir` is a directory of `*.crt` CA files. Returns skopeo's output.
    """
    source = image.source_ref if isinstance(image, BuiltImage) else image
    return await skopeo_copy(
        source,
        dest_ref,
        dest_credentials=credentials,
        dest_tls_verify=tls_verify,
        dest_cert_dir=ca_dir,
        timeout=timeout,
    )
