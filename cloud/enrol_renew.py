"""Certificate renewal: an enrolled router trades its current certificate for a new one.

The router proves who it is with the certificate it presents over mutual TLS: CN names the
router and the certificate's fingerprint must be the one stored for it, so only its
current certificate renews. The swap of the stored fingerprint is a conditional UPDATE
(still the presented one), so of two concurrent renewals exactly one wins, on SQLite and
on PostgreSQL alike; the loser's certificate is never recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import update
from sqlalchemy.orm import Session

from cloud.ca import CertificateAuthority, certificate_pem, fingerprint
from cloud.enrol_fleet import utc
from cloud.errors import EnrolmentError
from cloud.models import Router


class RenewalRefused(EnrolmentError):
    """A certificate that may not renew; `reason` is unknown or replaced."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"renewal {reason}: {detail}")


@dataclass(frozen=True, slots=True)
class Presented:
    """The client certificate a caller presented: the router it names and its fingerprint."""

    router_id: str  # the subject's CN; "" when it has none
    fingerprint: str

    @classmethod
    def from_der(cls, der: bytes) -> Presented:
        """Read a TLS-verified peer certificate (DER); ValueError if it cannot be parsed."""
        certificate = x509.load_der_x509_certificate(der)
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        router_id = str(names[0].value) if len(names) == 1 else ""
        return cls(router_id, fingerprint(certificate))


@dataclass(frozen=True, slots=True)
class Renewal:
    """A router's new certificate, which replaced the one it presented."""

    router_id: str
    certificate_pem: str
    not_after: datetime

    def to_json(self) -> dict[str, Any]:
        """The JSON object the renewal endpoint answers with."""
        return {
            "router_id": self.router_id,
            "certificate": self.certificate_pem,
            "not_after": self.not_after.isoformat(),
        }


def renew(
    session: Session,
    router_id: str,
    presented_fingerprint: str,
    csr_pem: bytes | str,
    now: datetime,
    ca: CertificateAuthority,
) -> Renewal:
    """Certify `csr_pem` for `router_id` and store its fingerprint; commits or rolls back.

    Raises RenewalRefused when the router is unknown or `presented_fingerprint` is not its
    current certificate's, or CertificateRequestError for a bad request; either way nothing
    changes and the current certificate can still renew.
    """
    moment = utc(now)
    try:
        router = session.get(Router, router_id)
        if router is None:
            raise RenewalRefused("unknown", f"no router {router_id!r}")
        if router.cert_fingerprint != presented_fingerprint:
            raise RenewalRefused(
                "replaced",
                f"router {router_id} presented {presented_fingerprint[:12]}…, "
                f"its current certificate is {(router.cert_fingerprint or 'none')[:12]}…",
            )
        certificate = ca.sign_router_request(csr_pem, router_id, moment)
        swap = (
            update(Router)
            .where(Router.id == router_id, Router.cert_fingerprint == presented_fingerprint)
            .values(cert_fingerprint=fingerprint(certificate))
            .returning(Router.id)
            .execution_options(synchronize_session=False)
        )
        if session.execute(swap).scalar_one_or_none() is None:
            raise RenewalRefused("replaced", f"router {router_id} renewed concurrently")
        renewal = Renewal(
            router_id=router_id,
            certificate_pem=certificate_pem(certificate),
            not_after=certificate.not_valid_after_utc,
        )
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return renewal
