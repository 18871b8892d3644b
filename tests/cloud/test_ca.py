"""The cloud CA: certificates OpenSSL accepts, and certificate requests it must refuse."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.enrol import certificate_request, new_key
from cloud.ca import (
    CertificateAuthority,
    CertificateRequestError,
    certificate_pem,
    fingerprint,
    server_names,
)
from cloud.errors import CloudConfigError

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path / "ca", NOW)


def openssl_verify(ca: CertificateAuthority, cert: Path, *options: str) -> str:
    done = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca.certificate_path), *options, str(cert)],
        capture_output=True,
        text=True,
        check=False,
    )
    return (done.stdout + done.stderr).strip()


def request_with_subject(cn: str | None) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def test_openssl_accepts_a_router_certificate_for_tls_client_auth(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    certificate = ca.sign_router_request(certificate_request(new_key()), "r-abc", datetime.now(UTC))
    path = tmp_path / "router.crt"
    path.write_text(certificate_pem(certificate))

    assert openssl_verify(ca, path, "-purpose", "sslclient") == f"{path}: OK"
    assert "error" in openssl_verify(ca, path, "-purpose", "sslserver")


def test_router_certificate_names_the_router_and_lasts_about_a_year(
    ca: CertificateAuthority,
) -> None:
    certificate = ca.sign_router_request(certificate_request(new_key()), "r-abc", NOW)

    cn = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [a.value for a in cn] == ["r-abc"]
    eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = certificate.not_valid_after_utc - NOW
    assert timedelta(days=364) < lifetime <= timedelta(days=366)
    assert len(fingerprint(certificate)) == 64


@pytest.mark.parametrize("name", ["127.0.0.1", "198.51.100.2", "localhost", "mqtt.example.net"])
def test_openssl_accepts_the_server_certificate_for_each_of_its_names(
    ca: CertificateAuthority, tmp_path: Path, name: str
) -> None:
    credentials = ca.ensure_server_credentials(
        server_names("mqtt.example.net", "198.51.100.2"), tmp_path / "broker", datetime.now(UTC)
    )
    check = "-verify_ip" if name[0].isdigit() else "-verify_hostname"

    out = openssl_verify(ca, credentials.certificate, "-purpose", "sslserver", check, name)

    assert out == f"{credentials.certificate}: OK"
    assert credentials.key.stat().st_mode & 0o777 == 0o600


def test_openssl_rejects_the_server_certificate_for_another_name(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    credentials = ca.ensure_server_credentials(["localhost"], tmp_path / "b", datetime.now(UTC))

    assert "error" in openssl_verify(ca, credentials.certificate, "-verify_ip", "203.0.113.9")


def test_server_certificate_is_kept_until_its_names_change(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    first = ca.ensure_server_credentials(["localhost", "127.0.0.1"], tmp_path, NOW)
    before = first.certificate.read_bytes()

    again = ca.ensure_server_credentials(["localhost", "127.0.0.1"], tmp_path, NOW)
    assert again.certificate.read_bytes() == before

    ca.ensure_server_credentials(["localhost", "198.51.100.2"], tmp_path, NOW)
    assert first.certificate.read_bytes() != before


def test_server_certificate_is_reissued_a_month_before_it_expires(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    credentials = ca.ensure_server_credentials(["localhost"], tmp_path, NOW)
    before = credentials.certificate.read_bytes()

    ca.ensure_server_credentials(["localhost"], tmp_path, NOW + timedelta(days=380))

    assert credentials.certificate.read_bytes() != before


def test_loading_gives_back_the_same_ca(ca: CertificateAuthority) -> None:
    loaded = CertificateAuthority.load(ca.directory)

    assert loaded.certificate == ca.certificate
    assert (ca.directory / "ca.key").stat().st_mode & 0o777 == 0o600
    assert CertificateAuthority.load_or_create(ca.directory, NOW).certificate == ca.certificate


def test_an_existing_ca_is_never_overwritten(ca: CertificateAuthority) -> None:
    with pytest.raises(CloudConfigError, match="exists already"):
        CertificateAuthority.create(ca.directory, NOW)


def test_loading_a_missing_ca_says_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(CloudConfigError, match="loopspot-cloud init"):
        CertificateAuthority.load(tmp_path / "nothing")


@pytest.mark.parametrize("cn", [None, "r-abc"])
def test_request_with_empty_subject_or_the_claimed_router_is_signed(
    ca: CertificateAuthority, cn: str | None
) -> None:
    certificate = ca.sign_router_request(request_with_subject(cn), "r-abc", NOW)

    assert certificate.subject.rfc4514_string() == "CN=r-abc"


def test_request_naming_another_router_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(CertificateRequestError, match="differs from the claimed router"):
        ca.sign_router_request(request_with_subject("r-other"), "r-abc", NOW)


def test_request_with_a_broken_signature_is_refused(ca: CertificateAuthority) -> None:
    csr = x509.load_pem_x509_csr(certificate_request(new_key()))
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x55  # inside the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)

    with pytest.raises(CertificateRequestError, match="signature"):
        ca.sign_router_request(tampered, "r-abc", NOW)


@pytest.mark.parametrize("junk", [b"", b"not a csr", b"-----BEGIN CERTIFICATE REQUEST-----\nAA=="])
def test_garbage_instead_of_a_request_is_refused(ca: CertificateAuthority, junk: bytes) -> None:
    with pytest.raises(CertificateRequestError, match="not a PEM certificate request"):
        ca.sign_router_request(junk, "r-abc", NOW)


def test_weak_or_unsupported_keys_are_refused(ca: CertificateAuthority) -> None:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    weak_csr = builder.sign(rsa.generate_private_key(65537, 1024), hashes.SHA256())
    curve_csr = builder.sign(ec.generate_private_key(ec.SECP224R1()), hashes.SHA256())
    edwards = builder.sign(ed25519.Ed25519PrivateKey.generate(), None)

    for csr, reason in ((weak_csr, "2048"), (curve_csr, "curve"), (edwards, "EC P-256")):
        with pytest.raises(CertificateRequestError, match=reason):
            ca.sign_router_request(csr.public_bytes(serialization.Encoding.PEM), "r-abc", NOW)


def test_invalid_router_id_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(CertificateRequestError, match="router_id"):
        ca.sign_router_request(certificate_request(new_key()), "R/#", NOW)
