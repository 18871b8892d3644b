"""Enrol this router with the cloud: once, at install, with the claim code an operator gave.

The flow: make an EC P-256 key here (it never leaves the router), send a certificate
request with an empty subject and the code over HTTPS, trusting only the cloud's CA
shipped with the package. The cloud knows which router the code is for and writes CN =
router_id itself; the answer carries that router_id, the client certificate, the CA,
the broker's address and the alliance key. Everything is checked, then written to
credentials_dir, identity.json last, each file through a rename:

    router.key  (0600)  the private key, PEM PKCS#8
    router.crt          the client certificate, CN = router_id
    ca.crt              the cloud CA: verifies the broker
    identity.json       {router_id, broker_host, broker_port, alliance_key (hex), enrol_url}

Before the certificate expires, agent.renewal swaps in a new key and certificate the same
way, through `.next` files that finish_renewal completes after a crash.

The key, the request and the signature check go through agent.keys (cryptography, or the
openssl tool where cryptography is not installed); reading certificates needs neither.

Blocking on purpose: it runs once, from `loopspot-agent enrol CODE`, before the agent.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.certificate import CertificateFacts, read_certificate
from agent.credentials import (
    CA_FILE,
    CERT_FILE,
    IDENTITY_FILE,
    KEY_FILE,
    finish_renewal,
)
from agent.errors import LoopspotError
from agent.flash import write_atomically
from agent.keys import KeyBackend, KeyBackendError, choose_backend
from agent.wire import WireError, check_router_id

DEFAULT_CREDENTIALS_DIR = Path("/etc/loopspot/credentials")
DEFAULT_CLOUD_CA = Path("/etc/loopspot/cloud-ca.crt")
ENROL_PATH = "/v1/enrol"
TIMEOUT = 30.0
MAX_ANSWER = 1024 * 1024


class EnrolError(LoopspotError):
    """Enrolment failed: refused by the cloud, unreachable, or an unusable answer or file."""


@dataclass(frozen=True, slots=True)
class EnrolledIdentity:
    """Who this router is to the cloud, and the files its MQTT link uses for TLS."""

    router_id: str
    broker_host: str
    broker_port: int
    alliance_key: bytes
    key_file: Path
    certificate_file: Path
    ca_file: Path
    enrol_url: str = ""  # the enrolment endpoint; "" for identities enrolled before renewal


def new_key(keys: KeyBackend | None = None) -> bytes:
    """A fresh EC P-256 private key, PEM PKCS#8."""
    return (keys or choose_backend()).new_key()


def certificate_request(
    key_pem: bytes, common_name: str = "", keys: KeyBackend | None = None
) -> bytes:
    """A PEM certificate request for `key_pem`; an empty subject unless `common_name` is given.

    Enrolment leaves the subject empty (the cloud names the router); renewal names it.
    """
    return (keys or choose_backend()).certificate_request(key_pem, common_name)


