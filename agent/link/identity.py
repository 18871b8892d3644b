"""Who this router is in the cloud: UCI's `config cloud` over enrolment's identity.json.

Reads files, so call it off the event loop. `load_identity` only reads identity.json:
agent.enrol's reader also checks the certificates, through agent.keys (cryptography or
the openssl tool), which the daemon does not run.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.credentials import CA_FILE, CERT_FILE, IDENTITY_FILE, KEY_FILE
from agent.link.errors import IdentityError
from agent.settings import Settings
from agent.wire import WireError, check_router_id

TLS_PORT, PLAIN_PORT = 8883, 1883
MIN_KEY_BYTES = 16
_ENROL_FIX = "enrol the router (loopspot-agent enrol) or set it in 'config cloud'."


def load_identity(credentials_dir: Path) -> dict[str, Any]:
    """identity.json as enrolment wrote it; {} when the router is not enrolled."""
    path = credentials_dir / IDENTITY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise IdentityError(f"cannot read {path}: {error}. Fix: {_ENROL_FIX}") from None
    if not isinstance(data, dict):
        raise IdentityError(f"{path} is not a JSON object. Fix: {_ENROL_FIX}")
    return data


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Certificates for TLS; ca None = the system's trusted CAs; cert and key go together."""

    ca: Path | None
    cert: Path | None
    key: Path | None

    def context(self) -> ssl.SSLContext:
        """A client context that checks the broker's certificate (reads files: not on the loop)."""
        try:
            context = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
            if self.cert is not None and self.key is not None:
                context.load_cert_chain(str(self.cert), str(self.key))
        except (OSError, ssl.SSLError) as error:
            raise IdentityError(f"cannot load the router's TLS files: {error}") from None
        return context


@dataclass(frozen=True, slots=True)
class Identity:
    """Everything needed to connect and to name devices; the secrets stay out of repr."""

    router_id: str
    broker_host: str
    broker_port: int
    alliance_key: bytes = field(repr=False)
    tls: TlsFiles | None
    username: str = ""
    password: str = field(default="", repr=False)


def _text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise IdentityError(f"cannot read the {what} in {path}: {error}") from None


def _alliance_key(text: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise IdentityError(
            f"the alliance key in {where} is not hex. Fix: write the key as hex digits."
        ) from None
    if len(key) < MIN_KEY_BYTES:
        raise IdentityError(
            f"the alliance key in {where} has {len(key)} bytes. Fix: use at least {MIN_KEY_BYTES}."
        )
    return key


def _tls(settings: Settings) -> TlsFiles | None:
    if not settings.cloud_tls:
        return None
    folder = settings.cloud_credentials_dir

    def pick(configured: Path | None, name: str) -> Path | None:
        if configured is not None:
            return configured
        return folder / name if (folder / name).exists() else None

    cert, key = pick(settings.cloud_cert_file, CERT_FILE), pick(settings.cloud_key_file, KEY_FILE)
    if (cert is None) != (key is None):
        missing = KEY_FILE if key is None else CERT_FILE
        raise IdentityError(f"{folder} has no {missing}. Fix: {_ENROL_FIX}")
    return TlsFiles(pick(settings.cloud_ca_file, CA_FILE), cert, key)


def resolve_identity(settings: Settings) -> Identity:
    """The router's identity: UCI options first, identity.json for the rest; or IdentityError."""
    enrolled = load_identity(settings.cloud_credentials_dir)
    where = str(settings.cloud_credentials_dir / IDENTITY_FILE)
    router_id = settings.cloud_router_id or str(enrolled.get("router_id", ""))
    host = settings.cloud_broker_host or str(enrolled.get("broker_host", ""))
    if not router_id or not host:
        what = "router_id" if not router_id else "broker_host"
        raise IdentityError(f"the cloud link has no {what}. Fix: {_ENROL_FIX}")
    try:
        check_router_id(router_id)
    except WireError as error:
        raise IdentityError(f"router_id in {where}: {error.reason}") from None
    port = settings.cloud_broker_port or enrolled.get("broker_port") or 0
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise IdentityError(f"broker_port in {where} is not a port number. Fix: {_ENROL_FIX}")
    if settings.cloud_alliance_key_file is not None:
        path = settings.cloud_alliance_key_file
        key = _alliance_key(_text(path, "alliance key"), str(path))
    elif isinstance(enrolled.get("alliance_key"), str):
        key = _alliance_key(enrolled["alliance_key"], where)
    else:
        raise IdentityError(f"the cloud link has no alliance key. Fix: {_ENROL_FIX}")
    tls = _tls(settings)
    password = ""
    if settings.cloud_password_file is not None:
        lines = _text(settings.cloud_password_file, "broker password").splitlines()
        password = lines[0] if lines else ""
    return Identity(
        router_id=router_id,
        broker_host=host,
        broker_port=port or (TLS_PORT if tls is not None else PLAIN_PORT),
        alliance_key=key,
        tls=tls,
        username=settings.cloud_username,
        password=password,
    )
