"""Registry clients (mirror, front, copy): a connection pool per registry, credentials per request.

A request's credentials are the pod's imagePullSecrets (what the kubelet would
have used) over the artifact-store credentials in the settings. Clients are
kept per (registry, credentials) so tokens are reused between requests, and
share one connector per registry, so `maxConnections` bounds the whole process.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from clusterregistry.config import MirrorSettings, RegistryAccess, parse_quantity, parse_rate
from clusterregistry.errors import ConfigError
from clusterregistry.oci.authenticating import Credentials, Keychain, parse_docker_config
from clusterregistry.oci.copying import CopyOptions
from clusterregistry.oci.pacing import Pacer
from clusterregistry.oci.registries import (
    DEFAULT_READ_BUFFER,
    RegistryClient,
    Retry,
    ssl_context,
)

_DESTINATION_ACTIONS = "pull,push"
# A paced reader takes bytes from its socket only as fast as the limit allows, but the kernel
# keeps accepting them up to the receive window (autotuned to several MiB per connection) and
# aiohttp up to its read buffer: the link would run that far ahead of the limit at the start
# of every connection. A fixed window (which turns autotuning off) keeps the link near the
# limit: a quarter second of the limit over the connections to one registry, which still
# carries the limit at round trips up to 250 ms, between 64 KiB and 4 MiB per connection.
_WINDOW_SECONDS = 0.25
_WINDOW_MIN, _WINDOW_MAX = 64 * 1024, 4 * 1024 * 1024


def _receive_window(rate: int, connections: int) -> int:
    return max(_WINDOW_MIN, min(_WINDOW_MAX, int(rate * _WINDOW_SECONDS / max(connections, 1))))


def _sockets_with_window(window: int) -> Callable[[Any], socket.socket]:
    def make(addr_info: Any) -> socket.socket:
        family, type_, proto, _, _ = addr_info
        sock = socket.socket(family=family, type=type_, proto=proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, window)
        return sock

    return make


def copy_options(settings: MirrorSettings) -> CopyOptions:
    return CopyOptions(
        blob_concurrency=settings.blob_concurrency,
        chunked_threshold=parse_quantity(settings.chunked_threshold),
        chunk_size=parse_quantity(settings.chunk_size),
        blob_attempts=settings.blob_attempts,
    )


def pacer(settings: MirrorSettings, *,
          on_wait: Callable[[float], None] | None = None) -> Pacer:
    """The bandwidth limits of one worker: mirror.maxBytesPerSecond over all its copies,
    and registries[].maxBytesPerSecond per source host (0: none)."""
    return Pacer(parse_rate(settings.max_bytes_per_second),
                 {access.host: parse_rate(access.max_bytes_per_second)
                  for access in settings.registries},
                 on_wait=on_wait)


def configured_keychain(settings: MirrorSettings) -> Keychain:
    """Credentials from the settings: the docker config file, then per-registry users."""
    keychain = Keychain()
    if settings.docker_config_file:
        try:
            keychain.update(parse_docker_config(Path(settings.docker_config_file).read_bytes()))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"mirror.dockerConfigFile: cannot use {settings.docker_config_file}: "
                f"{type(exc).__name__}: {exc}") from None
    for access in settings.registries:
        if not access.username:
            continue
        password = access.password
        if access.password_file:
            try:
                password = Path(access.password_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"mirror.registries[{access.host}].passwordFile: {exc}") from None
        keychain.update({access.host: Credentials(access.username, password)})
    return keychain


class RegistryClients:
    """The clients of one process; `close()` them all at the end."""

    def __init__(self, settings: MirrorSettings, *, local_registry: str,
                 registry_endpoint: str = "", read_timeout: float = 120.0,
                 retry_attempts: int | None = None, shape_paced_sockets: bool = True) -> None:
        self.settings = settings
        self.local_registry = local_registry
        # distribution's own address when a front holds localRegistry: writes go straight there
        self.registry_endpoint = registry_endpoint
        # a small receive window where reads are paced (the mirror, the copy command); the
        # front does not: most of its fetches are for a waiting kubelet, at full speed
        self.shape_paced_sockets = shape_paced_sockets
        # the front waits far less for a silent source than the mirror: a kubelet is waiting
        self.read_timeout = read_timeout
        self.retry_attempts = settings.retry_attempts if retry_attempts is None else retry_attempts
        self.keychain = configured_keychain(settings)
        self._access: dict[str, RegistryAccess] = {a.host: a for a in settings.registries}
        self._ssl: dict[str, ssl.SSLContext] = {}
        self._connectors: dict[str, aiohttp.TCPConnector] = {}
        self._clients: dict[tuple[str, Credentials | None, str], RegistryClient] = {}
        for access in settings.registries:
            if access.ca_file and not Path(access.ca_file).is_file():
                raise ConfigError(
                    f"mirror.registries[{access.host}].caFile: {access.ca_file} is not a file")

    def _plain_http(self, host: str) -> bool:
        access = self._access.get(host)
        if access is not None:
            return access.plain_http
        return host in (self.local_registry, self.registry_endpoint) and (
            self.settings.local_plain_http)

    def _connector(self, host: str) -> aiohttp.TCPConnector:
        connector = self._connectors.get(host)
        if connector is None:
            access = self._access.get(host)
            limit = (access.max_connections if access and access.max_connections
                     else self.settings.max_connections_per_registry)
            context: ssl.SSLContext | bool = False
            if not self._plain_http(host):
                context = ssl_context(
                    ca_file=access.ca_file or None if access else None,
                    verify=not (access and access.insecure_skip_verify))
            rate = self._paced_rate(host)
            connector = self._connectors[host] = aiohttp.TCPConnector(
                limit=limit, ssl=context,
                socket_factory=_sockets_with_window(_receive_window(rate, limit))
                if rate else None)
        return connector

    def _paced_rate(self, host: str) -> int:
        """The bandwidth limit reads from `host` are paced to (0: none, never the local
        registry; and none when this process does not shape its sockets)."""
        if not self.shape_paced_sockets or host in (self.local_registry,
                                                    self.registry_endpoint):
            return 0
        access = self._access.get(host)
        limits = [rate for rate in (parse_rate(self.settings.max_bytes_per_second),
                                    parse_rate(access.max_bytes_per_second) if access else 0)
                  if rate]
        return min(limits, default=0)

    def client(self, host: str, *, credentials: Credentials | None,
               actions: str = "pull", headers: Mapping[str, str] | None = None
               ) -> RegistryClient:
        key = (host, credentials, actions + repr(sorted((headers or {}).items())))
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = RegistryClient(
                host, credentials=credentials, plain_http=self._plain_http(host),
                actions=actions, connector=self._connector(host),
                retry=Retry(attempts=self.retry_attempts), read_timeout=self.read_timeout,
                headers=headers,
                read_buffer=min(DEFAULT_READ_BUFFER, _receive_window(
                    rate, self.settings.max_connections_per_registry))
                if (rate := self._paced_rate(host)) else DEFAULT_READ_BUFFER)
        return client

    def source(self, host: str, pull_secrets: Mapping[str, Credentials] | None = None
               ) -> RegistryClient:
        """A source client with the request's pull secrets, else the configured credentials."""
        credentials = Keychain(pull_secrets).lookup(host) if pull_secrets else None
        return self.client(host, credentials=credentials or self.keychain.lookup(host))

    def front_can_read(self, host: str,
                       pull_secrets: Mapping[str, Credentials] | None = None) -> bool:
        """Whether the front, which has only the configured credentials, can read `host` as
        this request would: yes when credentials are configured for it, or when the pods'
        pull secrets name none for it (an anonymous source); an image that only a pod's
        pull secret opens is read from the source directly."""
        if self.keychain.lookup(host) is not None:
            return True
        return not pull_secrets or Keychain(pull_secrets).lookup(host) is None

    def through_front(self, headers: Mapping[str, str]) -> RegistryClient:
        """The registry front (localRegistry) as a source: it fetches from the real source,
        once for the mirror and every kubelet together."""
        return self.client(self.local_registry, credentials=self.keychain.lookup(
            self.local_registry), headers=headers)

    def destination(self, host: str) -> RegistryClient:
        if self.registry_endpoint and host == self.local_registry:
            host = self.registry_endpoint
        return self.client(host, credentials=self.keychain.lookup(host),
                           actions=_DESTINATION_ACTIONS)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        for connector in self._connectors.values():
            await connector.close()
        self._clients.clear()
        self._connectors.clear()
