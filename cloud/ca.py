"""The cloud's certificate authority: one EC P-256 key and self-signed certificate on disk.

It issues the TLS server certificates of the broker and the enrolment service, and signs
the certificate requests of routers. A router's private key is made on the router and
never leaves it; the CA sees only the request, checks its signature and key, and writes
the subject itself (CN = router_id), so nothing a router asks for beyond its key is copied.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.wire import WireError, check_router_id
from cloud.errors import CloudConfigError, EnrolmentError

CA_LIFETIME = timedelta(days=3650)
SERVER_LIFETIME = timedelta(days=397)
ROUTER_LIFETIME = timedelta(days=365)
RENEW_BEFORE = timedelta(days=30)  # a server certificate closer than this to expiry is reissued
CLOCK_SKEW = timedelta(minutes=10)  # certificates start this much in the past
MIN_RSA_BITS = 2048
ACCEPTED_CURVES = (ec.SECP256R1, ec.SECP384R1)
ISSUED_LEDGER = "issued.jsonl"  # one line per router certificate signed: what retiring revokes


class CertificateRequestError(EnrolmentError):
    """A router's certificate request is unusable: bad PEM, bad signature, weak key, wrong CN."""


def ca_directory(data_dir: Path) -> Path:
    """Where the CA lives under the cloud's data directory."""
    return data_dir / "ca"


def server_names(*hosts: str) -> list[str]:
    """The names a server certificate must carry: `hosts` (minus wildcards) and loopback."""
    wildcard = {"", "0.0.0.0", "::", "*"}
    return list(dict.fromkeys([h for h in hosts if h not in wildcard] + ["localhost", "127.0.0.1"]))


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER encoding, lower-case hex (64 characters)."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` (mode 0600) through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    _write_private(path, data)
    path.chmod(0o644)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


@dataclass(frozen=True, slots=True)
class ServerCredentials:
    """A TLS server's certificate and key files, both PEM."""

    certificate: Path
    key: Path


