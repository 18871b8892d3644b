"""The HTTPS portal: a pushed certificate is checked, served, replaced in place, withdrawn."""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import ssl
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import ConfigError
from agent.portal.tls import (
    PortalCertificate,
    PortalTls,
    is_portal_name,
    name_file_text,
    portal_certificate_of,
)
from agent.settings import Settings
from agent.wire import RouterConfig, decode

NAME = "r1.portal.example.com"


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def make_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test root")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], name: str = NAME
) -> PortalCertificate:
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    chain = cert.public_bytes(serialization.Encoding.PEM).decode()
    return PortalCertificate(name, chain, _pem_key(key))


def config_with(certificate: PortalCertificate, **changes: str | None) -> RouterConfig:
    fields = {
        "portal_name": certificate.name,
        "portal_certificate": certificate.chain,
        "portal_key": certificate.key,
    }
    return RouterConfig(version=2, **(fields | changes))


@pytest.fixture(scope="module")
def ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    return make_ca()


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        (NAME, True),
        ("a.b", True),
        ("localhost", False),
        ("R1.portal.example.com", False),
        ("-r1.example.com", False),
        ("r1..example.com", False),
        ("r1.example.com.", False),
        ("*.example.com", False),
        ("x" * 64 + ".example.com", False),
    ],
)
def test_a_portal_name_is_a_lower_case_dns_name(name: str, ok: bool) -> None:
    assert is_portal_name(name) is ok


def test_a_config_without_a_certificate_keeps_the_portal_on_http(ca: object) -> None:
    assert portal_certificate_of(RouterConfig(version=1, site_name="Spa")) is None
    assert portal_certificate_of(None) is None


def test_a_pushed_certificate_travels_the_wire_and_is_taken(ca: object) -> None:
    certificate = issue(ca)  # type: ignore[arg-type]
    config = decode(config_with(certificate).encode(), RouterConfig)
    assert portal_certificate_of(config) == certificate


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"portal_key": None}, "portal_key"),
        ({"portal_name": None}, "portal_name"),
        ({"portal_name": "not a name"}, "portal_name"),
        ({"portal_certificate": "hello"}, "portal_certificate"),
        ({"portal_certificate": "junk\n"}, "portal_certificate"),
        (
            {"portal_key": "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----\n"},
            "portal_key",
        ),
    ],
)
def test_a_broken_certificate_push_names_the_field(
    ca: object, changes: dict[str, str | None], field: str
) -> None:
    certificate = issue(ca)  # type: ignore[arg-type]
    if changes.get("portal_certificate") == "junk\n":
        changes = {"portal_certificate": certificate.chain + "junk\n"}
    with pytest.raises(ConfigError) as refused:
        portal_certificate_of(config_with(certificate, **changes))
    assert refused.value.option == field
    assert "Fix:" in str(refused.value)


async def test_a_key_of_another_certificate_is_refused_before_anything_is_served(
    ca: object, tmp_path: Path
) -> None:
    good, other = issue(ca), issue(ca)  # type: ignore[arg-type]
    tls = PortalTls(Settings(state_dir=tmp_path), web.AppRunner(web.Application()))
    with pytest.raises(ConfigError, match="portal_certificate"):
        await tls.check(dataclasses.replace(good, key=other.key))
    assert tls.site is None and name_file_text(tls) is None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def served(port: int, root: x509.Certificate, name: str = NAME) -> str:
    """SHA-256 of the certificate served on the port, verified against `root` for `name`."""
    context = ssl.create_default_context(
        cadata=root.public_bytes(serialization.Encoding.PEM).decode()
    )
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


async def test_the_portal_serves_https_and_takes_a_renewal_without_a_restart(
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], tmp_path: Path
) -> None:
    import asyncio

    port = _free_port()
    settings = Settings(
        state_dir=tmp_path, portal_address=IPv4Address("127.0.0.1"), portal_https_port=port
    )
    runner = web.AppRunner(web.Application())
    await runner.setup()
    tls = PortalTls(settings, runner)
    try:
        first, second = issue(ca), issue(ca)
        await tls.install(first)
        assert name_file_text(tls) == f"{NAME}\n"
        seen_first = await asyncio.to_thread(served, port, ca[1])
        site = tls.site
        await tls.install(second)
        assert tls.site is site, "the same listening site"
        seen_second = await asyncio.to_thread(served, port, ca[1])
        assert seen_first != seen_second
        for path in (tmp_path / "portal-tls").iterdir():
            assert path.stat().st_mode & 0o077 == 0, f"{path.name} is readable by others"
        await tls.install(None)  # the cloud withdrew it
        assert name_file_text(tls) is None
        with pytest.raises(OSError):
            await asyncio.to_thread(served, port, ca[1])
    finally:
        await runner.cleanup()


@given(
    name=st.one_of(st.none(), st.text(max_size=80)),
    chain=st.one_of(st.none(), st.text(max_size=200)),
    key=st.one_of(st.none(), st.text(max_size=200)),
)
def test_any_pushed_certificate_fields_are_taken_or_refused_naming_one(
    name: str | None, chain: str | None, key: str | None
) -> None:
    config = RouterConfig(version=2, portal_name=name, portal_certificate=chain, portal_key=key)
    try:
        taken = portal_certificate_of(config)
    except ConfigError as refused:
        assert refused.option in ("portal_name", "portal_certificate", "portal_key")
        return
    assert taken is None or is_portal_name(taken.name)
