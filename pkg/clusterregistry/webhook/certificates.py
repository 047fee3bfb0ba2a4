"""The webhook's TLS: a serving certificate from files, reloaded on rotation, or self-made.

kube-apiserver calls admission webhooks over HTTPS only, verifying the serving
certificate against the caBundle of the MutatingWebhookConfiguration. Two ways
to get there:

* Files (the default): cert-manager (or an operator) keeps `tls.crt`/`tls.key`
  in a Secret mounted into the pod and rotates them before they expire. The
  kubelet swaps a Secret volume's contents atomically (a `..data` symlink), and
  the files are polled: on a change both are loaded into the live SSLContext, so
  new connections get the new certificate without a restart and nothing is
  dropped. A pair that does not load (a half-written update, a key that does
  not match) keeps the previous certificate in service and is retried.
* Self-signed (`webhook.selfSigned`): at start, a CA and a serving certificate
  for the webhook Service's DNS names are made in memory, and the CA is written
  into the caBundle of every webhook of the MutatingWebhookConfiguration through
  the API server. That start-up write is the webhook's only API call; admissions
  themselves never make one.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import logging
import os
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clusterregistry.errors import ConfigError
from clusterregistry.kube.admission import patch_ca_bundles
from clusterregistry.kube.clients import ApiClient
from clusterregistry.runtime.lifecycle import sleep_unless_stopped
from clusterregistry.webhook.metrics import WebhookMetrics

log = logging.getLogger(__name__)

_VALIDITY = datetime.timedelta(days=365)
_SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class Material:
    """A CA certificate and a serving certificate with its key, all PEM."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def service_hosts(service: str, namespace: str, extra: Sequence[str] = ()) -> list[str]:
    """The names kube-apiserver dials a webhook Service by (it verifies `<svc>.<ns>.svc`)."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
            f"{service}.{namespace}.svc.cluster.local", *extra]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def self_signed(hosts: Sequence[str], *, common_name: str = "clusterregistry-webhook") -> Material:
    """A fresh CA (ECDSA P-256, one year) and a serving certificate for `hosts` it signed."""
    if not hosts:
        raise ValueError("a serving certificate needs at least one host")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"{common_name}-ca")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW).not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW).not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                       critical=False)
        # Go clients verify subjectAltNames only, never the common name
        .add_extension(x509.SubjectAlternativeName([_alt_name(h) for h in hosts]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Material(ca_pem=ca.public_bytes(serialization.Encoding.PEM),
                    cert_pem=cert.public_bytes(serialization.Encoding.PEM),
                    key_pem=_pem_key(key))


def _signature(*paths: Path) -> tuple[tuple[int, int, int], ...] | None:
    try:
        return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in (p.stat() for p in paths))
    except OSError:
        return None


class ServingCertificate:
    """The SSLContext the HTTPS listener serves with; `ready` once a certificate is in."""

    def __init__(self, metrics: WebhookMetrics) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._metrics = metrics
        self.ready = False
        self._loaded: tuple[tuple[int, int, int], ...] | None = None

    def load_files(self, cert_file: Path | str, key_file: Path | str) -> bool:
        """Load a pair into the live context; False (the old pair stays) when it fails."""
        cert_path, key_path = Path(cert_file), Path(key_file)
        signature = _signature(cert_path, key_path)
        try:
            self.context.load_cert_chain(cert_path, key_path)
        except (OSError, ssl.SSLError) as exc:
            self._metrics.tls_reloads.labels("failed").inc()
            log.warning("serving certificate %s / %s not loaded: %s%s", cert_path, key_path,
                        exc, "; the previous one stays in service" if self.ready else "")
            return False
        self._loaded = signature
        self.ready = True
        self._metrics.tls_ready.set(1)
        self._metrics.tls_reloads.labels("loaded").inc()
        log.info("serving certificate loaded from %s", cert_path)
        return True

    def load_material(self, material: Material) -> None:
        """Load an in-memory pair (self-signed mode) through a private temporary directory."""
        with tempfile.TemporaryDirectory(prefix="clusterregistry-webhook-") as folder:
            cert_path, key_path = Path(folder) / "tls.crt", Path(folder) / "tls.key"
            cert_path.write_bytes(material.cert_pem)
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(material.key_pem)
            if not self.load_files(cert_path, key_path):
                raise ConfigError("the self-signed serving certificate did not load")

    def changed(self, cert_file: Path | str, key_file: Path | str) -> bool:
        signature = _signature(Path(cert_file), Path(key_file))
        return signature is not None and signature != self._loaded

    async def watch(self, cert_file: Path | str, key_file: Path | str, *,
                    interval: float, stop: asyncio.Event) -> None:
        """Poll the files every `interval` seconds and load them when they change."""
        while not stop.is_set():
            if self.changed(cert_file, key_file):
                self.load_files(cert_file, key_file)
            await sleep_unless_stopped(stop, interval)


_BUNDLE_MAX = 8


def merged_bundle(existing_b64: str | None, ca_pem: bytes, *, keep: int = _BUNDLE_MAX) -> str:
    """A caBundle trusting `ca_pem` and the unexpired CAs already in it (newest last).

    Every self-signed replica makes its own CA; replacing the bundle would leave the other
    replicas unverifiable until they restart, so each adds its CA and keeps the others, up
    to `keep` of them (older ones, from replicas long gone, fall off the front).
    """
    now = datetime.datetime.now(datetime.UTC)
    kept: list[bytes] = []
    if existing_b64:
        try:
            certificates = x509.load_pem_x509_certificates(base64.b64decode(existing_b64))
        except ValueError:
            certificates = []  # an unreadable bundle trusts nothing worth keeping
        for certificate in certificates:
            pem = certificate.public_bytes(serialization.Encoding.PEM)
            if certificate.not_valid_after_utc > now and pem != ca_pem and pem not in kept:
                kept.append(pem)
    kept = [*kept[-(keep - 1):], ca_pem] if keep > 1 else [ca_pem]
    return base64.b64encode(b"".join(kept)).decode("ascii")


async def patch_ca_bundle(api: ApiClient, configuration: str, ca_pem: bytes) -> int:
    """Add `ca_pem` to every webhook's caBundle of a MutatingWebhookConfiguration.

    A JSON patch guarded by a `test` of the resourceVersion, so a concurrent change (another
    replica adding its CA) is never overwritten; the caller retries a RetryableError.
    Returns the number of webhooks patched.
    """
    patched = await patch_ca_bundles(api, configuration,
                                     lambda existing: merged_bundle(existing, ca_pem))
    log.info("caBundle of %s written (%d webhooks)", configuration, patched)
    return patched
