"""The counter's check of a coupon: valid, or refused for one named reason. Pure.

Staff see the reason. Anyone else gets one short answer for every refusal, so guessing
codes tells nothing about which exist.
"""

from __future__ import annotations

import enum
from collections.abc import Container
from dataclasses import dataclass

from agent.coupons.token import Coupon


class Refusal(enum.Enum):
    """Why the counter refuses a coupon."""

    NOT_A_COUPON = "not_a_coupon"  # unknown short code, or text that is no coupon at all
    FORGED = "forged"  # a signature does not verify: altered, forged, or another alliance's
    OTHER_MERCHANT = "other_merchant"  # honoured only at its own merchant's sites
    SPENT = "spent"
    MOVED = "moved"  # its wallet moved to the phone's new address; the new copy is valid
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    OTHER_DEVICE = "other_device"  # shown from a phone it is not bound to
    ISSUER_EXPIRED = "issuer_expired"  # issued after its router's certificate ended


PUBLIC_ANSWER = "not valid"  # all a code guesser ever learns


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one check."""

    coupon: Coupon | None
    refusal: Refusal | None = None

    @property
    def valid(self) -> bool:
        """True when the coupon may be redeemed now."""
        return self.refusal is None


def judge(
    coupon: Coupon,
    *,
    merchant_id: int,
    now: int,
    spent: Container[str],
    moved: Container[str] = (),
    shown_by: str | None = None,
) -> Verdict:
    """Whether `coupon` (its signatures verified) may be redeemed at `merchant_id` at `now`.

    `spent` and `moved` hold coupon ids; `shown_by` is the device_id showing it, if known.
    """
    if coupon.merchant_id != merchant_id:
        return Verdict(coupon, Refusal.OTHER_MERCHANT)
    if coupon.not_before > coupon.issuer.not_after:
        return Verdict(coupon, Refusal.ISSUER_EXPIRED)
    coupon_id = coupon.coupon_id
    if coupon_id in spent:
        return Verdict(coupon, Refusal.SPENT)
    if coupon_id in moved:
        return Verdict(coupon, Refusal.MOVED)
    if now >= coupon.not_after:
        return Verdict(coupon, Refusal.EXPIRED)
    if now < coupon.not_before:
        return Verdict(coupon, Refusal.NOT_YET_VALID)
    if shown_by is not None and shown_by != coupon.device_id:
        return Verdict(coupon, Refusal.OTHER_DEVICE)
    return Verdict(coupon)
