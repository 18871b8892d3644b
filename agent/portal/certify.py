"""Get the HTTPS portal's certificate for a key made here, which never leaves the router.

The cloud pushes the portal's name in the router's config. This makes a key and a
certificate request for that name and sends the request to the cloud's enrolment server
over mutual TLS, with the router's own certificate (as agent.renewal does). The cloud
checks that the name is this router's, orders the certificate from its ACME CA over
dns-01 (cloud.portal_cert) and answers the chain. Files in the portal's TLS directory:

    key.pem    (0600)  the key, PEM PKCS#8
    chain.pem          the certificate chain, leaf first
    name               the name they are for

each written as `.next` and renamed, the key last: a crash between leaves a pair that
does not match, which the next check replaces.

The key and the request go through agent.keys (cryptography, or the openssl tool where
python3-cryptography does not exist); the certificate is read with agent.certificate.
Blocking: the daemon runs it as a short process of its own (agent.portal.tls),
`python -m agent.portal.certify ... --if-due`.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.certificate import CertificateFacts, read_certificate
from agent.enrol import (
    EnrolError,
    answer_field,
    cloud_tls_context,
    load_identity,
    post_json,
)
from agent.flash import write_atomically
from agent.keys import KeyBackend, KeyBackendError, choose_backend

PORTAL_CERT_PATH = "/v1/portal-cert"
# Seconds to wait for the answer: the cloud places the ACME order meanwhile (it gives up
# after 90 s); an answer given up on would cost another order, and CAs limit those.
ORDER_WAIT = 150.0
RENEW_BEFORE = timedelta(days=30)
KEY, CHAIN, NAME = "key.pem", "chain.pem", "name"
NEXT = ".next"


def portal_cert_url(enrol_url: str) -> str:
    """The portal-certificate endpoint beside the enrolment endpoint the router enrolled at."""
    parts = urllib.parse.urlsplit(enrol_url)
    return urllib.parse.urlunsplit(parts._replace(path=PORTAL_CERT_PATH, query="", fragment=""))


def certificate_request(keys: KeyBackend, key_pem: bytes, name: str) -> bytes:
    """A PEM request for `key_pem` naming `name` alone (subjectAltName), with an empty subject."""
    return keys.certificate_request(key_pem, dns_name=name)


def names_of(certificate: CertificateFacts) -> list[str]:
    """The DNS names a certificate is for."""
    return list(certificate.dns_names)


def _matches(leaf: CertificateFacts, key_pem: bytes, name: str, keys: KeyBackend) -> bool:
    """True when `leaf` is for `name` and the key in `key_pem`."""
    return name in names_of(leaf) and leaf.public_key_der == keys.public_key(key_pem)


def fresh_until(
    directory: Path, name: str, now: datetime, keys: KeyBackend | None = None
) -> datetime | None:
    """When the stored certificate ends, if it is for `name` and this key and not due yet."""
    try:
        if (directory / NAME).read_text().strip() != name:
            return None
        leaf = read_certificate((directory / CHAIN).read_bytes())
        key_pem = (directory / KEY).read_bytes()
        if not _matches(leaf, key_pem, name, keys or choose_backend()):
            return None
    except (OSError, ValueError, KeyBackendError):
        return None
    ends = leaf.not_after
    return ends if now < ends - RENEW_BEFORE else None


def certify(
    directory: Path,
    credentials_dir: Path,
    name: str,
    timeout: float = ORDER_WAIT,
    keys: KeyBackend | None = None,
) -> datetime:
    """Get a certificate for `name` and a new key and put them in place; EnrolError says why not.

    KeyBackendError when neither backend can make the key.
    """
    keys = keys or choose_backend()
    identity = load_identity(credentials_dir, keys)
    if not identity.enrol_url:
        raise EnrolError(
            f"{credentials_dir}: no enrol_url; enrol again to get a portal certificate"
        )
    context = cloud_tls_context(identity.ca_file)
    try:
        context.load_cert_chain(identity.certificate_file, identity.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise EnrolError(f"{credentials_dir}: cannot present its certificate: {exc}") from None
    key_pem = keys.new_key()
    body = {"csr": certificate_request(keys, key_pem, name).decode()}
    url = portal_cert_url(identity.enrol_url)
    answer = post_json(url, body, context, timeout, what="portal certificate")
    chain = answer_field(answer, "certificate", str).encode()
    try:
        leaf = read_certificate(chain)
    except ValueError as exc:
        raise EnrolError(f"the cloud's answer is unusable: {exc}") from None
    if not _matches(leaf, key_pem, name, keys):
        raise EnrolError(f"the cloud's certificate is not for this key and {name}")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for filename, data in ((NAME, f"{name}\n".encode()), (CHAIN, chain), (KEY, key_pem)):
        write_atomically(directory / (filename + NEXT), data, 0o600)
    for filename in (NAME, CHAIN, KEY):
        os.replace(directory / (filename + NEXT), directory / filename)
    return leaf.not_after


def main(argv: list[str] | None = None) -> int:
    """0: renewed, or fresh with --if-due (it says which on stdout); 1: failed, and why."""
    parser = argparse.ArgumentParser(prog="python -m agent.portal.certify", description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="the portal's TLS directory")
    parser.add_argument("--credentials-dir", type=Path, required=True)
    parser.add_argument("--name", required=True, help="the portal's name, from the cloud")
    parser.add_argument("--if-due", action="store_true", help="only within 30 days of its end")
    args = parser.parse_args(argv)
    ends = fresh_until(args.dir, args.name, datetime.now(UTC)) if args.if_due else None
    if ends is not None:
        print(f"fresh: {args.name} until {ends.isoformat()}")
        return 0
    try:
        ends = certify(args.dir, args.credentials_dir, args.name)
    except (EnrolError, KeyBackendError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"renewed: {args.name} until {ends.isoformat()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
