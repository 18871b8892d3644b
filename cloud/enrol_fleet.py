"""The fleet an operator sets up before enrolling: alliances, merchants, sites, routers.

Every merchant belongs to exactly one alliance, whose key pseudonymises devices. A merchant
created without one gets its own single-member alliance, so device_ids are stable across its
sites from the first day. Moving a merchant into another alliance later changes the key, and
its devices start with new device_ids.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from cloud.errors import CloudError
from cloud.models import RETIRED, Alliance, ClaimCode, Merchant, Router, Site

NAME_MAX = 120
DEVICE_KEY_BYTES = 32


class FleetError(CloudError):
    """A fleet change was refused (unknown merchant or site, duplicate name); names the field."""


def utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive value (as SQLite returns them) is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _check_name(field: str, name: str) -> str:
    cleaned = " ".join(name.split())
    if not cleaned or len(cleaned) > NAME_MAX:
        raise FleetError(f"{field}: {name!r} must be 1-{NAME_MAX} characters")
    return cleaned


def find_or_create_alliance(session: Session, name: str) -> tuple[Alliance, bool]:
    """The alliance called `name`, made with a fresh device key if missing; (alliance, made)."""
    name = _check_name("alliance", name)
    found = session.scalars(select(Alliance).where(Alliance.name == name)).one_or_none()
    if found is not None:
        return found, False
    alliance = Alliance(name=name, device_key=os.urandom(DEVICE_KEY_BYTES))
    session.add(alliance)
    session.flush()
    return alliance, True


def ensure_alliance(session: Session, merchant: Merchant) -> Alliance:
    """The merchant's alliance; a merchant without one gets its own single-member alliance."""
    if merchant.alliance_id is not None:
        return session.get_one(Alliance, merchant.alliance_id)
    alliance, _ = find_or_create_alliance(session, f"merchant-{merchant.id}-{merchant.name}"[:120])
    merchant.alliance_id = alliance.id
    session.flush()
    return alliance


def create_merchant(session: Session, name: str, alliance: str | None = None) -> Merchant:
    """A new merchant in alliance `alliance` (made if missing) or in one of its own; flushed."""
    name = _check_name("merchant", name)
    if session.scalars(select(Merchant).where(Merchant.name == name)).first() is not None:
        raise FleetError(f"merchant: {name!r} exists already; pick another name")
    merchant = Merchant(name=name)
    if alliance is not None:
        merchant.alliance_id = find_or_create_alliance(session, alliance)[0].id
    session.add(merchant)
    session.flush()
    ensure_alliance(session, merchant)
    return merchant


def merchant_named(session: Session, name: str) -> Merchant:
    """The merchant called `name`; FleetError if there is none."""
    merchant = session.scalars(select(Merchant).where(Merchant.name == name)).one_or_none()
    if merchant is None:
        raise FleetError(f"merchant: no merchant called {name!r}; create it first")
    return merchant


def create_site(session: Session, merchant_name: str, name: str) -> Site:
    """A new site of merchant `merchant_name`; flushed, so its id is set."""
    merchant = merchant_named(session, merchant_name)
    name = _check_name("site", name)
    taken = select(Site).where(Site.merchant_id == merchant.id, Site.name == name)
    if session.scalars(taken).first() is not None:
        raise FleetError(f"site: {merchant.name!r} has a site called {name!r} already")
    site = Site(merchant_id=merchant.id, name=name)
    session.add(site)
    session.flush()
    return site


@dataclass(frozen=True, slots=True)
class RouterRow:
    """One router as the operator sees it in a listing."""

    router_id: str
    site_id: int
    site: str
    merchant: str
    state: str  # awaiting-enrolment, claim-expired, or the last reported state once enrolled
    enrolled_at: datetime | None
    last_seen: datetime | None
    claim_expires_at: datetime | None


def list_routers(session: Session, now: datetime) -> list[RouterRow]:
    """Every router with its site, merchant and enrolment state, ordered by merchant and site."""
    newest = (
        select(ClaimCode.router_id, func.max(ClaimCode.expires_at))
        .where(ClaimCode.used_at.is_(None), ClaimCode.expires_at > utc(now))
        .group_by(ClaimCode.router_id)
    )
    pending = {router_id: expires for router_id, expires in session.execute(newest)}
    rows = session.execute(
        select(Router, Site.name, Merchant.name)
        .join(Site, Router.site_id == Site.id)
        .join(Merchant, Site.merchant_id == Merchant.id)
        .order_by(Merchant.name, Site.name, Router.id)
    )
    listing = []
    for router, site_name, merchant_name in rows:
        expires = pending.get(router.id)
        if router.enrolled_at is not None or router.state == RETIRED:
            state = router.state
        else:
            state = "awaiting-enrolment" if expires is not None else "claim-expired"
        listing.append(
            RouterRow(
                router_id=router.id,
                site_id=router.site_id,
                site=site_name,
                merchant=merchant_name,
                state=state,
                enrolled_at=None if router.enrolled_at is None else utc(router.enrolled_at),
                last_seen=None if router.last_seen is None else utc(router.last_seen),
                claim_expires_at=None if expires is None else utc(expires),
            )
        )
    return listing


def retire_router(session: Session, router_id: str) -> Router:
    """Take a router out of the fleet for good (a shop closed, a router stolen).

    Ingest refuses its messages from then on, and its certificate can no longer renew;
    cloud.revocation.cut_off then ends it at the broker (`loopspot-cloud retire` does both).
    """
    router = session.get(Router, router_id)
    if router is None:
        raise FleetError(f"router_id: no router {router_id!r}")
    router.state = RETIRED
    router.cert_fingerprint = None
    session.execute(  # codes not yet redeemed would enrol it again
        delete(ClaimCode).where(ClaimCode.router_id == router_id, ClaimCode.used_at.is_(None))
    )
    return router
