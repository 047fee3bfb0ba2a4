"""Pull-secret parsing and the kubelet keyring's matching rules."""

from __future__ import annotations

import base64
import json
from typing import Any

from kubesim.controllers.credentials import (
    Credential,
    credentials_from_secret,
    matching_credentials,
    parse_auths,
)
from kubesim.controllers.references import parse_reference


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(kind: str, field: str, document: Any) -> dict[str, Any]:
    return {"type": kind, "data": {field: b64(json.dumps(document))}}


def test_dockerconfigjson_auth_and_username_password() -> None:
    creds = credentials_from_secret(secret(
        "kubernetes.io/dockerconfigjson", ".dockerconfigjson",
        {"auths": {"reg.example:5000": {"auth": b64("alice:pa:ss")},
                   "other.example": {"username": "bob", "password": "pw"}}}))
    assert Credential("reg.example:5000", "alice", "pa:ss") in creds
    assert Credential("other.example", "bob", "pw") in creds


def test_auth_field_wins_over_username_password() -> None:
    (cred,) = parse_auths({"h": {"auth": b64("u:p"), "username": "x", "password": "y"}})
    assert (cred.username, cred.password) == ("u", "p")


def test_legacy_dockercfg_and_string_data() -> None:
    creds = credentials_from_secret(secret("kubernetes.io/dockercfg", ".dockercfg",
                                           {"h.example": {"auth": b64("u:p")}}))
    assert creds == [Credential("h.example", "u", "p")]
    raw = {"type": "kubernetes.io/dockerconfigjson",
           "stringData": {".dockerconfigjson": json.dumps({"auths": {"h": {"auth": b64("a:b")}}})}}
    assert credentials_from_secret(raw) == [Credential("h", "a", "b")]


def test_malformed_and_foreign_secrets_give_nothing() -> None:
    assert credentials_from_secret({"type": "Opaque", "data": {"x": b64("{}")}}) == []
    assert credentials_from_secret({"type": "kubernetes.io/dockerconfigjson",
                                    "data": {".dockerconfigjson": b64("not json")}}) == []
    assert credentials_from_secret({"type": "kubernetes.io/dockerconfigjson",
                                    "data": {".dockerconfigjson": "%%%"}}) == []


def test_matching_by_host_port_path_and_specificity() -> None:
    creds = [
        Credential("reg.example:5000", "host", "1"),
        Credential("https://reg.example:5000/team", "team", "2"),
        Credential("reg.example", "no-port", "3"),
        Credential("*.example:5000", "glob", "4"),
        Credential("reg.example:5000/other", "other", "5"),
    ]
    image = parse_reference("reg.example:5000/team/app:1")
    assert [c.username for c in matching_credentials(image, creds)] == ["team", "host", "glob"]
    assert [c.username for c in matching_credentials(parse_reference("reg.example/x"), creds)] \
        == ["no-port"]


def test_docker_hub_aliases() -> None:
    creds = [Credential("https://index.docker.io/v1/", "hub", "pw")]
    assert matching_credentials(parse_reference("nginx"), creds) == creds
    assert matching_credentials(parse_reference("docker.io/org/app"), creds) == creds
    assert matching_credentials(parse_reference("quay.io/org/app"), creds) == []
