"""The cloud's coupon plan, checked once when it arrives and kept ready for every check."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.coupons.campaigns import Place
from agent.coupons.ed25519 import PUBLIC_BYTES, Backend
from agent.coupons.token import IssuerCertificate, TokenError, Verifier
from agent.errors import LoopspotError
from agent.wire import Campaign, CouponPlan


class PlanError(LoopspotError):
    """A coupon plan from the cloud that cannot be used; names the field."""


@dataclass(frozen=True, slots=True)
class ActivePlan:
    """A plan whose root key and certificate were checked, with its verifier made."""

    plan: CouponPlan
    place: Place
    verifier: Verifier
    certificate: IssuerCertificate
    _campaigns: dict[int, Campaign] = field(default_factory=dict)

    def campaign(self, campaign_id: int) -> Campaign | None:
        """The campaign with this id, if the plan names it."""
        return self._campaigns.get(campaign_id)

    @classmethod
    def check(cls, plan: CouponPlan, backend: Backend, issuer_key: bytes) -> ActivePlan:
        """The plan ready to use; PlanError if its key or certificate is not right."""
        try:
            root = bytes.fromhex(plan.root_key)
        except ValueError:
            root = b""
        if len(root) != PUBLIC_BYTES:
            raise PlanError(f"coupons.root_key: must be {PUBLIC_BYTES * 2} hex digits")
        verifier = Verifier(backend, root, plan.alliance_id)
        try:
            certificate = verifier.certificate(IssuerCertificate.from_text(plan.issuer_certificate))
        except TokenError as error:
            raise PlanError(f"coupons.issuer_certificate: {error}") from None
        if certificate.public_key != issuer_key:
            raise PlanError(
                "coupons.issuer_certificate: certifies another key than this router's; "
                "the cloud certifies the key of the router's latest status"
            )
        place = Place(plan.alliance_id, plan.merchant_id, plan.site_id)
        return cls(plan, place, verifier, certificate, {c.id: c for c in plan.campaigns})
