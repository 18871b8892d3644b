"""Each router's coupon plan (wire.CouponPlan): who it is, its certificate, the rules it runs.

`router_campaigns` and `compose_plan` are pure; `plan_for` reads them from the database
(allotting a first slice of each campaign the router newly issues) and `push_plan` sends
the plan as the router's next config version.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, select
from sqlalchemy.orm import aliased

from agent import wire
from agent.coupons.campaigns import Place, issuers_of
from cloud import coupon_store as store
from cloud.fleet_push import Publish, push_config
from cloud.models import (
    ACCEPTED,
    RETIRED,
    Campaign,
    IssuerKey,
    Merchant,
    Partnership,
    RouterConfig,
)

log = logging.getLogger(__name__)


def router_campaigns(
    merchant_id: int,
    campaigns: Sequence[wire.Campaign],
    accepted: Mapping[int, Collection[int]],
    slices: Mapping[int, int],
) -> tuple[wire.Campaign, ...]:
    """The campaigns a router of `merchant_id` hands out (with its slice) or honours.

    `accepted`: per campaign-owning merchant, its partners who accepted; `slices`: per
    campaign, this router's allotment so far.
    """
    chosen = []
    for campaign in sorted(campaigns, key=lambda c: c.id):
        issuers = issuers_of(
            campaign.merchant_id, campaign.reach, accepted.get(campaign.merchant_id, ())
        )
        issues = merchant_id in issuers
        if not issues and campaign.merchant_id != merchant_id:
            continue
        allotted = slices.get(campaign.id, 0) if issues else 0
        chosen.append(replace(campaign, issuers=issuers, allotted=allotted))
    return tuple(chosen)


def compose_plan(
    place: Place,
    root_key: bytes,
    certificate: str,
    campaigns: Sequence[wire.Campaign],
    accepted: Mapping[int, Collection[int]],
    slices: Mapping[int, int],
    staff_pin: str = "",
) -> wire.CouponPlan:
    """The plan of a router at `place`, from its alliance's campaigns and partnerships."""
    return wire.CouponPlan(
        alliance_id=place.alliance_id,
        merchant_id=place.merchant_id,
        site_id=place.site_id,
        root_key=root_key.hex(),
        issuer_certificate=certificate,
        campaigns=router_campaigns(place.merchant_id, campaigns, accepted, slices),
        staff_pin=staff_pin,
    )


def campaign_message(row: Any, merchant_name: str = "") -> wire.Campaign:
    """A campaigns row as the wire carries it, before issuers and allotment are known."""
    return wire.Campaign(
        id=row.id,
        merchant_id=row.merchant_id,
        merchant_name=merchant_name,
        title_en=row.title_en,
        title_zh=row.title_zh,
        terms_en=row.terms_en,
        terms_zh=row.terms_zh,
        image=row.image,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        budget=row.budget,
        per_device=row.per_device,
        trigger=wire.Trigger(row.trigger),
        nth_visit=row.nth_visit,
        reach=wire.Reach(row.reach),
        coupon_days=row.coupon_days,
    )


def alliance_campaigns(connection: Connection, alliance_id: int, now: int) -> list[wire.Campaign]:
    """The campaigns of the alliance's merchants that have not ended."""
    c, m = Campaign.__table__.c, Merchant.__table__.c
    rows = connection.execute(
        select(Campaign.__table__, m.name.label("merchant_name"))
        .join(Merchant.__table__, c.merchant_id == m.id)
        .where(m.alliance_id == alliance_id, c.ends_at > now)
        .order_by(c.id)
    )
    return [campaign_message(row, row.merchant_name) for row in rows]


def accepted_partners(connection: Connection, alliance_id: int) -> dict[int, set[int]]:
    """Per merchant of the alliance, its partners of the same alliance who accepted."""
    owner, partner = aliased(Merchant), aliased(Merchant)
    p = Partnership
    rows = connection.execute(
        select(p.merchant_id, p.partner_id)
        .join(owner, and_(owner.id == p.merchant_id, owner.alliance_id == alliance_id))
        .join(partner, and_(partner.id == p.partner_id, partner.alliance_id == alliance_id))
        .where(p.state == ACCEPTED)
    )
    found: dict[int, set[int]] = {}
    for merchant_id, partner_id in rows:
        found.setdefault(merchant_id, set()).add(partner_id)
    return found


