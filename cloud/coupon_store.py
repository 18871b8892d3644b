"""Coupon rows in SQL, inside the ingest batch's transaction: ledger, redemptions, slices.

Every step is safe to repeat: a redelivered batch inserts nothing (coupon_id and the
redemption's event origin are unique), and states, double-spend flags and issued counts
are recomputed from the rows rather than incremented. Blocking: call from a worker thread.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, func, insert, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from agent import wire
from agent.coupons import campaigns as rules
from agent.coupons.ed25519 import Backend, backend
from agent.coupons.token import Coupon, Verifier
from cloud.coupon_ingest import Place, double_spends
from cloud.enrol_fleet import utc
from cloud.models import HELD, MOVED, REDEEMED, RETIRED, Base

COUPONS: Table = Base.metadata.tables["coupons"]
REDEMPTIONS: Table = Base.metadata.tables["redemptions"]
SLICES: Table = Base.metadata.tables["coupon_slices"]
CAMPAIGNS: Table = Base.metadata.tables["campaigns"]
ISSUER_KEYS: Table = Base.metadata.tables["issuer_keys"]
COMMANDS: Table = Base.metadata.tables["commands"]
ROUTERS: Table = Base.metadata.tables["routers"]
SITES: Table = Base.metadata.tables["sites"]
MERCHANTS: Table = Base.metadata.tables["merchants"]
ALLIANCES: Table = Base.metadata.tables["alliances"]
_ORIGIN = ("origin_router", "origin_boot", "origin_seq")


def cloud_backend() -> Backend:
    """The Ed25519 library the cloud signs and verifies with."""
    return backend("cryptography")


def places(connection: Connection, router_ids: Collection[str]) -> dict[str, Place]:
    """Each router's site, merchant and alliance."""
    if not router_ids:
        return {}
    r, s, m = ROUTERS.c, SITES.c, MERCHANTS.c
    rows = connection.execute(
        select(r.id, s.id, m.id, m.alliance_id)
        .join(SITES, r.site_id == s.id)
        .join(MERCHANTS, s.merchant_id == m.id)
        .where(r.id.in_(sorted(router_ids)))
    )
    return {row[0]: Place(row[0], row[1], row[2], row[3]) for row in rows}


def root_seed(connection: Connection, alliance_id: int) -> bytes:
    """The alliance's coupon root seed."""
    seed = connection.scalar(select(ALLIANCES.c.coupon_key).where(ALLIANCES.c.id == alliance_id))
    if seed is None:
        raise LookupError(f"alliance {alliance_id} does not exist")
    return bytes(seed)


class Verifiers:
    """One token Verifier per alliance, made on first use from its root key."""

    def __init__(self) -> None:
        self._made: dict[int, Verifier] = {}

    def verifier(self, connection: Connection, alliance_id: int) -> Verifier:
        """The Verifier of `alliance_id`."""
        found = self._made.get(alliance_id)
        if found is None:
            ed = cloud_backend()
            public = ed.public_key(root_seed(connection, alliance_id))
            found = self._made[alliance_id] = Verifier(ed, public, alliance_id)
        return found

    def verify(self, connection: Connection) -> Any:
        """A `Verify` for cloud.coupon_ingest bound to `connection`."""

        def check(alliance_id: int, token: str) -> Coupon:
            return self.verifier(connection, alliance_id).coupon(token)

        return check


@dataclass(slots=True)
class CouponOutcome:
    """What to do once the batch has committed."""

    commands: list[tuple[str, wire.Command]] = field(default_factory=list)  # to publish
    plan_routers: set[str] = field(default_factory=set)  # routers whose coupon plan changed


def _dialect_insert(connection: Connection, table: Table) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def insert_ignore(connection: Connection, table: Table, keys: Iterable[str]) -> Any:
    """INSERT ... ON CONFLICT (keys) DO NOTHING, in the connection's dialect."""
    return _dialect_insert(connection, table).on_conflict_do_nothing(index_elements=list(keys))


_ISSUER = ("issuer_router_id", "issuer_site_id", "issuer_merchant_id", "issued_at", "replaces")


def insert_issued(connection: Connection) -> Any:
    """Ledger rows by coupon_id: new ones inserted; one the cloud redeemed before hearing of
    its issue (issuer unknown) gets its issuer; anything else stays as it is."""
    statement = _dialect_insert(connection, COUPONS)
    return statement.on_conflict_do_update(
        index_elements=["coupon_id"],
        set_={name: statement.excluded[name] for name in _ISSUER},
        where=COUPONS.c.issuer_router_id == "",
    )