def _endpoint(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise EnrolError(f"url: {url!r} must be https://HOST[:PORT][/v1/enrol]")
    if parts.path in ("", "/"):
        parts = parts._replace(path=ENROL_PATH)
    return urllib.parse.urlunsplit(parts)


def cloud_tls_context(cloud_ca: Path) -> ssl.SSLContext:
    """A TLS 1.2+ client context that trusts only the cloud's CA."""
    try:
        context = ssl.create_default_context(cafile=str(cloud_ca))
    except (OSError, ssl.SSLError) as exc:
        raise EnrolError(
            f"cloud CA {cloud_ca}: unreadable ({exc}); install the cloud's ca.crt"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def post_json(
    url: str, body: dict[str, str], context: ssl.SSLContext, timeout: float, what: str = "enrolment"
) -> Any:
    """POST `body` as JSON over HTTPS; the JSON answer, or EnrolError with the cloud's reason."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
            return json.loads(answer.read(MAX_ANSWER))
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read(4096)).get("error", "")
        except (ValueError, AttributeError):
            reason = ""
        raise EnrolError(f"the cloud refused {what} ({exc.code}): {reason or exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLCertVerificationError):
            raise EnrolError(
                f"{url}: its certificate is not from the cloud CA we trust ({exc.reason})"
            ) from None
        raise EnrolError(f"{url}: cannot reach the cloud ({exc.reason})") from None
    except (OSError, ValueError) as exc:
        raise EnrolError(f"{url}: no usable answer ({exc})") from None


def answer_field(answer: Any, name: str, kind: type) -> Any:
    """answer[name] if it is a `kind`; else EnrolError naming it."""
    value = answer.get(name) if isinstance(answer, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise EnrolError(f"the cloud's answer: {name} is missing or not a {kind.__name__}")
    return value


def check_certificate(
    certificate: CertificateFacts,
    ca: CertificateFacts,
    router_id: str,
    key_pem: bytes,
    keys: KeyBackend | None = None,
) -> None:
    """Raise EnrolError unless `certificate` is for our key, names `router_id`, `ca` signed it."""
    keys = keys or choose_backend()
    if certificate.public_key_der != keys.public_key(key_pem):
        raise EnrolError("the certificate is not for this router's key")
    names = list(certificate.common_names)
    if names != [router_id]:
        raise EnrolError(f"the certificate names {names!r}, not {router_id!r}")
    if not keys.issued_by(certificate.pem.encode(), ca.pem.encode()):
        raise EnrolError("the certificate was not issued by the CA that came with it")


def enrol(
    url: str,
    claim_code: str,
    cloud_ca_pem_path: Path,
    credentials_dir: Path,
    *,
    replace: bool = False,
    timeout: float = TIMEOUT,
    keys: KeyBackend | None = None,
) -> EnrolledIdentity:
    """Redeem `claim_code` at `url` and store the new identity in `credentials_dir`.

    Refuses (EnrolError) when credentials_dir holds an identity already, unless `replace`;
    KeyBackendError when no crypto backend can run here.
    """
    endpoint = _endpoint(url)
    identity_path = credentials_dir / IDENTITY_FILE
    if identity_path.exists() and not replace:
        raise EnrolError(f"{identity_path} exists: this router is enrolled; replace it on purpose")
    context = cloud_tls_context(cloud_ca_pem_path)
    keys = keys or choose_backend()
    key_pem = keys.new_key()
    body = {"claim_code": claim_code, "csr": keys.certificate_request(key_pem).decode()}
    answer = post_json(endpoint, body, context, timeout)
    try:
        router_id = check_router_id(answer_field(answer, "router_id", str))
        certificate = read_certificate(answer_field(answer, "certificate", str))
        ca = read_certificate(answer_field(answer, "ca", str))
        alliance_key = bytes.fromhex(answer_field(answer, "alliance_key", str))
    except (WireError, ValueError) as exc:
        raise EnrolError(f"the cloud's answer is unusable: {exc}") from None
    broker_host = answer_field(answer, "broker_host", str)
    broker_port = answer_field(answer, "broker_port", int)
    check_certificate(certificate, ca, router_id, key_pem, keys)
    credentials_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomically(credentials_dir / KEY_FILE, key_pem, 0o600)
    write_atomically(credentials_dir / CERT_FILE, certificate.pem.encode(), 0o644)
    write_atomically(credentials_dir / CA_FILE, ca.pem.encode(), 0o644)
    identity = {
        "router_id": router_id,
        "broker_host": broker_host,
        "broker_port": broker_port,
        "alliance_key": alliance_key.hex(),
        "enrol_url": endpoint,  # where the certificate is renewed, before it expires
    }
    write_atomically(identity_path, (json.dumps(identity, indent=2) + "\n").encode(), 0o600)
    return load_identity(credentials_dir, keys)


def load_identity(credentials_dir: Path, keys: KeyBackend | None = None) -> EnrolledIdentity:
    """The identity stored by enrol(); EnrolError names the missing or inconsistent file."""
    keys = keys or choose_backend()  # KeyBackendError, with its fix, when there is none
    finish_renewal(credentials_dir)
    try:
        data = json.loads((credentials_dir / IDENTITY_FILE).read_text())
        router_id = check_router_id(answer_field(data, "router_id", str))
        identity = EnrolledIdentity(
            router_id=router_id,
            broker_host=answer_field(data, "broker_host", str),
            broker_port=answer_field(data, "broker_port", int),
            alliance_key=bytes.fromhex(answer_field(data, "alliance_key", str)),
            key_file=credentials_dir / KEY_FILE,
            certificate_file=credentials_dir / CERT_FILE,
            ca_file=credentials_dir / CA_FILE,
            enrol_url=data.get("enrol_url", "") if isinstance(data.get("enrol_url"), str) else "",
        )
        certificate = read_certificate(identity.certificate_file.read_bytes())
        ca = read_certificate(identity.ca_file.read_bytes())
        check_certificate(certificate, ca, router_id, identity.key_file.read_bytes(), keys)
    except (EnrolError, KeyBackendError) as exc:
        raise EnrolError(f"{credentials_dir}: broken credentials ({exc}); enrol again") from None
    except FileNotFoundError as exc:
        raise EnrolError(
            f"not enrolled: {exc.filename} is missing; run `loopspot-agent enrol`"
        ) from None
    except (OSError, ValueError, WireError) as exc:
        raise EnrolError(f"{credentials_dir}: broken credentials ({exc}); enrol again") from None
    return identity


def enrol_main(argv: list[str] | None = None) -> int:
    """`loopspot-agent enrol CODE`: 0 enrolled, 1 refused or unreachable, 2 bad local setup."""
    parser = argparse.ArgumentParser(prog="loopspot-agent enrol", description=enrol.__doc__)
    parser.add_argument("code", help="the claim code, e.g. 7KQ4-M2XD-9PRT")
    parser.add_argument("--url", required=True, help="the cloud's enrolment URL (https://…)")
    parser.add_argument("--ca", type=Path, default=DEFAULT_CLOUD_CA, help="the cloud's CA file")
    parser.add_argument("--dir", type=Path, default=DEFAULT_CREDENTIALS_DIR)
    parser.add_argument("--force", action="store_true", help="replace an existing identity")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    if not args.ca.is_file():
        print(f"error: cloud CA {args.ca} is missing: install the cloud's ca.crt", file=sys.stderr)
        return 2
    try:
        keys = choose_backend()
        identity = enrol(args.url, args.code, args.ca, args.dir, replace=args.force, keys=keys)
    except KeyBackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except EnrolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(
            json.dumps(
                {
                    "router_id": identity.router_id,
                    "broker": f"{identity.broker_host}:{identity.broker_port}",
                    "credentials": str(args.dir),
                    "key_backend": keys.name,
                }
            )
        )
    else:
        print(
            f"enrolled as {identity.router_id}; broker {identity.broker_host}:"
            f"{identity.broker_port}; credentials in {args.dir}; keys through {keys.name}"
        )
    return 0
