"""The counter's verdict: valid, or refused for the one reason staff need to hear."""

from __future__ import annotations

import dataclasses

from agent.coupons.counter import Refusal, judge
from agent.coupons.token import Coupon, certify, sign_coupon
from tests.agent.coupons.helpers import ALLIANCE, BACKEND, DAY0, GYM, ROOT_SEED, SPA, seed

ISSUER = seed("restaurant router")
CERT = certify(BACKEND, ROOT_SEED, 7, ALLIANCE, DAY0 + 86400, BACKEND.public_key(ISSUER))
DEVICE = "0123456789abcdef0123456789abcdef"
COUPON = sign_coupon(BACKEND, ISSUER, Coupon(CERT, 3, SPA, DEVICE, DAY0, DAY0 + 3600, b"\x02" * 8))


def refusal(coupon: Coupon = COUPON, **given: object) -> Refusal | None:
    args: dict[str, object] = {"merchant_id": SPA, "now": DAY0 + 60, "spent": ()} | given
    return judge(coupon, **args).refusal  # type: ignore[arg-type]


def test_a_good_coupon_at_its_merchant_is_valid() -> None:
    assert refusal() is None
    assert refusal(shown_by=DEVICE) is None


def test_a_coupon_is_honoured_only_at_its_own_merchant() -> None:
    assert refusal(merchant_id=GYM) is Refusal.OTHER_MERCHANT


def test_a_spent_coupon_is_refused_before_anything_else_of_ours() -> None:
    assert refusal(spent={COUPON.coupon_id}) is Refusal.SPENT
    assert refusal(spent={COUPON.coupon_id}, now=DAY0 + 7200) is Refusal.SPENT


def test_a_moved_coupon_is_refused() -> None:
    assert refusal(moved={COUPON.coupon_id}) is Refusal.MOVED


def test_coupons_outside_their_window_are_refused() -> None:
    assert refusal(now=DAY0 + 3600) is Refusal.EXPIRED
    assert refusal(now=DAY0 - 1) is Refusal.NOT_YET_VALID


def test_a_coupon_shown_by_another_phone_is_refused() -> None:
    assert refusal(shown_by="f" * 32) is Refusal.OTHER_DEVICE


def test_a_coupon_issued_after_its_issuers_certificate_ended_is_refused() -> None:
    late = dataclasses.replace(COUPON, not_before=DAY0 + 2 * 86400, not_after=DAY0 + 3 * 86400)
    assert refusal(sign_coupon(BACKEND, ISSUER, late), now=DAY0 + 2 * 86400 + 1) is (
        Refusal.ISSUER_EXPIRED
    )
