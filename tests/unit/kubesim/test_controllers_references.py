"""Image reference parsing (docker/distribution's ParseNormalizedNamed + default tag)."""

from __future__ import annotations

import pytest

from kubesim.controllers.kubeleting import default_pull_policy
from kubesim.controllers.references import InvalidReferenceError, parse_reference

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("image", "domain", "path", "tag", "digest"),
    [
        ("nginx", "docker.io", "library/nginx", "latest", None),
        ("nginx:1.25", "docker.io", "library/nginx", "1.25", None),
        ("bitnami/redis", "docker.io", "bitnami/redis", "latest", None),
        ("docker.io/nginx", "docker.io", "library/nginx", "latest", None),
        ("index.docker.io/library/nginx:1", "docker.io", "library/nginx", "1", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/app:v1", "localhost:5000", "app", "v1", None),
        ("127.0.0.1:5000/team/app/sub:v1", "127.0.0.1:5000", "team/app/sub", "v1", None),
        ("ghcr.io/org/app@" + DIGEST, "ghcr.io", "org/app", None, DIGEST),
        ("ghcr.io/org/app:1.0@" + DIGEST, "ghcr.io", "org/app", "1.0", DIGEST),
        ("registry:5000/app", "registry:5000", "app", "latest", None),
        ("a-b.c/x__y/z.w-1", "a-b.c", "x__y/z.w-1", "latest", None),
        ("[::1]:5000/app:v", "[::1]:5000", "app", "v", None),
    ],
)
def test_parse(image: str, domain: str, path: str, tag: str | None, digest: str | None) -> None:
    ref = parse_reference(image)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)


def test_string_forms() -> None:
    ref = parse_reference("nginx")
    assert str(ref) == "docker.io/library/nginx:latest"
    assert ref.name == "docker.io/library/nginx"
    assert ref.api_host == "registry-1.docker.io"
    assert ref.reference == "latest"
    assert ref.with_digest(DIGEST) == f"docker.io/library/nginx@{DIGEST}"
    pinned = parse_reference(f"localhost:5000/app:1@{DIGEST}")
    assert pinned.reference == DIGEST
    assert pinned.api_host == "localhost:5000"
    assert str(pinned) == f"localhost:5000/app:1@{DIGEST}"


@pytest.mark.parametrize(
    "image",
    ["", " nginx", "nginx:", "nginx:tag with space", "Team/App", "team/App:1",
     "app@sha256:short", "app:-bad", "a//b", "app/", "nginx@@" + DIGEST],
)
def test_invalid(image: str) -> None:
    with pytest.raises(InvalidReferenceError):
        parse_reference(image)


def test_uppercase_repository_message() -> None:
    with pytest.raises(InvalidReferenceError, match="must be lowercase"):
        parse_reference("team/App")


def test_default_pull_policy() -> None:
    assert default_pull_policy(parse_reference("nginx")) == "Always"
    assert default_pull_policy(parse_reference("nginx:latest")) == "Always"
    assert default_pull_policy(parse_reference("nginx:1")) == "IfNotPresent"
    assert default_pull_policy(parse_reference(f"nginx@{DIGEST}")) == "IfNotPresent"
