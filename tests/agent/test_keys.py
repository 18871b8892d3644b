"""Both key backends, cryptography and the openssl tool, do the same four things the same way.

Each operation runs on both, and the results are read back by the other and by the cloud's
CA, which must sign a request from either.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.certificate import read_certificate
from agent.key_backend import ENVIRONMENT, backend_report, detect_backend, openssl_tool
from agent.keys import CryptographyKeys, KeyBackend, KeyBackendError, OpensslKeys, choose_backend
from cloud.ca import CertificateAuthority, certificate_pem
from lab.hidden import environment_without

NOW = datetime.now(UTC)


def openssl() -> OpensslKeys:
    tool = openssl_tool()
    assert tool is not None, "the openssl tool is missing: apt-get install openssl"
    return OpensslKeys(tool)


BACKENDS: dict[str, Callable[[], KeyBackend]] = {
    "cryptography": CryptographyKeys,
    "openssl": openssl,
}


@pytest.fixture(params=sorted(BACKENDS))
def keys(request: pytest.FixtureRequest) -> KeyBackend:
    """Each backend in turn."""
    return BACKENDS[request.param]()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca"), NOW)


def both() -> list[KeyBackend]:
    return [CryptographyKeys(), openssl()]


def test_a_new_key_is_p256_pkcs8_and_both_backends_derive_the_same_public_key(
    keys: KeyBackend,
) -> None:
    key_pem = keys.new_key()

    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    expected = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert [other.public_key(key_pem) for other in both()] == [expected, expected]


def test_two_new_keys_differ(keys: KeyBackend) -> None:
    assert keys.new_key() != keys.new_key()


@pytest.mark.parametrize("common_name", ["", "r-abc"])
def test_the_cloud_ca_signs_a_request_from_either_backend_and_both_check_it(
    keys: KeyBackend, ca: CertificateAuthority, common_name: str
) -> None:
    key_pem = keys.new_key()

    request = keys.certificate_request(key_pem, common_name)
    certificate = read_certificate(certificate_pem(ca.sign_router_request(request, "r-abc", NOW)))

    assert certificate.common_names == ("r-abc",)
    assert certificate.public_key_der == keys.public_key(key_pem)
    pem, ca_pem = certificate.pem.encode(), ca.certificate_pem.encode()
    assert [other.issued_by(pem, ca_pem) for other in both()] == [True, True]


def test_a_request_naming_the_router_carries_that_name(keys: KeyBackend) -> None:
    from cloud.ca import load_request

    request = load_request(keys.certificate_request(keys.new_key(), "r-abc"))

    assert request.subject.rfc4514_string() == "CN=r-abc"


def test_neither_backend_accepts_a_certificate_from_another_ca_with_the_same_name(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    stranger = CertificateAuthority.create(tmp_path / "stranger", NOW)  # "Loopspot Cloud CA" too
    key_pem = CryptographyKeys().new_key()
    request = CryptographyKeys().certificate_request(key_pem)
    forged = certificate_pem(stranger.sign_router_request(request, "r-abc", NOW)).encode()

    assert [k.issued_by(forged, ca.certificate_pem.encode()) for k in both()] == [False, False]


def test_neither_backend_accepts_a_certificate_whose_signature_was_changed(
    ca: CertificateAuthority,
) -> None:
    key_pem = CryptographyKeys().new_key()
    genuine = ca.sign_router_request(CryptographyKeys().certificate_request(key_pem), "r-a", NOW)
    der = bytearray(read_certificate(certificate_pem(genuine)).der)
    der[-5] ^= 0x01  # inside the signature's last integer
    tampered = ssl.DER_cert_to_PEM_cert(bytes(der)).encode()

    assert [k.issued_by(tampered, ca.certificate_pem.encode()) for k in both()] == [False, False]


def test_both_backends_count_an_expired_certificate_as_issued(
    ca: CertificateAuthority,
) -> None:
    key_pem = CryptographyKeys().new_key()
    request = CryptographyKeys().certificate_request(key_pem)
    long_ago = ca.sign_router_request(request, "r-a", NOW - timedelta(days=800))
    pem = certificate_pem(long_ago).encode()

    assert read_certificate(pem).not_after < NOW  # expiry is renewal's business, not this check's
    assert [k.issued_by(pem, ca.certificate_pem.encode()) for k in both()] == [True, True]


def test_the_environment_picks_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENVIRONMENT, "openssl")
    assert choose_backend().name == detect_backend() == "openssl"
    monkeypatch.setenv(ENVIRONMENT, "cryptography")
    assert choose_backend().name == detect_backend() == "cryptography"
    monkeypatch.delenv(ENVIRONMENT)
    assert choose_backend().name == "cryptography"  # installed here: it goes first
    assert choose_backend("openssl").name == "openssl"


def test_an_unknown_backend_name_is_refused_with_the_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENVIRONMENT, "nacl")
    with pytest.raises(KeyBackendError, match="auto, cryptography, openssl"):
        choose_backend()
    assert backend_report()[0] == "none"


def test_with_neither_backend_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("agent.key_backend.cryptography_installed", lambda: False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no openssl on it

    with pytest.raises(KeyBackendError, match="opkg install openssl-util"):
        choose_backend()
    with pytest.raises(KeyBackendError, match="python3-cryptography"):
        choose_backend("cryptography")
    name, said = backend_report()
    assert name == "none"
    assert "opkg install openssl-util" in said


def test_an_openssl_tool_that_cannot_run_is_named(tmp_path: Path) -> None:
    with pytest.raises(KeyBackendError, match="cannot run"):
        OpensslKeys(str(tmp_path / "openssl")).new_key()


def test_a_key_openssl_cannot_read_is_an_error_not_a_mismatch() -> None:
    with pytest.raises(KeyBackendError, match="could not read the router's key"):
        openssl().public_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


def test_the_daemon_finds_the_backend_without_loading_it_nor_cryptography() -> None:
    code = (
        "import sys, agent.daemon, agent.key_backend\n"
        "print(agent.key_backend.backend_report()[0], 'agent.keys' in sys.modules)\n"
        "import agent.enrol, agent.renewal\n"
        "print('cryptography' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["cryptography", "False", "False"]


def test_an_installer_with_neither_backend_is_told_to_install_openssl_util(
    tmp_path: Path,
) -> None:
    environment = environment_without(["cryptography"], tmp_path / "hidden")
    environment["PATH"] = str(tmp_path)  # no openssl tool either
    ca = tmp_path / "cloud-ca.crt"
    ca.write_text("the file must exist; it is not read before the backend is chosen")
    argv = ["AAAA-BBBB-CCCC", "--url", "https://127.0.0.1:1", "--ca", str(ca)]
    code = "import sys; from agent.enrol import enrol_main; sys.exit(enrol_main(sys.argv[1:]))"

    done = subprocess.run(
        [sys.executable, "-c", code, *argv, "--dir", str(tmp_path / "credentials")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2, done.stderr
    assert "neither cryptography nor the openssl tool" in done.stderr
    assert "opkg install openssl-util" in done.stderr
    assert not (tmp_path / "credentials").exists()


@pytest.mark.parametrize("name", ["r-a/CN=r-b", "r-a+CN=r-b", "r\\a", "x" * 65])
def test_a_common_name_openssl_would_read_as_syntax_is_refused(name: str) -> None:
    with pytest.raises(KeyBackendError, match="common_name"):
        openssl().certificate_request(openssl().new_key(), name)


def test_a_request_for_the_portal_from_either_backend_names_it_in_its_subject_alt_name(
    keys: KeyBackend,
) -> None:
    from cryptography import x509

    from cloud.ca import load_request

    request = load_request(keys.certificate_request(keys.new_key(), dns_name="r1.portal.example"))

    names = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["r1.portal.example"]
    assert request.subject.rfc4514_string() == ""
    plain = load_request(keys.certificate_request(keys.new_key()))
    assert not [e for e in plain.extensions if isinstance(e.value, x509.SubjectAlternativeName)]


@pytest.mark.parametrize(
    "name",
    ["localhost", "r1.portal.example.com,DNS:evil.com", "a..b", "-a.b", "a b.c", "x" * 64 + ".c"],
)
def test_a_dns_name_no_certificate_could_name_is_refused_by_both_backends(name: str) -> None:
    for keys in both():
        with pytest.raises(KeyBackendError, match="dns_name"):
            keys.certificate_request(keys.new_key(), dns_name=name)
