"""Registry client pieces: auth challenges, platform selection, error text."""

from __future__ import annotations

from kubesim.controllers.credentials import Credential
from kubesim.controllers.pulling import (
    Platform,
    basic_authorization,
    parse_challenges,
    select_platform,
    sha256_digest,
)


def test_bearer_and_basic_challenges() -> None:
    (bearer,) = parse_challenges(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:team/app:pull,push"')
    assert bearer.scheme == "Bearer"
    assert bearer.params == {"realm": "https://auth.example/token",
                             "service": "registry.example",
                             "scope": "repository:team/app:pull,push"}
    (basic,) = parse_challenges('Basic realm="Registry Realm"')
    assert (basic.scheme, basic.params) == ("Basic", {"realm": "Registry Realm"})
    both = parse_challenges('Basic realm="a", Bearer realm="https://b/token",service=x')
    assert [c.scheme for c in both] == ["Basic", "Bearer"]
    assert both[1].params["service"] == "x"
    assert parse_challenges("") == []


def test_platform_selection() -> None:
    index = {"manifests": [
        {"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64",
                                              "variant": "v8"}},
        {"digest": "sha256:armv7", "platform": {"os": "linux", "architecture": "arm",
                                                "variant": "v7"}},
        {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "sha256:att", "platform": {"os": "unknown", "architecture": "unknown"}},
    ]}
    assert select_platform(index, Platform())["digest"] == "sha256:amd"  # type: ignore[index]
    assert select_platform(index, Platform.parse("linux/arm64"))["digest"] == "sha256:arm"  # type: ignore[index]
    assert select_platform(index, Platform.parse("linux/arm/v6")) is None
    assert select_platform(index, Platform.parse("windows/amd64")) is None
    assert str(Platform.parse("linux/arm/v7")) == "linux/arm/v7"


def test_helpers() -> None:
    assert basic_authorization(Credential("h", "user", "pa:ss")) == "Basic dXNlcjpwYTpzcw=="
    assert sha256_digest(b"") == (
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
