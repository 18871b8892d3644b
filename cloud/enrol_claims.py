"""Claim codes: an operator makes one per router; the installer types it once to enrol.

Only the SHA-256 of a code is stored. Redeeming is one transaction whose first statement is
a conditional UPDATE (unused and unexpired), so of two concurrent redeems exactly one wins,
on SQLite and on PostgreSQL alike.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from cloud.ca import CertificateAuthority, certificate_pem, fingerprint, load_request
from cloud.enrol_fleet import FleetError, ensure_alliance, utc
from cloud.errors import EnrolmentError
from cloud.models import ClaimCode, Merchant, Router, Site

# Crockford's base32: no I, L, O or U, so nothing is misread; 5 bits a character.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_GROUPS = 3
CODE_GROUP_LENGTH = 4  # 3 groups of 4 characters: 60 bits
ROUTER_ID_LENGTH = 10  # "r-" and 50 random bits
_READ_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})


class ClaimRefused(EnrolmentError):
    """A claim code that cannot be redeemed; `reason` is malformed, unknown, used or expired."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"claim code {reason}: {detail}")


@dataclass(frozen=True, slots=True)
class Enrolment:
    """What a router receives once: its identity, certificate, CA, broker and alliance key."""

    router_id: str
    certificate_pem: str
    ca_pem: str
    broker_host: str
    broker_port: int
    alliance_key: str  # hex of the alliance's device key, for device_id = HMAC(key, MAC)

    def to_json(self) -> dict[str, Any]:
        """The JSON object the enrolment endpoint answers with."""
        return {
            "router_id": self.router_id,
            "certificate": self.certificate_pem,
            "ca": self.ca_pem,
            "broker_host": self.broker_host,
            "broker_port": self.broker_port,
            "alliance_key": self.alliance_key,
        }


def new_code() -> str:
    """A fresh code like `7KQ4-M2XD-9PRT` (60 random bits)."""
    chars = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_GROUPS * CODE_GROUP_LENGTH))
    return "-".join(
        chars[i : i + CODE_GROUP_LENGTH] for i in range(0, len(chars), CODE_GROUP_LENGTH)
    )


def normalise_code(text: str) -> str | None:
    """The canonical form of a typed code (case, dashes, spaces, O/I/L forgiven); None if bad."""
    if not isinstance(text, str):
        return None
    squeezed = "".join(text.split()).replace("-", "").upper().translate(_READ_AS)
    if len(squeezed) != CODE_GROUPS * CODE_GROUP_LENGTH:
        return None
    if any(c not in CODE_ALPHABET for c in squeezed):
        return None
    return squeezed


def hash_code(normalised: str) -> str:
    """The stored form of a normalised code: SHA-256, hex."""
    return hashlib.sha256(normalised.encode()).hexdigest()


def new_router_id() -> str:
    """A fresh router id: `r-` and 10 lower-case base32 characters."""
    alphabet = CODE_ALPHABET.lower()
    return "r-" + "".join(secrets.choice(alphabet) for _ in range(ROUTER_ID_LENGTH))


def create_claim(
    session: Session, site_id: int, now: datetime, ttl: timedelta | int
) -> tuple[str, str]:
    """Add a router to site `site_id` and a code for it; returns (router_id, code).

    The rows are added and flushed; the caller commits. Raises FleetError for an unknown site.
    """
    lifetime = ttl if isinstance(ttl, timedelta) else timedelta(seconds=ttl)
    if lifetime <= timedelta(0):
        raise FleetError(f"ttl: {lifetime} must be positive")
    site = session.get(Site, site_id)
    if site is None:
        raise FleetError(f"site: no site with id {site_id}; list them with `loopspot-cloud sites`")
    ensure_alliance(session, session.get_one(Merchant, site.merchant_id))
    router_id = new_router_id()
    while session.get(Router, router_id) is not None:  # 50 bits: practically never loops
        router_id = new_router_id()
    code = new_code()
    session.add(Router(id=router_id, site_id=site.id))
    session.flush()
    session.add(
        ClaimCode(
            code_hash=hash_code(normalise_code(code) or ""),
            router_id=router_id,
            created_at=utc(now),
            expires_at=utc(now) + lifetime,
        )
    )
    session.flush()
    return router_id, code


def _why_refused(session: Session, digest: str, now: datetime) -> ClaimRefused:
    claim = session.get(ClaimCode, digest)
    if claim is None:
        return ClaimRefused("unknown", f"no claim has hash {digest[:12]}…")
    if claim.used_at is not None:
        return ClaimRefused("used", f"router {claim.router_id} redeemed it at {claim.used_at}")
    return ClaimRefused("expired", f"router {claim.router_id}'s code expired {claim.expires_at}")


def redeem(
    session: Session,
    code: str,
    csr_pem: bytes | str,
    now: datetime,
    ca: CertificateAuthority,
    *,
    broker_host: str,
    broker_port: int,
) -> Enrolment:
    """Use `code` once and certify the key in `csr_pem` as its router; commits or rolls back.

    Raises ClaimRefused (unknown, used, expired, malformed) or CertificateRequestError; in
    either case nothing changes and, for a bad request, the code stays usable.
    """
    normalised = normalise_code(code)
    if normalised is None:
        raise ClaimRefused("malformed", "not 12 characters of the claim alphabet")
    load_request(csr_pem)  # a broken request is refused before the code is spent
    digest = hash_code(normalised)
    moment = utc(now)
    try:
        spend = (
            update(ClaimCode)
            .where(
                ClaimCode.code_hash == digest,
                ClaimCode.used_at.is_(None),
                ClaimCode.expires_at > moment,
            )
            .values(used_at=moment)
            .returning(ClaimCode.router_id)
            .execution_options(synchronize_session=False)
        )
        router_id = session.execute(spend).scalar_one_or_none()
        if router_id is None:
            raise _why_refused(session, digest, moment)
        certificate = ca.sign_router_request(csr_pem, router_id, moment)
        router = session.get_one(Router, router_id)
        site = session.get_one(Site, router.site_id)
        alliance = ensure_alliance(session, session.get_one(Merchant, site.merchant_id))
        router.enrolled_at = moment
        router.cert_fingerprint = fingerprint(certificate)
        enrolment = Enrolment(
            router_id=router_id,
            certificate_pem=certificate_pem(certificate),
            ca_pem=ca.certificate_pem,
            broker_host=broker_host,
            broker_port=broker_port,
            alliance_key=alliance.device_key.hex(),
        )
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return enrolment
