"""The link over TLS with client certificates, as an enrolled router connects."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lab import addresses as A
from lab.broker import Broker
from lab.router import LAB_ROUTER_ID, RouterAgent
from lab.topology import Lab
from tests.lab.test_link import CloudSide, Uplink, online, start_linked, wait_for

pytestmark = pytest.mark.lab
MakeAgent = Callable[..., RouterAgent]
Key = ec.EllipticCurvePrivateKey


def _pem_key(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certificate(
    name: str, key: Key, issuer: tuple[x509.Name, Key] | None, ips: tuple[str, ...] = ()
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if ips:
        names = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(folder: Path) -> dict[str, Path]:
    """A CA, the broker's certificate (for the wan and loopback addresses) and two clients."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("Lab CA", ca_key, None)
    files = {"ca": folder / "ca.crt"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    people = {"broker": ("broker", (A.WAN_IP, "127.0.0.1")), "router": (LAB_ROUTER_ID, ()),
              "cloud": ("test-cloud", ())}  # fmt: skip
    for role, (name, ips) in people.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(name, key, (ca.subject, ca_key), ips)
        files[f"{role}.crt"] = folder / f"{role}.crt"
        files[f"{role}.key"] = folder / f"{role}.key"
        files[f"{role}.crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{role}.key"].write_bytes(_pem_key(key))
    return files


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """Certificates for a TLS broker and its clients."""
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_broker(pki: dict[str, Path]) -> Iterator[Broker]:
    """Mosquitto that speaks only TLS and wants a client certificate from everyone."""
    config = (
        f"cafile {pki['ca']}\ncertfile {pki['broker.crt']}\nkeyfile {pki['broker.key']}\n"
        "require_certificate true\nuse_identity_as_username true\n"
    )
    with Broker(config) as running:
        yield running


def test_an_enrolled_router_connects_over_tls_with_its_certificate(
    lab: Lab, make_agent: MakeAgent, tls_broker: Broker, pki: dict[str, Path]
) -> None:
    relay = Uplink(lab, tls_broker)
    relay.start()
    cloud = CloudSide(tls_broker.port, tls=(pki["ca"], pki["cloud.crt"], pki["cloud.key"]))
    try:
        wait_for(cloud.subscribed.is_set, timeout=5)
        start_linked(
            make_agent,
            lab,
            tls="1",
            ca_file=str(pki["ca"]),
            cert_file=str(pki["router.crt"]),
            key_file=str(pki["router.key"]),
        )
        status = wait_for(lambda: online(cloud), timeout=15)
        assert status.router_id == LAB_ROUTER_ID
    finally:
        cloud.close()
        relay.stop()


def test_a_broker_the_ca_did_not_sign_gets_nothing(
    lab: Lab, make_agent: MakeAgent, tls_broker: Broker, pki: dict[str, Path], tmp_path: Path
) -> None:
    stranger = make_pki(tmp_path / "stranger")  # the router trusts another CA
    relay = Uplink(lab, tls_broker)
    relay.start()
    cloud = CloudSide(tls_broker.port, tls=(pki["ca"], pki["cloud.crt"], pki["cloud.key"]))
    try:
        wait_for(cloud.subscribed.is_set, timeout=5)
        agent = start_linked(
            make_agent,
            lab,
            tls="1",
            ca_file=str(stranger["ca"]),
            cert_file=str(pki["router.crt"]),
            key_file=str(pki["router.key"]),
        )
        wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in agent.logs(), timeout=15)
        assert not cloud.payloads()
    finally:
        cloud.close()
        relay.stop()