def lock_coupons(connection: Connection, coupon_ids: Iterable[str]) -> None:
    """Serialise writers of these coupons' redemptions (PostgreSQL; SQLite has one writer)."""
    if connection.dialect.name != "postgresql":
        return
    for coupon_id in sorted(set(coupon_ids)):
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": int(coupon_id[:15], 16)})


def settle(connection: Connection, coupon_ids: Collection[str]) -> None:
    """Recompute redeemed state and double-spend flags of these coupons from their redemptions."""
    if not coupon_ids:
        return
    d = REDEMPTIONS.c
    rows = connection.execute(
        select(d.id, d.coupon_id, d.at, d.router_id, d.double_spend).where(
            d.coupon_id.in_(sorted(coupon_ids))
        )
    ).all()
    flags = double_spends([(r[0], r[1], r[2], r[3]) for r in rows])
    for rid, *_, flagged in rows:
        if flags[rid] != flagged:
            connection.execute(
                update(REDEMPTIONS).where(d.id == rid).values(double_spend=flags[rid])
            )
    earliest: dict[str, float] = {}
    for _, coupon_id, at, _, _ in rows:
        earliest[coupon_id] = min(at, earliest.get(coupon_id, at))
    c = COUPONS.c
    for coupon_id, at in sorted(earliest.items()):
        connection.execute(
            update(COUPONS)
            .where(c.coupon_id == coupon_id, c.state != REDEEMED)
            .values(state=REDEEMED, redeemed_at=at)
        )


