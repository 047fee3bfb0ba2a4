"""A registry with bearer-token auth, and the small token server it trusts (test only).

distribution's `token` auth: the registry answers 401 with
`WWW-Authenticate: Bearer realm=<token server>,service=...,scope=...`; the
client gets a JWT from the realm with basic credentials; the registry checks
the JWT's signature (ES256, the signing certificate in the `x5c` header,
trusted through `rootcertbundle`), issuer, audience, expiry and `access` list.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from clusterregistry_sandbox.registries import Registry
from clusterregistry_sandbox.supervising import free_port

SERVICE = "clusterregistry-test-registry"
ISSUER = "clusterregistry-test-token-server"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Issues JWTs for `username`/`password`, for the scopes asked (all actions granted)."""

    def __init__(self, state_dir: Path, *, username: str, password: str) -> None:
        self.username, self.password = username, password
        self.port = free_port()
        self.issued = 0
        self.refused = 0
        self.scopes_asked: list[list[str]] = []
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token signer")])
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        state_dir.mkdir(parents=True, exist_ok=True)
        self.bundle = state_dir / "token-signer.pem"
        self.bundle.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._runner: web.AppRunner | None = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _jwt(self, claims: dict[str, Any]) -> str:
        der = self._cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self._key.sign(signing_input.encode(),
                                                   ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    async def _token(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(
            f"{self.username}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            self.refused += 1
            return web.json_response({"details": "bad credentials"}, status=401)
        scopes = request.query.getall("scope", [])
        self.scopes_asked.append(list(scopes))
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        token = self._jwt({"iss": ISSUER, "sub": self.username, "aud": SERVICE,
                           "exp": now + 300, "nbf": now - 10, "iat": now,
                           "jti": secrets.token_hex(8), "access": access})
        self.issued += 1
        return web.json_response({"token": token, "expires_in": 300})


class TokenRegistry(Registry):
    """A plain-HTTP distribution registry that trusts `server`'s tokens."""

    def __init__(self, state_dir: Path, server: TokenServer) -> None:
        # a username makes the readiness probe expect 401, which token auth answers too
        super().__init__(state_dir, name="token-registry", username=server.username,
                         password=server.password)
        self.server = server

    def config(self) -> dict[str, Any]:
        config = super().config()
        config["auth"] = {"token": {"realm": self.server.realm, "service": SERVICE,
                                    "issuer": ISSUER,
                                    "rootcertbundle": str(self.server.bundle)}}
        return config
