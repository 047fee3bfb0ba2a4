"""Registry authentication: anonymous, basic, and bearer tokens from a challenge.

The distribution token protocol: a request without (or with a stale) token gets
401 with `WWW-Authenticate: Bearer realm="...",service="...",scope="..."`; the
client asks the realm for a token for the scopes it needs (`repository:<repo>:
pull,push`), with basic credentials when it has any, and sends the token as
`Authorization: Bearer`. Tokens are reused for their scopes until shortly before
they expire. A `Basic` challenge means the credentials go on every request.

Credentials come from `kubernetes.io/dockerconfigjson` secrets and from the
mirror's settings. They never appear in a repr, a log line, a metric label or an
error message: errors name the registry and the user, never the password.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from clusterregistry.errors import AuthenticationError, RegistryError

log = logging.getLogger(__name__)

DOCKER_HUB: str = "docker.io"
_DOCKER_HUB_ALIASES = frozenset({
    "docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com",
})
# default lifetime of a token that does not say (the distribution token spec: 60 s)
_DEFAULT_TOKEN_SECONDS = 60.0
_CHALLENGE_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')


@dataclass(frozen=True)
class Credentials:
    """A user and password (or an OAuth2 refresh token, ACR's "identity token")."""

    username: str
    password: str = field(repr=False)
    identity_token: str = field(default="", repr=False)

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def __str__(self) -> str:
        return f"user {self.username!r}"


def registry_key(host: str) -> str:
    """The key a docker config uses for a registry, reduced to `host[:port]`."""
    text = host.strip()
    for scheme in ("https://", "http://"):
        if text.startswith(scheme):
            text = text[len(scheme):]
    text = text.split("/", 1)[0].lower()
    return DOCKER_HUB if text in _DOCKER_HUB_ALIASES else text


def parse_docker_config(data: bytes | str | Mapping[str, Any]) -> dict[str, Credentials]:
    """Registry -> credentials from a `.dockerconfigjson` (or legacy `.dockercfg`) document.

    Raises ValueError naming the registry entry that is malformed (never its content).
    """
    document: Any = data if isinstance(data, Mapping) else json.loads(data)
    if not isinstance(document, Mapping):
        raise ValueError("a docker config must be a JSON object")
    auths = document.get("auths", document)
    if not isinstance(auths, Mapping):
        raise ValueError("a docker config's auths must be an object")
    found: dict[str, Credentials] = {}
    for registry, entry in auths.items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"docker config entry {registry!r} is not an object")
        username = str(entry.get("username") or "")
        password = str(entry.get("password") or "")
        encoded = entry.get("auth")
        if encoded:
            try:
                decoded = base64.b64decode(str(encoded), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise ValueError(f"docker config entry {registry!r}: auth is not base64") from exc
            user, sep, secret = decoded.partition(":")
            if not sep:
                raise ValueError(f"docker config entry {registry!r}: auth is not user:password")
            username, password = username or user, password or secret
        token = str(entry.get("identitytoken") or "")
        if username or token:
            found[registry_key(str(registry))] = Credentials(
                username=username or "<token>", password=password, identity_token=token)
    return found


class Keychain:
    """Credentials per registry host; later additions win over earlier ones."""

    def __init__(self, entries: Mapping[str, Credentials] | None = None) -> None:
        self._entries: dict[str, Credentials] = {}
        if entries:
            self.update(entries)

    def update(self, entries: Mapping[str, Credentials]) -> None:
        for host, credentials in entries.items():
            self._entries[registry_key(host)] = credentials

    def lookup(self, host: str) -> Credentials | None:
        return self._entries.get(registry_key(host))

    def __repr__(self) -> str:
        return f"Keychain({sorted(self._entries)})"


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "bearer" or "basic"
    params: dict[str, str]


def parse_challenges(header: str) -> list[Challenge]:
    """The challenges in one WWW-Authenticate value (`Bearer realm="..",scope=".."`)."""
    challenges: list[Challenge] = []
    rest = header.strip()
    while rest:
        scheme, _, rest = rest.partition(" ")
        params: dict[str, str] = {}
        while rest:
            match = _CHALLENGE_PARAM.match(rest)
            if match is None:
                break
            quoted, bare = match.group(2), match.group(3)
            params[match.group(1).lower()] = (
                re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare or "")
            rest = rest[match.end():]
        challenges.append(Challenge(scheme=scheme.strip().lower(), params=params))
        rest = rest.lstrip(", ")
    return [c for c in challenges if c.scheme]


@dataclass
class _Token:
    value: str
    expires: float


class Authenticator:
    """The Authorization header for one registry, learnt from its challenges.

    Starts anonymous; the first 401 says which scheme the registry wants.
    Concurrent requests needing the same scopes share one token fetch.
    """

    def __init__(
        self,
        host: str,
        credentials: Credentials | None,
        *,
        session: aiohttp.ClientSession,
        clock: Any = time.monotonic,
    ) -> None:
        self.host = host
        self.credentials = credentials
        self._session = session
        self._clock = clock
        self._scheme = ""  # "", "basic", "bearer"
        self._bearer: Challenge | None = None
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}
        self.token_fetches = 0

    def header(self, scopes: Iterable[str]) -> str | None:
        """The header to send now, or None (anonymous, or no token yet for these scopes)."""
        if self._scheme == "basic" and self.credentials is not None:
            return self.credentials.basic()
        if self._scheme == "bearer":
            token = self._tokens.get(tuple(sorted(scopes)))
            if token is not None and token.expires > self._clock():
                return f"Bearer {token.value}"
        return None

    async def answer(self, www_authenticate: str, scopes: Iterable[str], *,
                     stale: str | None) -> None:
        """Prepare a header after a 401; AuthenticationError when nothing more can be tried.

        `stale` is the header the refused request carried: refused basic credentials
        fail at once; a refused bearer token is refetched once by the caller.
        """
        challenges = parse_challenges(www_authenticate)
        key = tuple(sorted(scopes))
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        if bearer is not None and "realm" in bearer.params:
            self._scheme, self._bearer = "bearer", bearer
            lock = self._locks.setdefault(key, asyncio.Lock())
            async with lock:
                current = self.header(key)
                if current is not None and current != stale:
                    return  # another request fetched a fresh token meanwhile
                self._tokens[key] = await self._fetch_token(bearer, key)
            return
        if any(c.scheme == "basic" for c in challenges):
            if self.credentials is None:
                raise AuthenticationError(
                    f"registry {self.host} requires credentials and none are configured")
            if stale is not None and stale.startswith("Basic "):
                raise AuthenticationError(
                    f"registry {self.host} refused the credentials of {self.credentials}")
            self._scheme = "basic"
            return
        raise AuthenticationError(
            f"registry {self.host} answered 401 with an unsupported challenge "
            f"{[c.scheme for c in challenges] or 'none'}")

    async def _fetch_token(self, challenge: Challenge, scopes: tuple[str, ...]) -> _Token:
        realm = challenge.params["realm"]
        service = challenge.params.get("service", "")
        wanted = list(scopes)
        # the registry's own scope hint is honoured when the caller did not name any
        if not wanted and challenge.params.get("scope"):
            wanted = challenge.params["scope"].split(" ")
        credentials = self.credentials
        self.token_fetches += 1
        try:
            if credentials is not None and credentials.identity_token:
                form = {"grant_type": "refresh_token", "refresh_token":
                        credentials.identity_token, "service": service,
                        "client_id": "clusterregistry", "scope": " ".join(wanted)}
                response_cm = self._session.post(realm, data=form)
            else:
                params: list[tuple[str, str]] = [("service", service)] if service else []
                params += [("scope", scope) for scope in wanted]
                headers = {"Authorization": credentials.basic()} if credentials else {}
                response_cm = self._session.get(realm, params=params, headers=headers)
            async with response_cm as response:
                if response.status in (401, 403):
                    who = str(credentials) if credentials else "anonymous access"
                    raise AuthenticationError(
                        f"registry {self.host}: the token service refused {who} "
                        f"(HTTP {response.status})")
                if response.status >= 500 or response.status == 429:
                    raise RegistryError(
                        f"registry {self.host}: token service answered HTTP {response.status}")
                if response.status != 200:
                    raise AuthenticationError(
                        f"registry {self.host}: token service answered HTTP {response.status}")
                body = await response.json(content_type=None)
        except aiohttp.ClientError as exc:
            raise RegistryError(
                f"registry {self.host}: token service unreachable ({type(exc).__name__})"
            ) from exc
        except (ValueError, TypeError) as exc:
            raise AuthenticationError(
                f"registry {self.host}: token service sent no JSON") from exc
        if not isinstance(body, dict):
            raise AuthenticationError(f"registry {self.host}: token service sent no token")
        value = body.get("token") or body.get("access_token")
        if not value:
            raise AuthenticationError(f"registry {self.host}: token service sent no token")
        lifetime = float(body.get("expires_in") or _DEFAULT_TOKEN_SECONDS)
        # renew a little early, so a token never expires between header() and the request
        return _Token(value=str(value), expires=self._clock() + max(lifetime * 0.9,
                                                                     lifetime - 30.0))
