"""A device's wallet across its alliance, as the cloud answers a router's wallet request."""

from __future__ import annotations

from sqlalchemy import Engine, select

from agent import wire
from cloud import coupon_store as store
from cloud import status
from cloud.models import HELD, REDEEMED

WALLET_MAX = 500  # coupons in one reply: 341 characters each stays far under MAX_PAYLOAD


def wallet_reply(
    engine: Engine, router_id: str, request: wire.WalletRequest, now: float
) -> wire.WalletReply:
    """Every unexpired coupon the device holds in the router's alliance, spent ones named."""
    empty = wire.WalletReply(id=request.id, device_id=request.device_id)
    if not request.device_id:
        return empty
    c = store.COUPONS.c
    with engine.connect() as connection:
        if not status.enrolled(connection, [router_id]):
            return empty  # a retired (or unknown) router learns nothing
        place = store.places(connection, [router_id]).get(router_id)
        if place is None or place.alliance_id is None:
            return empty
        rows = connection.execute(
            select(c.coupon_id, c.token, c.state)
            .where(
                c.alliance_id == place.alliance_id,
                c.device_id == request.device_id,
                c.not_after > int(now),
                c.state.in_((HELD, REDEEMED)),  # not MOVED: the new copy is in the new wallet
            )
            .order_by(c.issued_at.desc(), c.coupon_id)
            .limit(WALLET_MAX)
        ).all()
    return wire.WalletReply(
        id=request.id,
        device_id=request.device_id,
        coupons=tuple(row.token for row in rows),
        spent=tuple(row.coupon_id for row in rows if row.state == REDEEMED),
    )
