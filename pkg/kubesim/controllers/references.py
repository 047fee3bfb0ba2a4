"""Container image references, parsed as containerd and the kubelet parse them.

`nginx` means docker.io/library/nginx:latest; the first path component is a
registry host only if it contains '.' or ':' or is 'localhost' (and has no
upper-case letters), as in docker/distribution's ParseNormalizedNamed. A
reference may carry a tag, a digest or both (the digest wins when pulling).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
# containerd talks to Docker Hub's API under this name.
DOCKER_HUB_API = "registry-1.docker.io"
_LEGACY_HUB = "index.docker.io"

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_DOMAIN = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*"
    r"(?::[0-9]+)?$|^\[[0-9a-fA-F:.]+\](?::[0-9]+)?$"
)
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_SHA256 = re.compile(r"^sha256:[a-f0-9]{64}$")
MAX_NAME_LENGTH = 255


class InvalidReferenceError(ValueError):
    """The image string is not a valid reference ('invalid reference format')."""


@dataclass(frozen=True)
class ImageRef:
    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The fully qualified repository name, e.g. docker.io/library/nginx."""
        return f"{self.domain}/{self.path}"

    @property
    def reference(self) -> str:
        """What the manifest endpoint is asked for: the digest if any, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.domain == DOCKER_HUB else self.domain

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def with_digest(self, digest: str) -> str:
        """`<repo>@sha256:...`: the kubelet's imageID / a repo digest."""
        return f"{self.name}@{digest}"


def _split_domain(name: str) -> tuple[str, str]:
    head, sep, rest = name.partition("/")
    if not sep or (
        not any(ch in head for ch in ".:") and head != "localhost" and head.lower() == head
    ):
        domain, remainder = DOCKER_HUB, name
    else:
        domain, remainder = head, rest
    if domain == _LEGACY_HUB:
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in remainder:
        remainder = f"library/{remainder}"
    return domain, remainder


def parse_reference(image: str) -> ImageRef:
    """docker/distribution's ParseNormalizedNamed plus the kubelet's default `latest` tag."""
    if not image or image != image.strip():
        raise InvalidReferenceError("invalid reference format")
    rest, _, digest = image.partition("@")
    if "@" in image and not _DIGEST.match(digest):
        raise InvalidReferenceError("invalid reference format")
    tag: str | None = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidReferenceError("invalid reference format")
    if not rest or len(rest) > MAX_NAME_LENGTH:
        raise InvalidReferenceError("invalid reference format")
    domain, path = _split_domain(rest)
    if not _DOMAIN.match(domain):
        raise InvalidReferenceError("invalid reference format")
    for component in path.split("/"):
        if not _COMPONENT.match(component):
            if component.lower() != component and _COMPONENT.match(component.lower()):
                raise InvalidReferenceError(
                    "invalid reference format: repository name must be lowercase"
                )
            raise InvalidReferenceError("invalid reference format")
    if tag is None and not digest:
        tag = "latest"
    return ImageRef(domain=domain, path=path, tag=tag, digest=digest or None)


def is_sha256_digest(value: str) -> bool:
    return bool(_SHA256.match(value))
