"""The HTTPS portal: a pushed certificate is checked, served, replaced in place, withdrawn."""

from __future__ import annotations

import asyncio
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

from agent.access import LanPortal
from agent.errors import ConfigError
from agent.portal.tls import (
    CHAIN,
    KEY,
    PortalTls,
    is_portal_name,
    name_file_text,
    portal_name_of,
)
from agent.portal.tls import NAME as STORED_NAME
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
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], name: str = NAME, days: int = 1
) -> tuple[str, str]:
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
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key)


def store(directory: Path, pair: tuple[str, str], name: str = NAME) -> None:
    """The files agent.portal.certify leaves."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CHAIN).write_text(pair[0])
    (directory / KEY).write_text(pair[1])
    (directory / STORED_NAME).write_text(f"{name}\n")


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


def test_a_pushed_portal_name_is_taken_or_refused_naming_the_field() -> None:
    assert portal_name_of(None) is None
    assert portal_name_of(RouterConfig(version=1, site_name="Spa")) is None
    pushed = decode(RouterConfig(version=2, portal_name=NAME).encode(), RouterConfig)
    assert portal_name_of(pushed) == NAME
    with pytest.raises(ConfigError) as refused:
        portal_name_of(RouterConfig(version=3, portal_name="not a name"))
    assert refused.value.option == "portal_name" and "Fix:" in str(refused.value)


@given(st.text(max_size=80))
def test_any_pushed_name_is_taken_only_if_it_is_a_dns_name(name: str) -> None:
    try:
        taken = portal_name_of(RouterConfig(version=2, portal_name=name))
    except ConfigError as refused:
        assert refused.option == "portal_name"
        assert not is_portal_name(name)
        return
    assert taken == name and is_portal_name(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def served(port: int, root: x509.Certificate, name: str = NAME, address: str = "127.0.0.1") -> str:
    """SHA-256 of the certificate served on the port, verified against `root` for `name`."""
    context = ssl.create_default_context(
        cadata=root.public_bytes(serialization.Encoding.PEM).decode()
    )
    with (
        socket.create_connection((address, port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


async def test_the_portal_serves_https_and_takes_a_renewal_without_a_restart(
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], tmp_path: Path
) -> None:
    port = _free_port()
    settings = Settings(
        flash_dir=tmp_path, portal_address=IPv4Address("127.0.0.1"), portal_https_port=port
    )
    runner = web.AppRunner(web.Application())
    await runner.setup()
    tls = PortalTls(settings, runner)
    try:
        assert await tls.serve(NAME) is False, "nothing stored yet"
        store(tls.directory, issue(ca))
        assert await tls.serve(None) is False, "no name pushed: no HTTPS"
        assert await tls.serve(NAME) is True
        assert name_file_text(tls) == f"{NAME}\n"
        seen_first = await asyncio.to_thread(served, port, ca[1])
        sites = tls.sites
        store(tls.directory, issue(ca))  # renewed by agent.portal.certify
        assert await tls.serve(NAME) is True
        assert tls.sites is sites, "the same listening site"
        assert await asyncio.to_thread(served, port, ca[1]) != seen_first
        assert await tls.serve("r2.portal.example.com") is False, "a certificate for another name"
        assert name_file_text(tls) is None
        with pytest.raises(OSError):
            await asyncio.to_thread(served, port, ca[1])
    finally:
        await runner.cleanup()


async def test_a_key_that_is_not_the_certificates_is_not_served(
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], tmp_path: Path
) -> None:
    settings = Settings(flash_dir=tmp_path, portal_https_port=_free_port())
    tls = PortalTls(settings, web.AppRunner(web.Application()))
    (chain, _), (_, other_key) = issue(ca), issue(ca)
    store(tls.directory, (chain, other_key))  # a crash between certify's renames
    assert await tls.serve(NAME) is False
    assert tls.sites == () and name_file_text(tls) is None


async def test_with_two_lans_the_https_api_is_served_on_each_lans_portal_address(
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], tmp_path: Path
) -> None:
    shop, guest = IPv4Address("127.0.0.1"), IPv4Address("127.0.0.2")  # both loopback
    port = _free_port()
    settings = Settings(
        flash_dir=tmp_path,
        portal_address=shop,
        portal_https_port=port,
        lan_interfaces=("br-lan", "br-guest"),
        lans=(LanPortal("br-guest", guest),),
    )
    runner = web.AppRunner(web.Application())
    await runner.setup()
    tls = PortalTls(settings, runner)
    try:
        store(tls.directory, issue(ca))
        assert await tls.serve(NAME) is True
        assert tls.addresses == ("127.0.0.1", "127.0.0.2")
        seen = [await asyncio.to_thread(served, port, ca[1], NAME, str(a)) for a in (shop, guest)]
        assert seen[0] == seen[1], "the same certificate on both"
        await tls.stop()
        for address in (shop, guest):
            with pytest.raises(OSError):
                await asyncio.to_thread(served, port, ca[1], NAME, str(address))
    finally:
        await runner.cleanup()


async def test_a_lan_address_the_https_port_is_taken_on_serves_no_lan(
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], tmp_path: Path
) -> None:
    port = _free_port()
    settings = Settings(
        flash_dir=tmp_path,
        portal_address=IPv4Address("127.0.0.1"),
        portal_https_port=port,
        lan_interfaces=("br-lan", "br-guest"),
        lans=(LanPortal("br-guest", IPv4Address("127.0.0.2")),),
    )
    runner = web.AppRunner(web.Application())
    await runner.setup()
    tls = PortalTls(settings, runner)
    with socket.socket() as taken:
        taken.bind(("127.0.0.2", port))
        taken.listen()
        try:
            store(tls.directory, issue(ca))
            with pytest.raises(OSError):
                await tls.serve(NAME)
            assert tls.sites == ()
            with pytest.raises(OSError):
                await asyncio.to_thread(served, port, ca[1], NAME, "127.0.0.1")
        finally:
            await runner.cleanup()
