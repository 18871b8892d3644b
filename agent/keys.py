"""The router's key, its certificate requests and its certificate checks, through one backend.

Two backends do the same four things (make an EC P-256 key, derive its public key, sign a
certificate request, for the HTTPS portal with a DNS subjectAltName, check that a CA
issued a certificate):

- `cryptography`, when it is installed (python3-cryptography exists only where Rust builds:
  not on MIPS from OpenWrt 25.12 on);
- the `openssl` command-line tool otherwise (OpenWrt: openssl-util; Debian: openssl).

`choose_backend()` picks one: the LOOPSPOT_KEY_BACKEND environment variable
(auto, cryptography or openssl) or the argument overrides `auto`. agent.key_backend finds
which one without importing it, for the daemon's report. The private key is PEM PKCS#8
bytes everywhere; it stays on the router.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.key_backend import (
    ENVIRONMENT,
    NONE_FIX,
    KeyBackendError,
    detect_backend,
    openssl_tool,
    preference,
)

__all__ = ["CryptographyKeys", "KeyBackend", "KeyBackendError", "OpensslKeys", "choose_backend"]

VERIFY_FAILED = 2  # `openssl verify`'s exit status for a certificate that does not verify
OPENSSL_TIMEOUT = 60.0  # seconds; a slow MIPS router makes a P-256 key in well under one
# `openssl req` wants a config with a [req] section; ours, so no system openssl.cnf is needed.
_REQ_CONFIG = "[req]\ndistinguished_name = dn\n[dn]\n"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._ -]{0,64}")  # nothing -subj reads as syntax (/ + = \)
# A DNS name as -addext takes it (no ',' nor ':'), and as a certificate names a host
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})+")


class KeyBackend(Protocol):
    """What enrolment, renewal and the portal's certificate need from a crypto library."""

    @property
    def name(self) -> str:
        """`cryptography` or `openssl`: what the agent reports."""
        ...

    def new_key(self) -> bytes:
        """A fresh EC P-256 private key, PEM PKCS#8."""
        ...

    def public_key(self, key_pem: bytes) -> bytes:
        """The public half of `key_pem`, as DER SubjectPublicKeyInfo."""
        ...

    def certificate_request(
        self, key_pem: bytes, common_name: str = "", dns_name: str = ""
    ) -> bytes:
        """A PEM certificate request signed by `key_pem`; subject CN = `common_name`, or empty.

        With `dns_name`, it asks for that name alone (subjectAltName), as an ACME CA needs.
        """
        ...

    def issued_by(self, certificate_pem: bytes, ca_pem: bytes) -> bool:
        """True when the CA in `ca_pem` signed the certificate (validity dates not checked)."""
        ...


