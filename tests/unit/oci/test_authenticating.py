"""Challenges, docker configs and credentials: parsed exactly, never shown."""

from __future__ import annotations

import base64
import json

import pytest

from clusterregistry.oci.authenticating import (
    Credentials,
    Keychain,
    parse_challenges,
    parse_docker_config,
    registry_key,
)
from clusterregistry.oci.registries import Retry, retry_after


def test_bearer_and_basic_challenges() -> None:
    [bearer] = parse_challenges(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:nf/upf:pull,push"')
    assert bearer.scheme == "bearer"
    assert bearer.params == {"realm": "https://auth.example.com/token",
                             "service": "registry.example.com",
                             "scope": "repository:nf/upf:pull,push"}
    both = parse_challenges('Basic realm="x y", Bearer realm=https://t/token,error=insufficient')
    assert [(c.scheme, c.params["realm"]) for c in both] == [("basic", "x y"),
                                                            ("bearer", "https://t/token")]
    assert parse_challenges("") == []


def test_docker_config_entries_by_normalised_host() -> None:
    auth = base64.b64encode(b"robot:pa:ss").decode()
    config = json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": auth},
        "myacr.azurecr.io": {"username": "00000000-0000-0000-0000-000000000000",
                             "identitytoken": "refresh"},
        "Registry.Example.com:5000/path": {"username": "u", "password": "p"},
    }})
    found = parse_docker_config(config)
    assert found["docker.io"] == Credentials("robot", "pa:ss")
    assert found["myacr.azurecr.io"].identity_token == "refresh"
    assert found["registry.example.com:5000"] == Credentials("u", "p")
    legacy = parse_docker_config({"quay.io": {"auth": base64.b64encode(b"a:b").decode()}})
    assert legacy == {"quay.io": Credentials("a", "b")}
    assert registry_key("registry-1.docker.io") == "docker.io"


@pytest.mark.parametrize("document, message", [
    ('{"auths": {"r.io": {"auth": "%%%"}}}', "not base64"),
    ('{"auths": {"r.io": {"auth": "' + base64.b64encode(b"nocolon").decode() + '"}}}',
     "not user:password"),
    ('{"auths": {"r.io": "s3cr3t"}}', "not an object"),
    ('{"auths": []}', "must be an object"),
])
def test_bad_docker_configs_name_the_entry_not_the_secret(document: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_docker_config(document)
    assert "s3cr3t" not in str(caught.value)


def test_credentials_never_show_their_password() -> None:
    credentials = Credentials("robot", "hunter2", identity_token="tok3n")
    for text in (repr(credentials), str(credentials), repr(Keychain({"r.io": credentials}))):
        assert "hunter2" not in text and "tok3n" not in text
    assert Keychain({"https://R.io/v2/": credentials}).lookup("r.io") is credentials


def test_retry_after_and_back_off() -> None:
    assert retry_after("7") == 7.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412475.0) == 5.0
    assert retry_after(None) is None and retry_after("soon") is None
    retry = Retry(base_delay=1.0, max_delay=4.0)
    assert all(0.5 <= retry.delay(0) <= 1.0 for _ in range(20))
    assert all(2.0 <= retry.delay(9) <= 4.0 for _ in range(20))
