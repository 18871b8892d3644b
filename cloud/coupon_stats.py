"""Coupon numbers: each campaign's funnel, cross-merchant flows, and a replay of what routers did.

`replay_router` runs the routers' own issuing function (agent.coupons.campaigns.awards)
over the logins a router reported, and compares its coupons with the coupon_issued
events the router sent: "the cloud's numbers match what the routers did", checked.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, distinct, func, select

from agent.coupons import campaigns as rules
from cloud import coupon_store as store
from cloud.coupon_plans import (
    accepted_partners,
    alliance_campaigns,
    router_campaigns,
    site_utc_offset,
)
from cloud.models import Campaign, CouponRow, Event, Merchant, Redemption

LOGIN_KINDS = ("session_started",)  # one per login; terms_accepted comes with the first


def funnel(connection: Connection, campaign_id: int) -> dict[str, Any]:
    """Issued, seen, redeemed, refused by reason, double spends and overshoot of a campaign."""
    row = connection.execute(select(Campaign).where(Campaign.id == campaign_id)).first()
    if row is None:
        from cloud.coupon_admin import MISSING, AdminError

        raise AdminError("campaign", f"no campaign {campaign_id}; see `campaign list`", MISSING)
    c, e, d = CouponRow, Event, Redemption

    def one(query: Any) -> int:
        return int(connection.scalar(query) or 0)

    issued = one(select(func.count()).select_from(c).where(c.campaign_id == campaign_id))
    seen = one(
        select(func.count(distinct(e.coupon_id))).where(
            e.kind == "coupon_seen", e.campaign_id == campaign_id
        )
    )
    redeemed = one(select(func.count(distinct(d.coupon_id))).where(d.campaign_id == campaign_id))
    doubles = one(
        select(func.count()).select_from(d).where(d.campaign_id == campaign_id, d.double_spend)
    )
    refused = dict(
        connection.execute(
            select(e.reason, func.count())
            .where(e.kind == "coupon_refused", e.campaign_id == campaign_id)
            .group_by(e.reason)
            .order_by(e.reason)
        ).all()
    )
    held = dict(
        connection.execute(
            select(c.device_id, func.count())
            .where(c.campaign_id == campaign_id, c.replaces == "")
            .group_by(c.device_id)
        ).all()
    )
    return {
        "campaign_id": campaign_id,
        "issued": issued,
        "seen": seen,
        "redeemed": redeemed,
        "refused": {str(k): int(v) for k, v in refused.items()},
        "double_spends": doubles,
        "overshoot": rules.overshoot(row.per_device, {k: int(v) for k, v in held.items()}),
    }


def flows(connection: Connection, alliance_id: int) -> list[dict[str, Any]]:
    """Per (issuing merchant, honouring merchant): redeeming customers and redemptions."""
    c, d = CouponRow, Redemption
    rows = connection.execute(
        select(
            c.issuer_merchant_id,
            c.merchant_id,
            func.count(distinct(c.device_id)),
            func.count(distinct(c.coupon_id)),
        )
        .join(d, d.coupon_id == c.coupon_id)
        .where(c.alliance_id == alliance_id, c.issuer_merchant_id.is_not(None))
        .where(d.double_spend.is_(False))
        .group_by(c.issuer_merchant_id, c.merchant_id)
        .order_by(c.issuer_merchant_id, c.merchant_id)
    ).all()
    names = dict(connection.execute(select(Merchant.id, Merchant.name)).all())
    return [
        {
            "from_merchant": names.get(source or 0, str(source)),
            "to_merchant": names.get(target, str(target)),
            "customers": int(customers),
            "redemptions": int(redeemed),
        }
        for source, target, customers, redeemed in rows
    ]


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A (device, campaign, day) where the router issued other than the rules say."""

    device_id: str
    campaign_id: int
    day: int  # Unix day (UTC)
    expected: int
    issued: int


def replay(
    campaigns: list[Any],
    place: rules.Place,
    logins: list[tuple[float, str]],
    issued_events: list[tuple[float, str, int]],
    elsewhere: Sequence[tuple[float, str, int]] = (),
    utc_offset: int = 0,
) -> list[Mismatch]:
    """Run `awards` over a router's logins (at, device) and compare with what it issued
    (at, device, campaign). Pure: the same function, the same facts, in time order.

    `elsewhere`: coupons other routers gave (at, device, campaign), which count as held
    from then on, as a router that synced the wallet knows them."""
    visits: defaultdict[str, list[int]] = defaultdict(list)  # device -> its login days
    logins_today: Counter[tuple[str, int]] = Counter()
    held: defaultdict[str, Counter[int]] = defaultdict(Counter)
    issued: Counter[int] = Counter()
    expected: Counter[tuple[str, int, int]] = Counter()
    given = sorted(elsewhere)
    for at, device in sorted(logins):
        while given and given[0][0] <= at:
            _, other, campaign = given.pop(0)
            held[other][campaign] += 1
        day = rules.visit_day(at, utc_offset)
        if not visits[device] or visits[device][-1] != day:
            visits[device].append(day)
        logins_today[(device, day)] += 1
        history = rules.DeviceHistory(
            len(visits[device]), logins_today[(device, day)], held[device]
        )
        for award in rules.awards(campaigns, place, history, int(at), issued):
            held[device][award.campaign_id] += 1
            issued[award.campaign_id] += 1
            expected[(device, award.campaign_id, day)] += 1
    actual: Counter[tuple[str, int, int]] = Counter(
        (device, campaign, rules.visit_day(at, utc_offset))
        for at, device, campaign in issued_events
    )
    return [
        Mismatch(device, campaign, day, expected[key], actual[key])
        for key in sorted(set(expected) | set(actual))
        for device, campaign, day in [key]
        if expected[key] != actual[key]
    ]


def replay_router(connection: Connection, router_id: str) -> list[Mismatch]:
    """Replay `router_id`'s reported logins through the issuing rules of its current plan."""
    place = store.places(connection, [router_id]).get(router_id)
    if place is None or place.alliance_id is None:
        return []
    e = Event
    campaigns = alliance_campaigns(connection, place.alliance_id, 0)
    k = store.SLICES.c
    slices = dict(
        connection.execute(select(k.campaign_id, k.allotted).where(k.router_id == router_id)).all()
    )
    mine = router_campaigns(
        place.merchant_id, campaigns, accepted_partners(connection, place.alliance_id), slices
    )
    logins = connection.execute(
        select(e.at, e.device_id).where(e.router_id == router_id, e.kind.in_(LOGIN_KINDS))
    ).all()
    issued_events = connection.execute(
        select(e.at, e.device_id, e.campaign_id).where(
            e.router_id == router_id, e.kind == "coupon_issued", e.replaces == ""
        )
    ).all()
    c = CouponRow
    devices = sorted({str(d) for _, d in logins})
    elsewhere = connection.execute(
        select(c.issued_at, c.device_id, c.campaign_id).where(
            c.alliance_id == place.alliance_id,
            c.issuer_router_id != router_id,
            c.replaces == "",
            c.device_id.in_(devices),
        )
    ).all()
    return replay(
        list(mine),
        rules.Place(place.alliance_id, place.merchant_id, place.site_id),
        [(float(a), str(d)) for a, d in logins],
        [(float(a), str(d), int(n)) for a, d, n in issued_events],
        [(float(a), str(d), int(n)) for a, d, n in elsewhere],
        site_utc_offset(connection, place.site_id, time.time()),
    )
