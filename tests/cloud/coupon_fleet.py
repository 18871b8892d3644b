"""A closed-loop alliance for coupon tests: restaurant, spa and gym, with routers that sign.

Each router has its own issuing key, certified by the cloud as the ingest does when a
status carries it; `Fleet.coupon` signs a coupon as that router's CouponDesk would.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from agent import wire
from agent.coupons.token import Coupon, IssuerCertificate, sign_coupon
from cloud import coupon_store as store
from cloud.enrol_fleet import create_merchant, create_site
from cloud.issuer_keys import certify_keys
from cloud.models import Campaign, IssuerKey, Router

NOW = 1_800_000_000  # 2027-01-15, Unix seconds
DAY = 86400
PHONE = "0123456789abcdef0123456789abcdef"
OTHER_PHONE = "fedcba9876543210fedcba9876543210"
ROUTERS = {  # router -> merchant
    "r-restaurant": "restaurant",
    "r-spa": "spa",
    "r-spa-2": "spa",
    "r-gym": "gym",
}


@dataclass
class Fleet:
    """Merchants, routers and their issuing seeds, in one alliance."""

    engine: Engine
    merchants: dict[str, int] = field(default_factory=dict)
    sites: dict[str, int] = field(default_factory=dict)
    seeds: dict[str, bytes] = field(default_factory=dict)
    alliance_id: int = 0
    seq: dict[str, int] = field(default_factory=dict)

    def campaign(self, merchant: str, **values: object) -> int:
        """A campaign of `merchant` (defaults: login trigger, own reach); its id."""
        row = Campaign(
            merchant_id=self.merchants[merchant],
            title_en=f"{merchant} offer",
            title_zh="优惠",
            terms_en="",
            terms_zh="",
            image="",
            starts_at=NOW - DAY,
            ends_at=NOW + 30 * DAY,
            budget=1000,
            per_device=1,
            trigger="login",
            nth_visit=1,
            reach="own",
            coupon_days=0,
            slice_size=10,
        )
        for name, value in values.items():
            setattr(row, name, value)
        with Session(self.engine) as session, session.begin():
            session.add(row)
            session.flush()
            return row.id

    def certificate(self, router_id: str) -> IssuerCertificate:
        """The router's current certificate, as the cloud made it."""
        with self.engine.connect() as connection:
            text = connection.scalar(
                select(IssuerKey.certificate).where(
                    IssuerKey.router_id == router_id, IssuerKey.replaced_at.is_(None)
                )
            )
        assert text, f"{router_id} has no certified key"
        return IssuerCertificate.from_text(text)

    def coupon(
        self,
        router_id: str,
        campaign_id: int,
        merchant: str,
        device: str = PHONE,
        not_after: int = NOW + 7 * DAY,
        nonce: bytes | None = None,
        not_before: int = NOW - 60,
    ) -> Coupon:
        """A coupon signed by `router_id`'s issuing key, honoured by `merchant`."""
        unsigned = Coupon(
            self.certificate(router_id),
            campaign_id,
            self.merchants[merchant],
            device,
            not_before,
            not_after,
            nonce or os.urandom(8),
        )
        return sign_coupon(store.cloud_backend(), self.seeds[router_id], unsigned)

    def event(self, router_id: str, kind: wire.EventKind, **values: object) -> wire.Event:
        """The router's next event (its own seq), at NOW unless `at` is given."""
        seq = self.seq.get(router_id, 0)
        self.seq[router_id] = seq + 1
        fields: dict[str, object] = {"at": float(NOW), "device_id": PHONE, **values}
        return wire.Event(router_id=router_id, boot_id="boot-1", seq=seq, kind=kind, **fields)  # type: ignore[arg-type]


def make_fleet(engine: Engine) -> Fleet:
    """The alliance `loop` with restaurant, spa (two routers) and gym; keys certified."""
    fleet = Fleet(engine)
    with Session(engine) as session, session.begin():
        for merchant in ("restaurant", "spa", "gym"):
            made = create_merchant(session, merchant, "loop")
            fleet.merchants[merchant] = made.id
            fleet.alliance_id = made.alliance_id or 0
            fleet.sites[merchant] = create_site(session, merchant, f"{merchant} shop").id
        for router_id, merchant in ROUTERS.items():
            session.add(Router(id=router_id, site_id=fleet.sites[merchant], state="online"))
    ed = store.cloud_backend()
    keys = {}
    for router_id in ROUTERS:
        fleet.seeds[router_id] = os.urandom(32)
        keys[router_id] = ed.public_key(fleet.seeds[router_id]).hex()
    with engine.begin() as connection:
        where = store.places(connection, ROUTERS)
        certify_keys(connection, keys, where, datetime.fromtimestamp(NOW, UTC))
    return fleet
