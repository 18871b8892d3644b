"""Coupons as the portal's pages show them: the offer in the page's language, state, code.

Light on purpose: the portal imports it always, and the desk's modules load only with a desk.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.coupons.desk import CouponDesk, Held
    from agent.wire import Campaign

log = logging.getLogger("loopspot.portal")
# An offer's image the portal may show: a file of its static folder, as /static/ serves it.
# An https URL is not shown: a phone behind the portal cannot load it yet.
STATIC_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")

# A coupon's state in the wallet (Held.state, a Refusal's value), as a key of messages.json.
STATE_KEYS = {
    "": "state_valid",
    "spent": "state_spent",
    "moved": "state_moved",
    "expired": "state_expired",
    "issuer_expired": "state_expired",
    "not_yet_valid": "state_not_yet_valid",
}
_ORDER = {"": 0, "not_yet_valid": 1}  # usable first, then soon usable, then the rest


@dataclass(frozen=True, slots=True)
class Offer:
    """What a campaign gives, in one language (the other when this one is blank)."""

    title: str
    terms: str
    merchant: str
    image: str = ""  # a file name under static_url, or ""

    @classmethod
    def of(cls, campaign: Campaign | None, lang: str) -> Offer:
        """The offer of `campaign` for a page in `lang`; blank when the router has no rules."""
        if campaign is None:
            return cls("", "", "")
        first, second = (
            (campaign.title_zh, campaign.title_en)
            if lang == "zh"
            else (campaign.title_en, campaign.title_zh)
        )
        terms = (
            (campaign.terms_zh, campaign.terms_en)
            if lang == "zh"
            else (campaign.terms_en, campaign.terms_zh)
        )
        image = campaign.image if STATIC_NAME.fullmatch(campaign.image) else ""
        return cls(first or second, terms[0] or terms[1], campaign.merchant_name, image)


@dataclass(frozen=True, slots=True)
class CouponView:
    """One coupon of a wallet, ready for a template."""

    coupon_id: str
    code: str  # as people read it: 7KQ2M-X9D4R
    offer: Offer
    not_before: int
    not_after: int
    state: str  # a key of messages.json: state_valid, state_spent, ...
    valid: bool
    token: str  # the whole token, what the QR code carries


def _state(held: Held) -> str:
    return held.state.value if held.state is not None else ""


def view_of(held: Held, lang: str) -> CouponView:
    """`held` for a page in `lang`."""
    from agent.coupons.shortcode import pretty  # loaded with the desk already: a Held exists

    coupon = held.coupon
    return CouponView(
        coupon.coupon_id,
        pretty(held.code),
        Offer.of(held.campaign, lang),
        coupon.not_before,
        coupon.not_after,
        STATE_KEYS.get(_state(held), "state_expired"),
        held.state is None,
        held.text,
    )


def views_of(held: Iterable[Held], lang: str) -> list[CouponView]:
    """The coupons for a page: usable ones first, each group by when it ends."""
    ordered = sorted(held, key=lambda h: (_ORDER.get(_state(h), 2), h.coupon.not_after))
    return [view_of(h, lang) for h in ordered]


def coupons_on(desk: CouponDesk | None) -> bool:
    """True when this router has coupons: a desk with the cloud's plan in force."""
    return desk is not None and desk.plan is not None


async def welcome(desk: CouponDesk | None, mac: str) -> None:
    """Issue the coupons a login earns; a coupon failure never keeps a phone offline."""
    if desk is None:
        return
    try:
        await desk.on_login(mac)
    except Exception:  # the phone is online already; coupons are a bonus on top
        log.exception("could not issue coupons at this login")


async def new_coupons(
    desk: CouponDesk | None, mac: str, since: float, lang: str
) -> list[CouponView]:
    """The coupons the phone got since `since`, for the online page; none on any failure."""
    if desk is None:
        return []
    try:
        return views_of(await desk.new_since(mac, since), lang)
    except Exception:
        log.exception("could not list the new coupons")
        return []
