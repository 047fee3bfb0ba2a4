"""kubesim.certificates: the generated CA and leaf certificates are valid X.509 and real TLS works.

No external process: the handshakes run between Python's own ssl client and
server on 127.0.0.1, which is enough to prove that what the registries,
kubesim and the webhook are given will be accepted by a strict verifier.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from kubesim.certificates import CertificateAuthority, KeyPair


@pytest.fixture(scope="module")
def authority() -> CertificateAuthority:
    return CertificateAuthority.create("unit test CA")


def test_ca_is_a_self_signed_ca_valid_for_a_year(authority: CertificateAuthority) -> None:
    cert = x509.load_pem_x509_certificate(authority.cert_pem)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=365) <= lifetime <= datetime.timedelta(days=366)
    assert cert.not_valid_before_utc <= datetime.datetime.now(datetime.UTC)


def test_server_certificate_has_ip_and_dns_alt_names(authority: CertificateAuthority) -> None:
    pair = authority.issue(
        common_name="registry", hosts=["127.0.0.1", "::1", "localhost", "svc.ns.svc"]
    )
    cert = pair.certificate
    cert.verify_directly_issued_by(authority.certificate)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "svc.ns.svc"]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_client_certificate_is_for_client_auth(authority: CertificateAuthority) -> None:
    cert = authority.issue(common_name="system:admin", client=True).certificate
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_server_certificate_needs_a_host(authority: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="host"):
        authority.issue(common_name="nobody", hosts=[])


def test_each_issue_is_a_new_key(authority: CertificateAuthority) -> None:
    first = authority.issue(common_name="a", hosts=["localhost"])
    second = authority.issue(common_name="a", hosts=["localhost"])
    assert first.key_pem != second.key_pem
    assert first.certificate.serial_number != second.certificate.serial_number


def test_write_files(authority: CertificateAuthority, tmp_path: Path) -> None:
    pair = authority.issue(common_name="webhook", hosts=["127.0.0.1"])
    cert_path, key_path = pair.write(tmp_path / "tls", "webhook")
    assert (cert_path, key_path) == (tmp_path / "tls/webhook.crt", tmp_path / "tls/webhook.key")
    assert cert_path.read_bytes() == pair.cert_pem
    assert key_path.read_bytes() == pair.key_pem
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    ca_path = authority.write(tmp_path / "trust" / "ca.crt")
    assert ca_path.read_bytes() == authority.cert_pem
    # loadable by OpenSSL as a chain and a trust anchor
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    ssl.create_default_context(cafile=str(ca_path))


async def _handshake(
    server_pair: KeyPair,
    client_context: ssl.SSLContext,
    tmp_path: Path,
    *,
    server_hostname: str,
    require_client_cert_from: CertificateAuthority | None = None,
) -> str | None:
    """Run one TLS handshake on 127.0.0.1; return the client cert's CN the server saw."""
    cert_path, key_path = server_pair.write(tmp_path, "server")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_path, key_path)
    if require_client_cert_from is not None:
        server_context.verify_mode = ssl.CERT_REQUIRED
        server_context.load_verify_locations(cadata=require_client_cert_from.cert_pem.decode())
    seen: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert")
        subject = dict(item for rdn in peer["subject"] for item in rdn) if peer else {}
        if not seen.done():
            seen.set_result(subject.get("commonName"))
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1", port, ssl=client_context, server_hostname=server_hostname
            ),
            timeout=10,
        )
        assert await asyncio.wait_for(reader.read(2), timeout=10) == b"ok"
        writer.close()
        return await asyncio.wait_for(seen, timeout=10)
    finally:
        server.close()
        await server.wait_closed()


async def test_tls_handshake_verifies_ip_san(
    authority: CertificateAuthority, tmp_path: Path
) -> None:
    pair = authority.issue(common_name="registry", hosts=["127.0.0.1", "localhost"])
    client = ssl.create_default_context(cadata=authority.cert_pem.decode())
    assert await _handshake(pair, client, tmp_path, server_hostname="127.0.0.1") is None
    assert await _handshake(pair, client, tmp_path, server_hostname="localhost") is None


async def test_tls_handshake_rejects_wrong_host_and_unknown_ca(
    authority: CertificateAuthority, tmp_path: Path
) -> None:
    pair = authority.issue(common_name="registry", hosts=["localhost"])
    trusting = ssl.create_default_context(cadata=authority.cert_pem.decode())
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(pair, trusting, tmp_path, server_hostname="127.0.0.1")
    stranger = CertificateAuthority.create("another CA")
    not_trusting = ssl.create_default_context(cadata=stranger.cert_pem.decode())
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(pair, not_trusting, tmp_path, server_hostname="localhost")


async def test_mutual_tls_with_client_certificate(
    authority: CertificateAuthority, tmp_path: Path
) -> None:
    server_pair = authority.issue(common_name="kube-apiserver", hosts=["127.0.0.1"])
    client_pair = authority.issue(common_name="system:admin", client=True)
    client_cert, client_key = client_pair.write(tmp_path / "client", "admin")
    client = ssl.create_default_context(cadata=authority.cert_pem.decode())
    client.load_cert_chain(client_cert, client_key)
    seen = await _handshake(
        server_pair,
        client,
        tmp_path,
        server_hostname="127.0.0.1",
        require_client_cert_from=authority,
    )
    assert seen == "system:admin"
