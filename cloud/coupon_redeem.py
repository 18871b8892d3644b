"""Redeeming a coupon through the cloud: one winner under any concurrency, SQLite or PostgreSQL.

The winner is the one transaction whose `UPDATE coupons SET state='redeemed' WHERE
coupon_id=... AND state='held'` changes a row; every other caller sees the row already
redeemed and is refused as spent. The checks before it (signature, merchant, validity)
are the counter's own (agent.coupons.counter.judge).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, select, update

from agent import wire
from agent.coupons.counter import Refusal, judge
from agent.coupons.shortcode import ShortCodeError, code_of, parse_code
from agent.coupons.token import Coupon, TokenError, Verifier, looks_like_token
from cloud import coupon_store as store
from cloud.coupon_ingest import Place
from cloud.db import sessions
from cloud.errors import CloudError
from cloud.fleet_push import Publish, send_command
from cloud.models import HELD, MOVED, REDEEMED, RETIRED

_MESSAGES = {
    Refusal.NOT_A_COUPON: "no coupon of this alliance has that code",
    Refusal.FORGED: "the token does not verify: altered, forged or another alliance's",
    Refusal.OTHER_MERCHANT: "this coupon is honoured only at its own merchant's sites",
    Refusal.SPENT: "this coupon was redeemed already",
    Refusal.MOVED: "this coupon moved to the phone's new address; redeem the new copy",
    Refusal.EXPIRED: "this coupon has expired",
    Refusal.NOT_YET_VALID: "this coupon is not valid yet",
    Refusal.OTHER_DEVICE: "this coupon is bound to another phone",
    Refusal.ISSUER_EXPIRED: "this coupon was issued after its router's certificate ended",
}


class RedeemError(CloudError):
    """A redemption that cannot even be tried: unknown router, or one outside any alliance."""


class RedeemRefused(CloudError):
    """The coupon was refused; `reason` is the counter's Refusal."""

    def __init__(self, reason: Refusal, coupon: Coupon | None = None) -> None:
        self.reason = reason
        self.coupon = coupon
        super().__init__(f"refused ({reason.value}): {_MESSAGES[reason]}")


@dataclass(frozen=True, slots=True)
class Redeemed:
    """A coupon this call redeemed."""

    coupon: Coupon
    router_id: str
    at: float


def _place(connection: Connection, router_id: str) -> tuple[Place, bytes]:
    """The router's place and its alliance's root seed, in one query."""
    r, sites, m, a = store.ROUTERS.c, store.SITES.c, store.MERCHANTS.c, store.ALLIANCES.c
    row = connection.execute(
        select(sites.id, m.id, m.alliance_id, a.coupon_key)
        .select_from(store.ROUTERS)
        .join(store.SITES, r.site_id == sites.id)
        .join(store.MERCHANTS, sites.merchant_id == m.id)
        .outerjoin(store.ALLIANCES, m.alliance_id == a.id)
        .where(r.id == router_id)
    ).first()
    if row is None:
        raise RedeemError(f"router_id: no router {router_id!r}; see `loopspot-cloud routers`")
    if row.alliance_id is None or row.coupon_key is None:
        raise RedeemError(f"router_id: {router_id!r}'s merchant is in no alliance")
    return Place(router_id, row[0], row[1], row.alliance_id), bytes(row.coupon_key)


@functools.lru_cache(maxsize=64)
def _verifier(root_seed: bytes, alliance_id: int) -> Verifier:
    """A Verifier per root key, kept: it remembers the issuer certificates it checked."""
    ed = store.cloud_backend()
    return Verifier(ed, ed.public_key(root_seed), alliance_id)


def find_coupon(connection: Connection, text: str, alliance_id: int, root_seed: bytes) -> Coupon:
    """The verified coupon a token or short code names in the alliance; else RedeemRefused."""
    verifier = _verifier(root_seed, alliance_id)
    token = text
    if not looks_like_token(text):
        try:
            code = parse_code(text)
        except ShortCodeError:
            raise RedeemRefused(Refusal.NOT_A_COUPON) from None
        c = store.COUPONS.c
        found = connection.scalar(
            select(c.token).where(c.short_code == code, c.alliance_id == alliance_id).limit(1)
        )
        if found is None:
            raise RedeemRefused(Refusal.NOT_A_COUPON)
        token = found
    try:
        coupon = verifier.coupon(token)
    except TokenError:
        raise RedeemRefused(Refusal.FORGED) from None
    return coupon


