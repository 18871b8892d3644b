"""Retiring a router at the broker: the CA's revocation list, and a running Mosquitto cut over.

Checked on Mosquitto 2.0.11: it reads `crlfile` again on SIGHUP, but only for new
connections; a live TLS session is never checked again. So cutting a router off takes
four steps:
1. revoke every certificate the CA ever signed for it (its ledger, ca/issued.jsonl) in
   ca/crl.pem, the file the TLS listener names;
2. deny it everything in the ACL too (broker/retired), for a certificate signed before the
   ledger was kept, which the CRL cannot name; the ACL applies to live connections as well;
3. make the broker reload: SIGHUP to the pid in its pid file (checked to be a mosquitto),
   or `broker_reload_command` when set (e.g. `systemctl reload mosquitto`);
4. take over the router's MQTT session from the services listener with its client id (the
   CN), clean: the broker ends the live connection and drops what was queued for it (twice,
   see TAKEOVERS_AT).
Its reconnect then fails in the TLS handshake ("certificate verify failed").
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from paho.mqtt.enums import CallbackAPIVersion

from cloud.ca import CertificateAuthority, _write_public
from cloud.errors import CloudConfigError
from cloud.settings import CloudSettings

CRL_FILE = "crl.pem"
# The broker refuses every client once its CRL is past nextUpdate, so it is signed for
# long and re-signed by `init`/`broker-config` when fewer than CRL_RENEW_BEFORE remain.
CRL_LIFETIME = timedelta(days=3650)
CRL_RENEW_BEFORE = timedelta(days=365)
# Seconds after the SIGHUP at which the router's session is taken over. The reload runs at
# once, but should it lag the first takeover, a router that got back in before it (the agent
# retries after 0.5-1 s) is thrown out again by the second, after the reload for certain.
TAKEOVERS_AT = (0.5, 2.5)
TAKEOVER_TIMEOUT = 10.0


def crl_path(ca: CertificateAuthority) -> Path:
    """The revocation list Mosquitto's TLS listener reads (`crlfile`)."""
    return ca.directory / CRL_FILE


def load_crl(ca: CertificateAuthority) -> x509.CertificateRevocationList | None:
    """The CA's current CRL, or None when there is none yet; CloudConfigError if forged."""
    try:
        crl = x509.load_pem_x509_crl(crl_path(ca).read_bytes())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise CloudConfigError(f"{crl_path(ca)} is unreadable ({exc}); move it away") from None
    try:
        signed = crl.is_signature_valid(ca.key.public_key())
    except (InvalidSignature, TypeError):
        signed = False
    if not signed or crl.issuer != ca.certificate.subject:
        raise CloudConfigError(f"{crl_path(ca)} was not signed by this CA; move it away")
    return crl


def build_crl(
    ca: CertificateAuthority, revoked: Mapping[int, datetime], number: int, now: datetime
) -> x509.CertificateRevocationList:
    """A CRL of `revoked` (serial: revocation time), CRL number `number`, signed by `ca`."""
    next_update = min(now + CRL_LIFETIME, ca.certificate.not_valid_after_utc)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(now - timedelta(minutes=10))
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    for serial, moment in sorted(revoked.items()):
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(moment)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(ca.key, hashes.SHA256())


def _number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


def _revoke(ca: CertificateAuthority, serials: Iterable[int], now: datetime) -> list[int]:
    current = load_crl(ca)
    revoked = {} if current is None else {r.serial_number: r.revocation_date_utc for r in current}
    added = [s for s in dict.fromkeys(serials) if s not in revoked]
    revoked.update({serial: now for serial in added})
    number = 0 if current is None else _number(current) + 1
    crl = build_crl(ca, revoked, number, now)
    _write_public(crl_path(ca), crl.public_bytes(serialization.Encoding.PEM))
    return added


def ensure_crl(ca: CertificateAuthority, now: datetime) -> Path:
    """ca/crl.pem, made empty if missing and re-signed when near its nextUpdate."""
    current = load_crl(ca)
    due = current is None or (
        current.next_update_utc is not None and current.next_update_utc - now < CRL_RENEW_BEFORE
    )
    if due:
        _revoke(ca, [], now)
    return crl_path(ca)


def revoke_router(ca: CertificateAuthority, router_id: str, now: datetime) -> list[int]:
    """Revoke every certificate `ca` signed for `router_id`; the serials revoked now."""
    return _revoke(ca, ca.issued_serials(router_id), now)


def reload_broker(settings: CloudSettings) -> tuple[bool, str]:
    """Make the running broker re-read its CRL, ACL and passwords: (done, how or why not)."""
    from cloud.broker_config import pid_file  # broker_config imports this module

    if settings.broker_reload_command:
        argv = shlex.split(settings.broker_reload_command)
        try:
            subprocess.run(argv, check=True, timeout=30, capture_output=True)
        except (OSError, subprocess.SubprocessError) as exc:
            raise CloudConfigError(
                f"broker_reload_command {settings.broker_reload_command!r} failed: {exc}"
            ) from None
        return True, f"ran {settings.broker_reload_command}"
    path = pid_file(settings)
    try:
        pid = int(path.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return False, f"no broker running ({path} missing or stale): it reads the CRL at start"
    if comm != "mosquitto":  # a stale pid file now naming another process: leave it alone
        return False, f"no broker running ({path} names {comm!r}): it reads the CRL at start"
    os.kill(pid, signal.SIGHUP)
    return True, f"SIGHUP to mosquitto {pid}"


def end_session(settings: CloudSettings, router_id: str, password: str) -> bool:
    """Take over `router_id`'s MQTT session, clean, and leave: its live connection ends.

    Returns False when the services listener cannot be reached or refuses.
    """
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=router_id,
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    client.username_pw_set(settings.broker_username, password)
    answered = threading.Event()
    accepted: list[bool] = []

    def on_connect(_c: object, _u: object, _f: object, code: object, _p: object) -> None:
        accepted.append(not getattr(code, "is_failure", True))
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(settings.broker_host, settings.broker_port, keepalive=10)
    except OSError:
        return False
    client.loop_start()
    try:
        answered.wait(TAKEOVER_TIMEOUT)
        return bool(accepted and accepted[0])
    finally:
        client.disconnect()
        client.loop_stop()


@dataclass(frozen=True, slots=True)
class CutOff:
    """What retiring did at the broker."""

    revoked: list[int]  # serials newly revoked
    reload: str  # how the broker was made to re-read its CRL
    session_ended: bool  # the live connection (if any) was taken over and closed


def cut_off(
    settings: CloudSettings, ca: CertificateAuthority, router_id: str, now: datetime
) -> CutOff:
    """Revoke `router_id`'s certificates, reload the broker, and end its live connection."""
    from cloud.broker_config import deny_router, service_password  # it imports this module

    revoked = revoke_router(ca, router_id, now)
    deny_router(settings, router_id)  # for a certificate the CRL cannot name (before the ledger)
    reloaded, how = reload_broker(settings)
    if not reloaded:  # no broker of ours is running, so no connection to end
        return CutOff(revoked=revoked, reload=how, session_ended=False)
    password, began, ended = service_password(settings), time.monotonic(), []
    for at in TAKEOVERS_AT:
        time.sleep(max(0.0, began + at - time.monotonic()))
        ended.append(end_session(settings, router_id, password))
    return CutOff(revoked=revoked, reload=how, session_ended=all(ended))
