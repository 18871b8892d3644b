"""The stdlib certificate reader agrees with cryptography and refuses what is not a certificate."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from agent.certificate import certificate_der, read_certificate, read_certificate_der
from agent.keys import CryptographyKeys
from cloud.ca import CertificateAuthority, certificate_pem, fingerprint

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca"), NOW)


def router_certificate(ca: CertificateAuthority, lifetime: timedelta) -> x509.Certificate:
    request = CryptographyKeys().certificate_request(CryptographyKeys().new_key())
    return ca.sign_router_request(request, "r-abc", NOW, lifetime)


@pytest.mark.parametrize("lifetime", [timedelta(days=365), timedelta(days=365 * 40)])
def test_the_reader_sees_what_cryptography_sees(
    ca: CertificateAuthority, lifetime: timedelta
) -> None:
    certificate = router_certificate(ca, lifetime)  # 40 years: a GeneralizedTime after 2049

    facts = read_certificate(certificate_pem(certificate))

    assert facts.common_names == ("r-abc",)
    assert facts.not_after == certificate.not_valid_after_utc
    assert facts.not_before == certificate.not_valid_before_utc
    assert facts.fingerprint == fingerprint(certificate)
    assert facts.public_key_der == certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert x509.load_pem_x509_certificate(facts.pem.encode()) == certificate


def test_the_ca_certificate_names_the_ca(ca: CertificateAuthority) -> None:
    assert read_certificate(ca.certificate_pem).common_names == ("Loopspot Cloud CA",)


def test_a_subject_without_a_cn_and_one_in_another_script_are_read() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    for names, expected in (([], ()), (["店铺路由器", "two"], ("店铺路由器", "two"))):
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, n) for n in names])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(NOW)
            .not_valid_after(NOW + timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        assert (
            read_certificate(certificate.public_bytes(serialization.Encoding.PEM)).common_names
            == expected
        )


def test_the_portal_certificate_s_dns_names_are_read_and_nothing_else_of_its_alt_names() -> None:
    from ipaddress import IPv4Address

    key = ec.generate_private_key(ec.SECP256R1())
    names = [
        x509.DNSName("r1.portal.example.com"),
        x509.IPAddress(IPv4Address("10.20.0.1")),
        x509.RFC822Name("shop@example.com"),
        x509.DNSName("r1.portal.example.net"),
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble")]))
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(x509.SubjectAlternativeName(names), True)
        .sign(key, hashes.SHA256())
    )

    facts = read_certificate(certificate.public_bytes(serialization.Encoding.PEM))

    assert facts.dns_names == ("r1.portal.example.com", "r1.portal.example.net")
    assert read_certificate_der(SAMPLE).dns_names == ("r1.portal.example",)


def test_a_certificate_without_alt_names_has_no_dns_names(ca: CertificateAuthority) -> None:
    assert (
        read_certificate(certificate_pem(router_certificate(ca, timedelta(days=1)))).dns_names == ()
    )


def test_the_first_certificate_of_a_chain_is_read(ca: CertificateAuthority) -> None:
    leaf = certificate_pem(router_certificate(ca, timedelta(days=1)))

    assert read_certificate("junk before\n" + leaf + ca.certificate_pem).common_names == ("r-abc",)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "no PEM certificate"),
        ("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----", "no PEM certificate"),
        ("-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----", "not base64"),
        ("-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----", "too few fields|no to-be"),
    ],
)
def test_text_that_is_no_certificate_is_refused(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        read_certificate(text)


def test_every_truncation_of_a_certificate_is_refused(ca: CertificateAuthority) -> None:
    der = certificate_der(certificate_pem(router_certificate(ca, timedelta(days=1))))
    for end in range(len(der)):
        with pytest.raises(ValueError):
            read_certificate_der(der[:end])


@given(st.binary(max_size=600))
def test_random_bytes_raise_only_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        read_certificate_der(data)


@given(st.integers(min_value=0, max_value=400), st.integers(min_value=0, max_value=255))
def test_a_certificate_with_one_byte_changed_raises_only_value_error(at: int, value: int) -> None:
    der = bytearray(SAMPLE)
    der[at % len(der)] = value
    with contextlib.suppress(ValueError):
        read_certificate_der(bytes(der))


def _sample() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "r-sample")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("r1.portal.example")]), False)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.DER)


SAMPLE = _sample()


def test_a_certificate_file_on_disk_reads_as_bytes(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    path = tmp_path / "router.crt"
    path.write_text(certificate_pem(router_certificate(ca, timedelta(days=1))))

    assert read_certificate(path.read_bytes()).common_names == ("r-abc",)