class CertificateAuthority:
    """The CA in `directory` (ca.key, mode 0600, and ca.crt)."""

    def __init__(
        self, directory: Path, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate
    ) -> None:
        self.directory = directory
        self.key = key
        self.certificate = certificate

    @property
    def certificate_path(self) -> Path:
        """The CA certificate's file: routers and the broker trust this one file."""
        return self.directory / "ca.crt"

    @property
    def certificate_pem(self) -> str:
        """The CA certificate, PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    @classmethod
    def create(
        cls, directory: Path, now: datetime, name: str = "Loopspot Cloud CA"
    ) -> CertificateAuthority:
        """Make a new CA in `directory`; refuses to overwrite an existing key."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_path = directory / "ca.key"
        if key_path.exists():
            raise CloudConfigError(f"{key_path} exists already: load it, or move it away first")
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_private(key_path, _key_pem(key))
        _write_public(directory / "ca.crt", certificate.public_bytes(serialization.Encoding.PEM))
        return cls(directory, key, certificate)

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        """The CA already in `directory`; CloudConfigError names a missing or broken file."""
        try:
            key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
            certificate = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
        except FileNotFoundError as exc:
            raise CloudConfigError(
                f"no CA in {directory} ({exc.filename} is missing): run `loopspot-cloud init`"
            ) from None
        except ValueError as exc:
            raise CloudConfigError(f"the CA in {directory} is unreadable: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CloudConfigError(f"{directory / 'ca.key'} is not an EC key")
        if certificate.public_key() != key.public_key():
            raise CloudConfigError(f"{directory}: ca.crt does not belong to ca.key")
        return cls(directory, key, certificate)

    @classmethod
    def load_or_create(cls, directory: Path, now: datetime) -> CertificateAuthority:
        """The CA in `directory`, made first if there is none."""
        if (directory / "ca.key").exists():
            return cls.load(directory)
        return cls.create(directory, now)

    def _leaf(
        self,
        subject: x509.Name,
        public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        now: datetime,
        lifetime: timedelta,
        usage: x509.ObjectIdentifier,
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )

    def issue_server_certificate(
        self, names: Iterable[str], now: datetime, lifetime: timedelta = SERVER_LIFETIME
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A server certificate and its new key for DNS names and IP addresses `names`."""
        unique = list(dict.fromkeys(n for n in names if n))
        if not unique:
            raise CloudConfigError("a server certificate needs at least one DNS name or IP")
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, unique[0])])
        builder = self._leaf(
            subject, key.public_key(), now, lifetime, ExtendedKeyUsageOID.SERVER_AUTH
        ).add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in unique]), critical=False
        )
        return builder.sign(self.key, hashes.SHA256()), key

    def ensure_server_credentials(
        self, names: Iterable[str], directory: Path, now: datetime
    ) -> ServerCredentials:
        """server.crt/server.key in `directory`, reissued when names, CA or expiry call for it."""
        wanted = list(dict.fromkeys(n for n in names if n))
        credentials = ServerCredentials(directory / "server.crt", directory / "server.key")
        if self._still_good(credentials, wanted, now):
            return credentials
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        certificate, key = self.issue_server_certificate(wanted, now)
        _write_private(credentials.key, _key_pem(key))
        _write_public(credentials.certificate, certificate.public_bytes(serialization.Encoding.PEM))
        return credentials

    def _still_good(self, credentials: ServerCredentials, names: list[str], now: datetime) -> bool:
        try:
            certificate = x509.load_pem_x509_certificate(credentials.certificate.read_bytes())
            key_present = credentials.key.exists()
            sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except (OSError, ValueError, x509.ExtensionNotFound):
            return False
        have = {str(v) for v in sans.value.get_values_for_type(x509.DNSName)}
        have |= {str(v) for v in sans.value.get_values_for_type(x509.IPAddress)}
        want = {str(ipaddress.ip_address(n)) if _is_ip(n) else n for n in names}
        return (
            key_present
            and have == want
            and certificate.issuer == self.certificate.subject
            and self._signed_by_me(certificate)
            and certificate.not_valid_after_utc - now > RENEW_BEFORE
        )

    def _signed_by_me(self, certificate: x509.Certificate) -> bool:
        try:
            certificate.verify_directly_issued_by(self.certificate)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def sign_router_request(
        self,
        csr_pem: bytes | str,
        router_id: str,
        now: datetime,
        lifetime: timedelta = ROUTER_LIFETIME,
    ) -> x509.Certificate:
        """A client certificate with CN = `router_id` for the key in `csr_pem`.

        The request must be validly self-signed with an EC P-256/P-384 or RSA >= 2048 key, and
        its subject must be empty or name `router_id` as its only CN; else
        CertificateRequestError says which.
        """
        try:
            check_router_id(router_id)
        except WireError as exc:
            raise CertificateRequestError(str(exc)) from None
        request = load_request(csr_pem)
        public_key = request.public_key()
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            if not isinstance(public_key.curve, ACCEPTED_CURVES):
                raise CertificateRequestError(f"csr: curve {public_key.curve.name} is not accepted")
        elif isinstance(public_key, rsa.RSAPublicKey):
            if public_key.key_size < MIN_RSA_BITS:
                raise CertificateRequestError(f"csr: RSA keys need at least {MIN_RSA_BITS} bits")
        else:
            raise CertificateRequestError("csr: the key must be EC P-256/P-384 or RSA")
        names = [str(a.value) for a in request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if names and names != [router_id]:
            raise CertificateRequestError(
                f"csr: subject CN {names!r} differs from the claimed router {router_id!r}; "
                "leave the subject empty or use that router_id"
            )
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, router_id)])
        builder = self._leaf(subject, public_key, now, lifetime, ExtendedKeyUsageOID.CLIENT_AUTH)
        certificate = builder.sign(self.key, hashes.SHA256())
        self._record_issued(router_id, certificate)
        return certificate

    def _record_issued(self, router_id: str, certificate: x509.Certificate) -> None:
        # One short line in one O_APPEND write: concurrent signers never interleave.
        line = json.dumps(
            {
                "router_id": router_id,
                "serial": str(certificate.serial_number),
                "not_after": certificate.not_valid_after_utc.isoformat(),
            }
        )
        fd = os.open(self.directory / ISSUED_LEDGER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def issued_serials(self, router_id: str) -> list[int]:
        """Serial numbers of every certificate this CA signed for `router_id`, oldest first."""
        try:
            lines = (self.directory / ISSUED_LEDGER).read_text().splitlines()
        except FileNotFoundError:
            return []
        serials = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:  # a torn last line after a crash: skip it
                continue
            if entry.get("router_id") == router_id:
                serials.append(int(entry["serial"]))
        return serials


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def load_request(csr_pem: bytes | str) -> x509.CertificateSigningRequest:
    """A parsed certificate request whose self-signature holds; else CertificateRequestError."""
    data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
    try:
        request = x509.load_pem_x509_csr(data)
    except ValueError:
        raise CertificateRequestError("csr: not a PEM certificate request") from None
    if not request.is_signature_valid:
        raise CertificateRequestError("csr: its signature does not match its key")
    return request


def certificate_pem(certificate: x509.Certificate) -> str:
    """`certificate` as PEM text."""
    return certificate.public_bytes(serialization.Encoding.PEM).decode()