class CryptographyKeys:
    """The backend on the `cryptography` package, imported only when first used."""

    name = "cryptography"

    def new_key(self) -> bytes:
        """A fresh EC P-256 private key, PEM PKCS#8."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        return ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_key(self, key_pem: bytes) -> bytes:
        """The public half of `key_pem`, as DER SubjectPublicKeyInfo."""
        from cryptography.hazmat.primitives import serialization

        try:
            key = serialization.load_pem_private_key(key_pem, None)
        except (ValueError, TypeError) as error:
            raise KeyBackendError(f"the router's key is unreadable: {error}") from None
        return key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def certificate_request(
        self, key_pem: bytes, common_name: str = "", dns_name: str = ""
    ) -> bytes:
        """A PEM certificate request signed by `key_pem`; subject CN = `common_name`, or empty.

        With `dns_name`, it asks for that name alone (subjectAltName), as an ACME CA needs.
        """
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = serialization.load_pem_private_key(key_pem, None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise KeyBackendError("the router's key is not an EC key: enrol again")
        check_dns_name(dns_name)
        names = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
        builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names))
        if dns_name:
            alt = x509.SubjectAlternativeName([x509.DNSName(dns_name)])
            builder = builder.add_extension(alt, critical=False)
        return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def issued_by(self, certificate_pem: bytes, ca_pem: bytes) -> bool:
        """True when the CA in `ca_pem` signed the certificate (validity dates not checked)."""
        from cryptography import x509
        from cryptography.exceptions import InvalidSignature

        try:
            certificate = x509.load_pem_x509_certificate(certificate_pem)
            certificate.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


def check_dns_name(dns_name: str) -> None:
    """KeyBackendError unless `dns_name` is empty or a DNS name of two labels or more."""
    if dns_name and not _DNS_NAME.fullmatch(dns_name):
        raise KeyBackendError(
            f"dns_name {dns_name!r}: give a host name like r1.portal.example.com "
            "(letters, digits, '-' and dots, two labels or more)"
        )


def _private_file(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


@dataclass(frozen=True, slots=True)
class OpensslKeys:
    """The backend on the `openssl` tool: one short process per operation.

    A key goes to the tool as a 0600 file in a private temporary folder, removed at once.
    """

    tool: str
    name: str = "openssl"

    def _process(self, *argv: str) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                (self.tool, *argv), capture_output=True, timeout=OPENSSL_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise KeyBackendError(f"{self.tool} cannot run ({error}); {NONE_FIX}") from None

    def _run(self, *argv: str, what: str) -> bytes:
        done = self._process(*argv)
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip().splitlines()
            raise KeyBackendError(
                f"openssl could not {what}: {said[-1] if said else done.returncode}"
            )
        return done.stdout

    def new_key(self) -> bytes:
        """A fresh EC P-256 private key, PEM PKCS#8."""
        return self._run(
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-pkeyopt",
            "ec_param_enc:named_curve",
            what="make a key",
        )

    def public_key(self, key_pem: bytes) -> bytes:
        """The public half of `key_pem`, as DER SubjectPublicKeyInfo."""
        with tempfile.TemporaryDirectory(prefix="loopspot-keys-") as temporary:
            folder = Path(temporary)
            key = _private_file(folder, "router.key", key_pem)
            return self._run(
                "pkey", "-in", str(key), "-pubout", "-outform", "DER", what="read the router's key"
            )

    def certificate_request(
        self, key_pem: bytes, common_name: str = "", dns_name: str = ""
    ) -> bytes:
        """A PEM certificate request signed by `key_pem`; subject CN = `common_name`, or empty.

        With `dns_name`, it asks for that name alone (subjectAltName), as an ACME CA needs.
        """
        if not _PLAIN_NAME.fullmatch(common_name):
            raise KeyBackendError(
                f"common_name {common_name!r}: openssl -subj takes letters, digits, '.', '_', "
                "'-' and spaces here; use a router_id"
            )
        check_dns_name(dns_name)
        with tempfile.TemporaryDirectory(prefix="loopspot-keys-") as temporary:
            folder = Path(temporary)
            key = _private_file(folder, "router.key", key_pem)
            config = _private_file(folder, "req.cnf", _REQ_CONFIG.encode())
            subject = f"/CN={common_name}" if common_name else "/"
            alt = ("-addext", f"subjectAltName=DNS:{dns_name}") if dns_name else ()
            return self._run(
                "req",
                "-new",
                "-config",
                str(config),
                "-key",
                str(key),
                "-subj",
                subject,
                "-sha256",
                *alt,
                "-outform",
                "PEM",
                what="make a certificate request",
            )

    def issued_by(self, certificate_pem: bytes, ca_pem: bytes) -> bool:
        """True when the CA in `ca_pem` signed the certificate (validity dates not checked)."""
        with tempfile.TemporaryDirectory(prefix="loopspot-keys-") as temporary:
            folder = Path(temporary)
            ca = _private_file(folder, "ca.crt", ca_pem)
            certificate = _private_file(folder, "router.crt", certificate_pem)
            # -trusted: this CA alone, not the system's; -no_check_time: as cryptography does
            done = self._process("verify", "-no_check_time", "-trusted", str(ca), str(certificate))
        if done.returncode not in (0, VERIFY_FAILED):
            said = done.stderr.decode(errors="replace").strip().splitlines()
            raise KeyBackendError(f"openssl verify cannot run here: {said[-1] if said else ''}")
        return done.returncode == 0


def choose_backend(asked: str | None = None) -> KeyBackend:
    """The backend to use: `asked`, else LOOPSPOT_KEY_BACKEND, else cryptography first.

    KeyBackendError, naming what to install, when there is none.
    """
    name = detect_backend(asked)
    if name == "cryptography":
        try:
            import cryptography.hazmat.primitives.asymmetric.ec  # noqa: F401 (it loads)
        except ImportError as error:
            tool = openssl_tool()
            if preference(asked) == "cryptography" or tool is None:
                raise KeyBackendError(
                    f"cryptography is installed but does not load ({error}): reinstall "
                    f"python3-cryptography, or set {ENVIRONMENT}=openssl"
                ) from None
            return OpensslKeys(tool)
        return CryptographyKeys()
    tool = openssl_tool()
    if tool is None:  # gone since detect_backend looked
        raise KeyBackendError(NONE_FIX)
    return OpensslKeys(tool)
