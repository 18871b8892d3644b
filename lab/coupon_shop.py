"""A lab router with coupons and no cloud: its issuer key and a coupon plan put on its flash.

What the cloud would have pushed, made here: an alliance root key, the router's issuer
certificate and the campaigns. With the broker unreachable, the desk works offline, as a
shop's does when its internet is down. Benchmarks and browser tests use it.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.coupons.ed25519 import backend
from agent.coupons.files import ISSUER_KEY_FILE, PLAN_FILE
from agent.coupons.pin import hash_pin
from agent.coupons.shortcode import code_of
from agent.coupons.store import CouponStore
from agent.coupons.token import Coupon, IssuerCertificate, certify, sign_coupon
from agent.wire import Campaign, CouponPlan, Reach, Trigger

ALLIANCE_ID, MERCHANT_ID, SITE_ID = 1, 20, 21
STAFF_PIN = "2468"
DAY = 86400


@dataclass(frozen=True, slots=True)
class CouponShop:
    """The keys and plan written onto a lab router's flash."""

    root_seed: bytes
    issuer_seed: bytes
    plan: CouponPlan

    def coupon(self, device_id: str, campaign: Campaign | None = None) -> Coupon:
        """A coupon of the shop's first campaign for `device_id`, signed by its router."""
        chosen = campaign or self.plan.campaigns[0]
        cert = IssuerCertificate.from_text(self.plan.issuer_certificate)  # the router's own
        now = int(time.time())
        unsigned = Coupon(
            cert, chosen.id, chosen.merchant_id, device_id, now - 60, now + DAY, os.urandom(8)
        )
        return sign_coupon(backend(), self.issuer_seed, unsigned)


def shop_campaigns() -> tuple[Campaign, ...]:
    """One campaign the shop both hands out and honours, at every login."""
    now = int(time.time())
    return (
        Campaign(
            id=1,
            merchant_id=MERCHANT_ID,
            merchant_name="Lotus Spa",
            title_en="20% off a massage",
            title_zh="按摩八折",
            terms_en="One per visit.",
            terms_zh="每次限用一张。",
            starts_at=now - DAY,
            ends_at=now + 30 * DAY,
            budget=1000,
            trigger=Trigger.LOGIN,
            reach=Reach.OWN,
            issuers=(MERCHANT_ID,),
            allotted=1000,
        ),
    )


def set_up_coupons(
    flash_dir: Path, campaigns: Sequence[Campaign] | None = None, pin: str = STAFF_PIN
) -> CouponShop:
    """Write the router's issuer key and a plan certifying it onto `flash_dir`."""
    ed = backend()
    root_seed = hashlib.sha256(b"lab alliance root " + os.urandom(8)).digest()
    issuer_seed = os.urandom(32)
    cert = certify(
        ed, root_seed, 1, ALLIANCE_ID, int(time.time()) + 365 * DAY, ed.public_key(issuer_seed)
    )
    plan = CouponPlan(
        alliance_id=ALLIANCE_ID,
        merchant_id=MERCHANT_ID,
        site_id=SITE_ID,
        root_key=ed.public_key(root_seed).hex(),
        issuer_certificate=cert.to_text(),
        campaigns=tuple(campaigns or shop_campaigns()),
        staff_pin=hash_pin(pin),
    )
    flash_dir.mkdir(parents=True, exist_ok=True)
    (flash_dir / ISSUER_KEY_FILE).write_bytes(issuer_seed)
    (flash_dir / ISSUER_KEY_FILE).chmod(0o600)
    (flash_dir / PLAN_FILE).write_bytes(plan.encode())
    return CouponShop(root_seed, issuer_seed, plan)


def preload_coupons(flash_dir: Path, shop: CouponShop, known: int, spent: int) -> list[str]:
    """Put `known` coupons in the router's store and `spent` made-up ones on its spent list.

    Returns the short codes of the known coupons (none of them spent).
    """
    store = CouponStore(flash_dir)
    try:
        made = [shop.coupon(os.urandom(16).hex()) for _ in range(known)]
        rows = [
            (
                c.coupon_id,
                code_of(c.coupon_id),
                c.to_text(),
                c.device_id,
                c.campaign_id,
                c.merchant_id,
                c.not_after,
            )
            for c in made
        ]
        store.add(rows, issued_here=False, at=time.time())
        with store.db:
            store.db.executemany(
                "INSERT INTO spent VALUES (?, 0, 0)",
                ((os.urandom(16).hex(),) for _ in range(spent)),
            )
    finally:
        store.close()
    return [code_of(c.coupon_id) for c in made]
