"""Registry credentials from a pod's imagePullSecrets, as the kubelet finds them.

A `kubernetes.io/dockerconfigjson` secret holds `.dockerconfigjson`
({"auths": {KEY: {"auth": base64("user:pass")} | {"username", "password"}}}),
the older `kubernetes.io/dockercfg` holds `.dockercfg` (the auths map itself).
KEY may be a bare host, host/path, or a URL (https://index.docker.io/v1/);
the kubelet's keyring (pkg/credentialprovider) matches an image when the
key's host equals the image's registry (with '*' globs per label, and the
Docker Hub aliases treated as one) and the key's path is a prefix of the
repository; every match is tried, most specific first.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kubesim.controllers.references import DOCKER_HUB, ImageRef

_HUB_ALIASES = frozenset({DOCKER_HUB, "index.docker.io", "registry-1.docker.io"})

DOCKER_CONFIG_JSON = "kubernetes.io/dockerconfigjson"
DOCKER_CFG = "kubernetes.io/dockercfg"


@dataclass(frozen=True)
class Credential:
    key: str
    username: str
    password: str
    identity_token: str = ""


def _b64(value: str) -> str:
    try:
        return base64.b64decode(value, validate=False).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return ""


def parse_auths(auths: Mapping[str, Any]) -> list[Credential]:
    out: list[Credential] = []
    for key, entry in auths.items():
        if not isinstance(entry, Mapping):
            continue
        username = str(entry.get("username") or "")
        password = str(entry.get("password") or "")
        auth = entry.get("auth")
        if auth:
            decoded = _b64(str(auth))
            user, sep, secret = decoded.partition(":")
            if sep:
                username, password = user, secret
        token = str(entry.get("identitytoken") or "")
        if username or password or token:
            out.append(
                Credential(key=str(key), username=username, password=password, identity_token=token)
            )
    return out


def credentials_from_secret(secret: Mapping[str, Any]) -> list[Credential]:
    """The credentials in one pull secret (none if it is of another type or malformed)."""
    data = secret.get("data") or {}
    string_data = secret.get("stringData") or {}
    kind = secret.get("type")

    def field(name: str) -> str:
        if name in string_data:
            return str(string_data[name])
        if name in data:
            return _b64(str(data[name]))
        return ""

    try:
        if kind == DOCKER_CONFIG_JSON:
            document = json.loads(field(".dockerconfigjson") or "{}")
            auths = document.get("auths") if isinstance(document, dict) else None
            return parse_auths(auths or {}) if isinstance(auths, dict) else []
        if kind == DOCKER_CFG:
            document = json.loads(field(".dockercfg") or "{}")
            return parse_auths(document) if isinstance(document, dict) else []
    except json.JSONDecodeError:
        return []
    return []


def _split_key(key: str) -> tuple[str, str]:
    """A keyring key as (host[:port], path) (credentialprovider.parseSchemelessURL)."""
    text = key if "://" in key else f"https://{key}"
    parts = urlsplit(text)
    host = parts.netloc.lower()
    path = parts.path.strip("/")
    if host in _HUB_ALIASES:
        host = DOCKER_HUB
        if path in ("v1", "v2"):
            path = ""  # https://index.docker.io/v1/ is Docker Hub itself
    return host, path


def _host_matches(pattern: str, host: str) -> bool:
    pattern_name, _, pattern_port = pattern.partition(":")
    host_name, _, host_port = host.partition(":")
    if pattern_port != host_port:
        return False
    pattern_labels = pattern_name.split(".")
    host_labels = host_name.split(".")
    if len(pattern_labels) != len(host_labels):
        return False
    return all(fnmatch.fnmatchcase(h, p) for p, h in zip(pattern_labels, host_labels, strict=True))


def matching_credentials(image: ImageRef, credentials: Iterable[Credential]) -> list[Credential]:
    """Credentials whose key matches the image, most specific (longest key) first."""
    domain = image.domain.lower()
    if domain in _HUB_ALIASES:
        domain = DOCKER_HUB
    matches: list[tuple[int, Credential]] = []
    for credential in credentials:
        host, path = _split_key(credential.key)
        if not _host_matches(host, domain):
            continue
        if path and not (image.path == path or image.path.startswith(path + "/")):
            continue
        matches.append((len(host) + len(path), credential))
    matches.sort(key=lambda item: -item[0])
    return [credential for _, credential in matches]