def _ledger_row(coupon: Coupon, alliance_id: int, at: float) -> dict[str, object]:
    """A ledger row for a verified coupon the cloud has not heard issued yet."""
    return {
        "coupon_id": coupon.coupon_id,
        "short_code": code_of(coupon.coupon_id),
        "campaign_id": coupon.campaign_id,
        "merchant_id": coupon.merchant_id,
        "alliance_id": alliance_id,
        "issuer_router_id": "",  # its coupon_issued event has not arrived; it fills nothing
        "issuer_site_id": None,
        "issuer_merchant_id": None,
        "device_id": coupon.device_id,
        "token": coupon.to_text(),
        "issued_at": float(coupon.not_before),
        "not_before": coupon.not_before,
        "not_after": coupon.not_after,
        "state": HELD,
        "replaces": "",
    }


_LATER = (Refusal.EXPIRED, Refusal.NOT_YET_VALID, Refusal.OTHER_DEVICE)  # after spent/moved


def redeem(engine: Engine, text: str, router_id: str, at: float) -> Redeemed:
    """Redeem the coupon `text` (token or short code) at `router_id` at `at`, exactly once.

    Raises RedeemRefused with the counter's reason, or RedeemError for an unknown router.
    One transaction; its first write is the one that decides, so SQLite's single writer
    and PostgreSQL's row lock both leave exactly one winner.
    """
    c = store.COUPONS.c
    with engine.begin() as connection:
        place, seed = _place(connection, router_id)
        assert place.alliance_id is not None
        coupon = find_coupon(connection, text.strip(), place.alliance_id, seed)
        verdict = judge(coupon, merchant_id=place.merchant_id, now=int(at), spent=())
        if verdict.refusal is not None:
            if verdict.refusal in _LATER:  # the counter names spent or moved first
                state = connection.scalar(select(c.state).where(c.coupon_id == coupon.coupon_id))
                if state in (REDEEMED, MOVED):
                    raise RedeemRefused(_refusal(state), coupon)
            raise RedeemRefused(verdict.refusal, coupon)
        store.lock_coupons(connection, [coupon.coupon_id])
        connection.execute(
            store.insert_ignore(connection, store.COUPONS, ["coupon_id"]),
            [_ledger_row(coupon, place.alliance_id, at)],
        )
        reported = select(store.REDEMPTIONS.c.id).where(
            store.REDEMPTIONS.c.coupon_id == coupon.coupon_id
        )
        won = connection.execute(
            update(store.COUPONS)
            .where(c.coupon_id == coupon.coupon_id, c.state == HELD, ~reported.exists())
            .values(state=REDEEMED, redeemed_at=at)
        ).rowcount
        if won != 1:
            # spent: by another caller, or at a router that reported it before its issue came
            state = connection.scalar(select(c.state).where(c.coupon_id == coupon.coupon_id))
            raise RedeemRefused(_refusal(state), coupon)
        connection.execute(
            store.REDEMPTIONS.insert().values(
                coupon_id=coupon.coupon_id,
                campaign_id=coupon.campaign_id,
                merchant_id=place.merchant_id,
                router_id=router_id,
                site_id=place.site_id,
                at=at,
                double_spend=False,  # no other redemption exists: the update said so
            )
        )
    return Redeemed(coupon, router_id, at)


def _refusal(state: str | None) -> Refusal:
    return Refusal.MOVED if state == MOVED else Refusal.SPENT


def announce(engine: Engine, publish: Publish, done: Redeemed) -> list[str]:
    """Tell the redeeming merchant's other routers the coupon is spent; the routers told."""
    r, sites = store.ROUTERS.c, store.SITES.c
    with engine.connect() as connection:
        merchant = connection.scalar(
            select(sites.merchant_id)
            .join(store.ROUTERS, r.site_id == sites.id)
            .where(r.id == done.router_id)
        )
        others = list(
            connection.execute(
                select(r.id)
                .join(store.SITES, r.site_id == sites.id)
                .where(sites.merchant_id == merchant, r.id != done.router_id, r.state != RETIRED)
                .order_by(r.id)
            ).scalars()
        )
    factory = sessions(engine)
    for router_id in others:
        send_command(
            factory,
            publish,
            router_id,
            wire.CommandAction.COUPONS_SPENT,
            issued_at=done.at,
            coupons=(done.coupon.coupon_id,),
        )
    return others