def site_utc_offset(connection: Connection, site_id: int, at: float) -> int:
    """Seconds east of UTC of the site's time zone at `at` (its analytics rules; UTC unless set).

    Routers count a device's visits by the site's days with it, and the cloud's replay
    of their issuing does too, so both draw the line between days in the same place.
    """
    from cloud.rollup_store import current_rules
    from cloud.rollups import zone

    timezone = current_rules(connection, site_id, at).timezone
    offset = zone(timezone).utcoffset(datetime.fromtimestamp(at, UTC))
    return int(offset.total_seconds()) if offset is not None else 0


def plan_for(connection: Connection, router_id: str, now: datetime) -> wire.CouponPlan | None:
    """The router's coupon plan, allotting first slices as needed; None outside alliances
    or before its issuing key is certified (a router refuses a plan without its certificate)."""
    place = store.places(connection, [router_id]).get(router_id)
    if place is None or place.alliance_id is None:
        return None
    certificate = connection.scalar(
        select(IssuerKey.certificate).where(
            IssuerKey.router_id == router_id, IssuerKey.replaced_at.is_(None)
        )
    )
    if not certificate:
        return None  # its first status with an issuer_key brings the plan
    alliance_id = place.alliance_id
    campaigns = alliance_campaigns(connection, alliance_id, int(now.timestamp()))
    accepted = accepted_partners(connection, alliance_id)
    for campaign in router_campaigns(place.merchant_id, campaigns, accepted, {}):
        if place.merchant_id in campaign.issuers:
            store.top_up(connection, campaign.id, router_id)
    k = store.SLICES.c
    slices = dict(
        connection.execute(select(k.campaign_id, k.allotted).where(k.router_id == router_id)).all()
    )
    pin = connection.scalar(select(Merchant.staff_pin).where(Merchant.id == place.merchant_id))
    root = store.cloud_backend().public_key(store.root_seed(connection, alliance_id))
    plan = compose_plan(
        Place(alliance_id, place.merchant_id, place.site_id),
        root,
        certificate,
        campaigns,
        accepted,
        slices,
        pin or "",
    )
    return replace(plan, utc_offset=site_utc_offset(connection, place.site_id, now.timestamp()))


def push_plan(
    engine: Engine, publish: Publish, router_id: str, now: datetime
) -> wire.RouterConfig | None:
    """Send the router its coupon plan as its next config version; None if it has none.

    The version carries the other fields of the router's latest config too: a router
    takes a field a config leaves out as its own default, not as "unchanged".
    """
    from cloud.db import sessions

    with engine.begin() as connection:
        plan = plan_for(connection, router_id, now)
        latest = connection.scalar(
            select(RouterConfig.body)
            .where(RouterConfig.router_id == router_id)
            .order_by(RouterConfig.version.desc())
            .limit(1)
        )
    if plan is None:
        return None
    carried = {
        name: value
        for name, value in (json.loads(latest) if latest else {}).items()
        if name not in ("v", "type", "version", "coupons")
    }
    return push_config(sessions(engine), publish, router_id, {**carried, "coupons": plan.to_json()})


def push_alliance(
    engine: Engine, publish: Publish, alliance_id: int, now: datetime
) -> dict[str, int | None]:
    """Push every router of the alliance its plan; per router, the config version (None:
    no plan yet, or not sent: the next push brings it)."""
    r, sites, m = store.ROUTERS.c, store.SITES.c, store.MERCHANTS.c
    with engine.connect() as connection:
        routers = list(
            connection.execute(
                select(r.id)
                .join(store.SITES, r.site_id == sites.id)
                .join(store.MERCHANTS, sites.merchant_id == m.id)
                .where(m.alliance_id == alliance_id, r.state != RETIRED)
                .order_by(r.id)
            ).scalars()
        )
    pushed: dict[str, int | None] = {}
    for router_id in routers:
        try:
            config = push_plan(engine, publish, router_id, now)
        except Exception as error:  # stored or not, the change stands; say who missed it
            log.warning("coupon plan for %s not pushed: %s", router_id, error)
            config = None
        pushed[router_id] = None if config is None else config.version
    return pushed


def alliance_routers(connection: Connection, router_id: str | None = None) -> list[str]:
    """Every enrolled, unretired router (or just `router_id`), for pushing plans to."""
    r = store.ROUTERS.c
    query = select(r.id).where(r.state != RETIRED).order_by(r.id)
    if router_id is not None:
        query = query.where(r.id == router_id)
    return list(connection.execute(query).scalars())
