"""A small alliance for coupon tests: root key, three merchants in a loop, routers' desks."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from agent.coupons.campaigns import Place
from agent.coupons.desk import CouponDesk
from agent.coupons.ed25519 import backend
from agent.coupons.store import CouponStore
from agent.coupons.token import certify
from agent.wire import Campaign, CouponPlan, Reach, Trigger

ALLIANCE = 1
RESTAURANT, SPA, GYM = 10, 20, 30
BACKEND = backend()
ROOT_SEED = hashlib.sha256(b"test root").digest()
ROOT_KEY = BACKEND.public_key(ROOT_SEED)
DAY0 = 1_800_000_000  # 2027-01-15, a fixed "now"


def seed(name: str) -> bytes:
    """A deterministic Ed25519 seed for a named test key."""
    return hashlib.sha256(name.encode()).digest()


def loop_campaigns() -> tuple[Campaign, ...]:
    """Restaurant hands out spa coupons, the spa gym coupons, the gym restaurant coupons."""
    made = []
    for number, (honours, issuer, title) in enumerate(
        (
            (SPA, RESTAURANT, "Spa 20% off"),
            (GYM, SPA, "Free gym day"),
            (RESTAURANT, GYM, "Free dessert"),
        ),
        start=1,
    ):
        made.append(
            Campaign(
                id=number,
                merchant_id=honours,
                title_en=title,
                title_zh=f"优惠 {number}",
                starts_at=DAY0 - 86400,
                ends_at=DAY0 + 30 * 86400,
                budget=100,
                per_device=1,
                trigger=Trigger.LOGIN,
                reach=Reach.PARTNERS,
                issuers=(issuer,),
                allotted=10,
            )
        )
    return tuple(made)


@dataclass
class Clock:
    """A settable clock."""

    now: float = float(DAY0)

    def __call__(self) -> float:
        return self.now


@dataclass
class Recorder:
    """CouponEvents that keeps what it is told."""

    seen: list[tuple[str, object]] = field(default_factory=list)

    def coupon_issued(self, device_id: str, coupon: object, at: float, replaces: str = "") -> None:
        self.seen.append(("issued", replaces or coupon))

    def coupon_seen(self, device_id: str, coupon: object, at: float) -> None:
        self.seen.append(("seen", coupon))

    def coupon_redeemed(self, coupon: object, at: float) -> None:
        self.seen.append(("redeemed", coupon))

    def coupon_refused(self, refusal: object, coupon: object, at: float) -> None:
        self.seen.append(("refused", refusal))

    def wallet_moved(self, device_id: str, to_device: str, count: int, at: float) -> None:
        self.seen.append(("moved", count))


def plan_for(
    place: Place, router: str, campaigns: tuple[Campaign, ...], key_id: int = 1
) -> CouponPlan:
    """The plan the cloud would push to `router` at `place`."""
    cert = certify(
        BACKEND, ROOT_SEED, key_id, ALLIANCE, DAY0 + 365 * 86400, BACKEND.public_key(seed(router))
    )
    return CouponPlan(
        alliance_id=ALLIANCE,
        merchant_id=place.merchant_id,
        site_id=place.site_id,
        root_key=ROOT_KEY.hex(),
        issuer_certificate=cert.to_text(),
        campaigns=campaigns,
    )


def desk_at(
    tmp: Path, merchant: int, clock: Clock, events: Recorder | None = None, key_id: int = 1
) -> CouponDesk:
    """A desk at `merchant`'s site, with the loop's campaigns in its plan."""
    router = f"router-{merchant}-{key_id}"
    desk = CouponDesk(
        CouponStore(tmp / router),
        BACKEND,
        seed(router),
        b"alliance key",
        clock=clock,
        events=events or Recorder(),
    )
    desk.apply_plan(
        plan_for(Place(ALLIANCE, merchant, merchant + 1), router, loop_campaigns(), key_id)
    )
    return desk
