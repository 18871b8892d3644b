"""Renew this router's client certificate before it expires, with the certificate itself.

The router's certificate lasts a year (cloud.ca.ROUTER_LIFETIME). Within RENEW_BEFORE of
its end, the agent makes a new key here, sends a certificate request to the cloud's
enrolment server over HTTPS, presenting its current certificate (mutual TLS), and swaps
the new pair in: router.key.next and router.crt.next, then renames, which
agent.credentials.finish_renewal completes after a crash. The MQTT link takes the new pair at
its next connection; the old one stays valid until then.

The new key and its request come from agent.keys (cryptography or the openssl tool); the
request names the router (CN = router_id), which the cloud checks against the certificate
presented. Blocking: call it off the event loop.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.certificate import read_certificate
from agent.credentials import CERT_FILE, KEY_FILE, NEXT, finish_renewal
from agent.enrol import (
    TIMEOUT,
    EnrolError,
    EnrolledIdentity,
    answer_field,
    check_certificate,
    cloud_tls_context,
    load_identity,
    post_json,
)
from agent.flash import write_atomically
from agent.keys import KeyBackend, KeyBackendError, choose_backend

RENEW_PATH = "/v1/renew"
RENEW_BEFORE = timedelta(days=30)


def renewal_due(not_after: datetime, now: datetime) -> bool:
    """True once the certificate is within RENEW_BEFORE of its end (or past it)."""
    return now >= not_after - RENEW_BEFORE


def expires_at(certificate_file: Path) -> datetime:
    """When the certificate in `certificate_file` stops being valid; ValueError if unreadable."""
    return read_certificate(certificate_file.read_bytes()).not_after


def renew_url(enrol_url: str) -> str:
    """The renewal endpoint beside the enrolment endpoint the router enrolled at."""
    parts = urllib.parse.urlsplit(enrol_url)
    return urllib.parse.urlunsplit(parts._replace(path=RENEW_PATH, query="", fragment=""))


def renew(
    credentials_dir: Path, *, timeout: float = TIMEOUT, keys: KeyBackend | None = None
) -> EnrolledIdentity:
    """Get a new certificate for a new key, and put both in place; EnrolError says why not.

    KeyBackendError when no crypto backend can run here.
    """
    keys = keys or choose_backend()
    identity = load_identity(credentials_dir, keys)
    if not identity.enrol_url:
        raise EnrolError(
            f"{credentials_dir}: enrolled before renewal existed (no enrol_url); "
            "enrol again with a new claim code before the certificate expires"
        )
    context = cloud_tls_context(identity.ca_file)
    try:
        context.load_cert_chain(identity.certificate_file, identity.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise EnrolError(f"{credentials_dir}: cannot present its certificate: {exc}") from None
    key_pem = keys.new_key()
    body = {"csr": keys.certificate_request(key_pem, identity.router_id).decode()}
    answer = post_json(renew_url(identity.enrol_url), body, context, timeout, what="renewal")
    try:
        certificate = read_certificate(answer_field(answer, "certificate", str))
        ca = read_certificate(identity.ca_file.read_bytes())
    except (OSError, ValueError) as exc:
        raise EnrolError(f"the cloud's answer is unusable: {exc}") from None
    check_certificate(certificate, ca, identity.router_id, key_pem, keys)
    write_atomically(credentials_dir / (KEY_FILE + NEXT), key_pem, 0o600)
    write_atomically(credentials_dir / (CERT_FILE + NEXT), certificate.pem.encode(), 0o644)
    finish_renewal(credentials_dir)
    return load_identity(credentials_dir, keys)


def renewal_main(credentials_dir: Path, *, only_if_due: bool, as_json: bool) -> int:
    """`loopspot-agent renew`: 0 renewed or not due yet, 1 refused or unreachable."""
    try:
        ends = expires_at(credentials_dir / CERT_FILE)
    except (OSError, ValueError) as exc:
        print(f"error: {credentials_dir / CERT_FILE}: {exc}; enrol first", file=sys.stderr)
        return 1
    renewed = False
    if not only_if_due or renewal_due(ends, datetime.now(UTC)):
        try:
            ends = expires_at(renew(credentials_dir).certificate_file)
        except (EnrolError, KeyBackendError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        renewed = True
    if as_json:
        print(json.dumps({"renewed": renewed, "valid_until": ends.isoformat()}))
    else:
        print(f"{'renewed; ' if renewed else ''}certificate valid until {ends.isoformat()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m agent.renewal --dir DIR [--if-due]`: what the daemon runs once in a while."""
    parser = argparse.ArgumentParser(prog="python -m agent.renewal", description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="the credentials directory")
    parser.add_argument("--if-due", action="store_true", help="only within 30 days of its end")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    return renewal_main(args.dir, only_if_due=args.if_due, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
