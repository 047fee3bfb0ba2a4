"""Real CNCF distribution registries (Debian's `docker-registry`, distribution 2.8).

clusterregistry talks to two kinds of registry: the remote "artifact store"
it copies from (TLS with basic auth, like an ACR or a Harbor) and the edge
registry inside the cluster it copies to and garbage-collects (plain HTTP,
`registry:2` in a pod). Both are the same program, so this module runs
`docker-registry serve` with a generated configuration, on 127.0.0.1 with a
random port and a filesystem store of its own, and offers what the gc
service's tests need: a restart in read-only maintenance mode and the
offline `garbage-collect` command.

Quirks of distribution 2.8 worth knowing (see DESIGN.md too):
- `garbage-collect --delete-untagged` deletes the children of tagged
  multi-arch indexes (distribution issue 3178).
- in read-only mode the write routes are simply not registered, so a blob
  upload (POST) or a manifest PUT/DELETE gets 405 Method Not Allowed.
- htpasswd auth accepts bcrypt entries only.
- `garbage-collect` fails ("Path not found") on a storage that was never
  pushed to, so the storage's top directories are created up front.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from clusterregistry_sandbox.supervising import (
    DEFAULT_GRACE,
    Process,
    ProcessError,
    find_executable,
    free_port,
    run_command,
)
from kubesim.certificates import CertificateAuthority

__all__ = [
    "MANIFEST_MEDIA_TYPES",
    "GarbageCollection",
    "ManifestInfo",
    "Registry",
    "find_docker_registry",
    "htpasswd_line",
]

# Every manifest media type a client may ask for; distribution 2.8 rewrites a
# multi-arch index into its linux/amd64 child for clients that omit the index
# types, so a digest check must send them all.
MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)

_READ_ONLY_ENV = {"REGISTRY_STORAGE_MAINTENANCE_READONLY": '{"enabled":true}'}
_START_TIMEOUT = 30.0
_PROBE_TIMEOUT = aiohttp.ClientTimeout(total=5)
_GC_SUMMARY = re.compile(
    r"(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible for deletion"
)


def find_docker_registry() -> str:
    """The registry binary: $DOCKER_REGISTRY_BIN, else `docker-registry` (Debian's name)."""
    try:
        return find_executable("docker-registry", env_var="DOCKER_REGISTRY_BIN")
    except ProcessError:
        return find_executable("registry")


def htpasswd_line(username: str, password: str, *, rounds: int = 5) -> str:
    """One htpasswd entry with a bcrypt hash, the only kind distribution accepts.

    The registry checks the hash on every request, so the sandbox uses a low
    cost (5; Go's minimum is 4): the password guards test data, not secrets.
    """
    # Imported here: only registries with auth need it, so a machine without
    # bcrypt can still run every plain-registry test.
    import bcrypt  # noqa: PLC0415

    if ":" in username:
        raise ValueError("an htpasswd user name cannot contain ':'")
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode()
    return f"{username}:{hashed}"


@dataclass(frozen=True)
class ManifestInfo:
    """What a HEAD on /v2/<repository>/manifests/<reference> tells."""

    digest: str
    media_type: str
    size: int


@dataclass(frozen=True)
class GarbageCollection:
    """The outcome of one `garbage-collect` run (counts parsed from its summary line)."""

    output: str
    blobs_marked: int
    blobs_eligible: int
    manifests_eligible: int


class Registry:
    """One `docker-registry serve` process with a generated config on 127.0.0.1.

    `ca` turns on TLS with a serving certificate for 127.0.0.1 and localhost;
    `username` (with `password`, generated when omitted) turns on htpasswd
    basic auth. The port and storage root stay the same across restarts.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        name: str = "registry",
        port: int | None = None,
        ca: CertificateAuthority | None = None,
        username: str | None = None,
        password: str | None = None,
        log_level: str = "info",
        log_formatter: str = "text",
        binary: str | None = None,
    ) -> None:
        self.name = name
        self.state_dir = state_dir
        self.port = port or free_port()
        self.ca = ca
        self.username = username
        if password is None and username is not None:
            password = secrets.token_urlsafe(16)
        self.password = password
        self.log_level = log_level
        self.log_formatter = log_formatter
        self.root_dir = state_dir / "storage"
        self.config_path = state_dir / "config.yml"
        self.log_path = state_dir / "registry.log"
        self.htpasswd_path = state_dir / "htpasswd"
        self.tls_dir = state_dir / "tls"
        self._binary = binary
        self._secret = secrets.token_hex(16)
        self._process: Process | None = None
        self._read_only = False

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, url={self.url!r}, running={self.running})"

    @property
    def tls(self) -> bool:
        return self.ca is not None

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, the registry part of an image reference."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def credentials(self) -> tuple[str, str] | None:
        if self.username is None or self.password is None:
            return None
        return self.username, self.password

    @property
    def ca_path(self) -> Path | None:
        """The CA certificate clients must trust (PEM), when TLS is on."""
        return self.tls_dir / "trust" / "ca.crt" if self.tls else None

    @property
    def cert_dir(self) -> Path | None:
        """A directory holding only `ca.crt`, the shape skopeo's --*-cert-dir expects."""
        return self.tls_dir / "trust" if self.tls else None

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def process(self) -> Process | None:
        return self._process

    def config(self) -> dict[str, Any]:
        """The distribution configuration this registry is started with."""
        http: dict[str, Any] = {
            "addr": self.host,
            "secret": self._secret,
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        }
        if self.tls:
            http["tls"] = {
                "certificate": str(self.tls_dir / "serving" / "server.crt"),
                "key": str(self.tls_dir / "serving" / "server.key"),
            }
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {
                "level": self.log_level,
                "formatter": self.log_formatter,
                "accesslog": {"disabled": False},
                "fields": {"service": "registry", "instance": self.name},
            },
            "storage": {
                "filesystem": {"rootdirectory": str(self.root_dir)},
                "delete": {"enabled": True},
                # Present so that the read-only switch (an environment override
                # of storage.maintenance.readonly) has a section to land in.
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http,
            "health": {"storagedriver": {"enabled": True, "interval": "10s", "threshold": 3}},
        }
        if self.credentials:
            config["auth"] = {
                "htpasswd": {"realm": "clusterregistry", "path": str(self.htpasswd_path)}
            }
        return config

    def _write_files(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # garbage-collect fails on a storage without these (a registry never pushed to)
        for top in ("blobs", "repositories"):
            (self.root_dir / "docker" / "registry" / "v2" / top).mkdir(parents=True, exist_ok=True)
        if self.ca is not None:
            pair = self.ca.issue(common_name=self.name, hosts=["127.0.0.1", "localhost"])
            # Apart from the trust dir: skopeo pairs every *.key there with a client *.cert.
            pair.write(self.tls_dir / "serving", "server")
            self.ca.write(self.tls_dir / "trust" / "ca.crt")
        credentials = self.credentials
        if credentials is not None:
            self.htpasswd_path.write_text(htpasswd_line(*credentials) + "\n")
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client SSL context trusting this registry's CA (None for plain HTTP)."""
        if self.ca is None:
            return None
        return ssl.create_default_context(cadata=self.ca.cert_pem.decode())

    def auth_headers(self) -> dict[str, str]:
        """`Authorization: Basic ...` for this registry's credentials ({} without auth)."""
        credentials = self.credentials
        if credentials is None:
            return {}
        token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def session(self, *, authenticated: bool = True) -> aiohttp.ClientSession:
        """An aiohttp session for this registry: base URL, CA trust and (optionally) credentials."""
        return aiohttp.ClientSession(
            base_url=self.url,
            headers=self.auth_headers() if authenticated else None,
            connector=aiohttp.TCPConnector(ssl=self.ssl_context() or True),
            timeout=aiohttp.ClientTimeout(total=30),
        )

    async def start(self, *, read_only: bool = False, timeout: float = _START_TIMEOUT) -> None:
        """Start and wait until `GET /v2/` answers (200, or 401 with auth on).

        On failure the process is stopped and the error carries its log tail.
        """
        if self.running:
            raise ProcessError(f"{self.name} is already running")
        if self._process is None:
            self._write_files()
            binary = self._binary or find_docker_registry()
            self._process = Process(
                [binary, "serve", str(self.config_path)], name=self.name, log_path=self.log_path
            )
        self._read_only = read_only
        await self._process.start(env=_READ_ONLY_ENV if read_only else None)
        try:
            await self._wait_ready(self._process, timeout=timeout)
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self, process: Process, *, timeout: float) -> None:
        expected = 401 if self.credentials else 200
        async with aiohttp.ClientSession(
            timeout=_PROBE_TIMEOUT,
            connector=aiohttp.TCPConnector(ssl=self.ssl_context() or True),
        ) as session:

            async def check() -> bool:
                async with session.get(f"{self.url}/v2/") as response:
                    return response.status == expected

            await process.wait_ready(check, timeout=timeout)

    async def stop(self, *, grace: float = DEFAULT_GRACE) -> None:
        """Graceful stop (SIGTERM, then SIGKILL after grace). Safe when not running."""
        if self._process is not None:
            await self._process.stop(grace=grace)

    async def kill(self) -> None:
        if self._process is not None:
            await self._process.kill()

    async def restart(self, *, read_only: bool = False, timeout: float = _START_TIMEOUT) -> None:
        """Stop, then start again on the same port and storage, read-only or read-write."""
        await self.stop()
        await self.start(read_only=read_only, timeout=timeout)

    async def garbage_collect(
        self, *, delete_untagged: bool = False, dry_run: bool = False, timeout: float = 300.0
    ) -> GarbageCollection:
        """Run `garbage-collect` on this registry's config (offline: stop it or make it read-only).

        Raises ProcessError with the command's output when it fails.
        """
        if not self.config_path.exists():
            self._write_files()
        argv = [self._binary or find_docker_registry(), "garbage-collect", str(self.config_path)]
        if delete_untagged:
            argv.append("--delete-untagged")
        if dry_run:
            argv.append("--dry-run")
        result = await run_command(argv, timeout=timeout)
        if not result.ok:
            raise ProcessError(
                f"garbage-collect exited with status {result.returncode}",
                log_tail=result.output[-4000:],
            )
        summary = _GC_SUMMARY.search(result.output)
        counts = [int(group) for group in summary.groups()] if summary else [0, 0, 0]
        return GarbageCollection(
            output=result.output,
            blobs_marked=counts[0],
            blobs_eligible=counts[1],
            manifests_eligible=counts[2],
        )

    async def manifest(self, repository: str, reference: str) -> ManifestInfo | None:
        """HEAD a manifest by tag or digest, accepting every manifest type; None when absent."""
        async with (
            self.session() as session,
            session.head(
                f"/v2/{repository}/manifests/{reference}",
                headers={"Accept": ", ".join(MANIFEST_MEDIA_TYPES)},
            ) as response,
        ):
            if response.status == 404:
                return None
            response.raise_for_status()
            return ManifestInfo(
                digest=response.headers["Docker-Content-Digest"],
                media_type=response.headers.get("Content-Type", ""),
                size=int(response.headers.get("Content-Length", "0")),
            )

    async def manifest_bytes(self, repository: str, reference: str) -> tuple[bytes, ManifestInfo]:
        """GET a manifest's exact bytes and what the registry says about them."""
        async with (
            self.session() as session,
            session.get(
                f"/v2/{repository}/manifests/{reference}",
                headers={"Accept": ", ".join(MANIFEST_MEDIA_TYPES)},
            ) as response,
        ):
            response.raise_for_status()
            body = await response.read()
            return body, ManifestInfo(
                digest=response.headers["Docker-Content-Digest"],
                media_type=response.headers.get("Content-Type", ""),
                size=len(body),
            )

    async def blob_exists(self, repository: str, digest: str) -> bool:
        async with (
            self.session() as session,
            session.head(f"/v2/{repository}/blobs/{digest}") as response,
        ):
            if response.status == 404:
                return False
            response.raise_for_status()
            return True

    async def tags(self, repository: str) -> list[str]:
        """The repository's tags ([] when the repository does not exist)."""
        async with (
            self.session() as session,
            session.get(f"/v2/{repository}/tags/list") as response,
        ):
            if response.status == 404:
                return []
            response.raise_for_status()
            document = json.loads(await response.read())
            return sorted(document.get("tags") or [])

    def tail_log(self, lines: int = 40) -> str:
        return self._process.tail_log(lines) if self._process else ""