def _new_redemptions(connection: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The redemption rows whose event origin is not stored yet."""
    d = REDEMPTIONS.c
    origins = [(r["origin_router"], r["origin_boot"], r["origin_seq"]) for r in rows]
    stored = set(
        connection.execute(
            select(d.origin_router, d.origin_boot, d.origin_seq).where(
                tuple_(d.origin_router, d.origin_boot, d.origin_seq).in_(origins)
            )
        ).all()
    )
    return [r for r, o in zip(rows, origins, strict=True) if o not in stored]


def announce_spent(
    connection: Connection, redemptions: Iterable[dict[str, Any]]
) -> list[tuple[str, wire.Command]]:
    """COUPONS_SPENT commands (stored) for the other routers of each redeeming merchant."""
    by_router: dict[str, set[str]] = {}
    r, s = ROUTERS.c, SITES.c
    for row in redemptions:
        if row.get("merchant_id") is None:
            continue
        siblings = connection.execute(
            select(r.id)
            .join(SITES, r.site_id == s.id)
            .where(s.merchant_id == row["merchant_id"], r.id != row["router_id"])
            .where(r.state != RETIRED)
        ).scalars()
        for router_id in siblings:
            by_router.setdefault(router_id, set()).add(row["coupon_id"])
    made = []
    for router_id, ids in sorted(by_router.items()):
        ordered = sorted(ids)
        for start in range(0, len(ordered), wire.MAX_BATCH):
            chunk = tuple(ordered[start : start + wire.MAX_BATCH])
            command = wire.Command(
                id=str(uuid.uuid4()),
                action=wire.CommandAction.COUPONS_SPENT,
                issued_at=datetime.now(UTC).timestamp(),
                coupons=chunk,
            )
            connection.execute(
                insert(COMMANDS).values(
                    id=command.id,
                    router_id=router_id,
                    action=command.action.value,
                    device_id="",
                    coupons=",".join(chunk),
                )
            )
            made.append((router_id, command))
    return made


RESEND_AFTER = timedelta(minutes=1)  # a command this old and unanswered is sent again
RESEND_WITHIN = timedelta(days=30)  # older ones: the router has had a month of wallet syncs


def unanswered_spent(connection: Connection, now: datetime) -> list[tuple[str, wire.Command]]:
    """COUPONS_SPENT commands no router has acknowledged, sent a while ago: to send again.

    A publish lost between the commit and the broker (a dropped connection) is sent
    again this way; a router that has one already adds nothing to its spent list.
    """
    m = COMMANDS.c
    rows = connection.execute(
        select(m.id, m.router_id, m.coupons, m.issued_at)
        .join(ROUTERS, ROUTERS.c.id == m.router_id)
        .where(
            m.action == wire.CommandAction.COUPONS_SPENT.value,
            m.acked_at.is_(None),
            m.issued_at < now - RESEND_AFTER,
            m.issued_at > now - RESEND_WITHIN,
            ROUTERS.c.state != RETIRED,
        )
        .order_by(m.issued_at)
    ).all()
    return [
        (
            row.router_id,
            wire.Command(
                id=row.id,
                action=wire.CommandAction.COUPONS_SPENT,
                issued_at=utc(row.issued_at).timestamp(),
                coupons=tuple(c for c in row.coupons.split(",") if c),
            ),
        )
        for row in rows
        if row.coupons
    ]


def lock_campaign(connection: Connection, campaign_id: int) -> Any:
    """The campaign's row, locked until commit (PostgreSQL), so slices never outgrow budget."""
    query = select(CAMPAIGNS).where(CAMPAIGNS.c.id == campaign_id)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(key_share=True)  # slices may still point at it
    return connection.execute(query).first()


def top_up(connection: Connection, campaign_id: int, router_id: str) -> bool:
    """Allot the router another slice of the campaign if half its slice is issued; changed?"""
    campaign = lock_campaign(connection, campaign_id)
    if campaign is None:
        return False
    k = SLICES.c
    rows = connection.execute(
        select(k.router_id, k.allotted, k.issued).where(k.campaign_id == campaign_id)
    ).all()
    allotted = {row[0]: row[1] for row in rows}
    issued = {row[0]: row[2] for row in rows}
    mine = rules.refill(campaign.budget, allotted, issued, router_id, campaign.slice_size)
    if mine == allotted.get(router_id, 0):
        return False
    if router_id in allotted:
        connection.execute(
            update(SLICES)
            .where(k.campaign_id == campaign_id, k.router_id == router_id)
            .values(allotted=mine)
        )
    else:
        connection.execute(
            insert(SLICES).values(
                campaign_id=campaign_id, router_id=router_id, allotted=mine, issued=0
            )
        )
    return True


def count_issued(connection: Connection, pairs: Iterable[tuple[int, str]]) -> set[str]:
    """Recount each (campaign, router) slice's issued coupons from the ledger and top up
    the slices past half used; the routers whose allotment grew."""
    k, c = SLICES.c, COUPONS.c
    grown = set()
    for campaign_id, router_id in sorted(set(pairs)):
        # The campaign's row first, as top_up and plan_for take it: one lock order for all.
        if lock_campaign(connection, campaign_id) is None:
            continue  # a campaign this cloud never made: counted in the ledger, no slice
        issued = connection.scalar(
            select(func.count())
            .select_from(COUPONS)
            .where(c.campaign_id == campaign_id, c.issuer_router_id == router_id)
        )
        allotted = connection.scalar(
            select(k.allotted).where(k.campaign_id == campaign_id, k.router_id == router_id)
        )
        if allotted is None:  # issued with no slice from this cloud: counted, never topped up
            connection.execute(
                insert(SLICES).values(
                    campaign_id=campaign_id, router_id=router_id, allotted=0, issued=issued
                )
            )
            continue
        connection.execute(
            update(SLICES)
            .where(k.campaign_id == campaign_id, k.router_id == router_id)
            .values(issued=issued)
        )
        # Only plan_for gives a first slice, to a router whose plan has the campaign.
        if allotted > 0 and top_up(connection, campaign_id, router_id):
            grown.add(router_id)
    return grown


def apply(
    connection: Connection, writes: Any, where: dict[str, Place], now: datetime
) -> CouponOutcome:
    """Write a batch's CouponWrites; return the commands and plan pushes due after commit."""
    outcome = CouponOutcome()
    touched = {row["coupon_id"] for row in writes.issued + writes.redeemed}
    lock_coupons(connection, touched | set(writes.moved))
    if writes.issued:
        connection.execute(insert_issued(connection), writes.issued)
    if writes.moved:
        c = COUPONS.c
        connection.execute(
            update(COUPONS)
            .where(c.coupon_id.in_(sorted(set(writes.moved))), c.state == HELD)
            .values(state=MOVED)
        )
    if writes.redeemed:
        fresh = _new_redemptions(connection, writes.redeemed)
        if fresh:
            connection.execute(insert_ignore(connection, REDEMPTIONS, _ORIGIN), fresh)
            outcome.commands = announce_spent(connection, fresh)
    settle(connection, touched)
    pairs = [(row["campaign_id"], row["issuer_router_id"]) for row in writes.issued]
    outcome.plan_routers |= count_issued(connection, pairs)
    return outcome
