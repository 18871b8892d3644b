"""The pure part of ingesting coupon events: which ledger, redemption and key rows they make.

cloud.ingest_core calls `CouponDesk.take` for each event it stores; a coupon_issued event
whose token does not verify against its alliance's root key is refused (dead-lettered)
with the reason. cloud.coupon_store writes what is gathered, in the batch's transaction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent import wire
from agent.coupons.shortcode import code_of
from agent.coupons.token import Coupon, TokenError
from cloud.models import HELD

COUPON_KINDS = frozenset(
    {
        wire.EventKind.COUPON_ISSUED,
        wire.EventKind.COUPON_SEEN,
        wire.EventKind.COUPON_REDEEMED,
        wire.EventKind.COUPON_REFUSED,
        wire.EventKind.WALLET_MOVED,
    }
)
_PUBLIC_KEY = re.compile(r"^[0-9a-f]{64}$")

Verify = Callable[[int, str], Coupon]  # (alliance_id, token text) -> coupon, or TokenError


@dataclass(frozen=True, slots=True)
class Place:
    """Where an enrolled router stands: its site, merchant and alliance (None: in none)."""

    router_id: str
    site_id: int
    merchant_id: int
    alliance_id: int | None


@dataclass(slots=True)
class CouponWrites:
    """What a batch's coupon events and statuses write."""

    issued: list[dict[str, Any]] = field(default_factory=list)  # coupons ledger rows
    redeemed: list[dict[str, Any]] = field(default_factory=list)  # redemptions rows
    moved: list[str] = field(default_factory=list)  # coupon ids a moved wallet replaced
    issuer_keys: dict[str, str] = field(default_factory=dict)  # router_id -> public key hex

    def __bool__(self) -> bool:
        return bool(self.issued or self.redeemed or self.moved or self.issuer_keys)


def wants_coupons(items: Any) -> bool:
    """True when a batch holds a coupon event or a status with an issuer key."""
    for item in items:
        message = getattr(item, "message", None)
        if isinstance(message, wire.EventBatch):
            if any(event.kind in COUPON_KINDS for event in message.events):
                return True
        elif isinstance(message, wire.Status) and message.issuer_key:
            return True
    return False


@dataclass(slots=True)
class CouponDesk:
    """Reads coupon events of routers at known `places`, verifying tokens with `verify`."""

    places: Mapping[str, Place]
    verify: Verify
    writes: CouponWrites = field(default_factory=CouponWrites)

    def take(self, event: wire.Event, row: dict[str, Any]) -> str | None:
        """Gather what `event` writes (and fill its events `row`); or why it is refused."""
        if event.kind is wire.EventKind.COUPON_ISSUED:
            return self._issued(event, row)
        if event.kind is wire.EventKind.COUPON_REDEEMED:
            return self._redeemed(event, row)
        return None

    def status(self, status: wire.Status) -> None:
        """Note the issuing key a router's status carries, if it is one."""
        if _PUBLIC_KEY.match(status.issuer_key):
            self.writes.issuer_keys[status.router_id] = status.issuer_key

    def _coupon(self, event: wire.Event) -> Coupon | str:
        place = self.places.get(event.router_id)
        if place is None or place.alliance_id is None:
            return "coupon: the router's merchant is in no alliance; add it to one"
        try:
            coupon = self.verify(place.alliance_id, event.coupon)
        except TokenError as exc:
            return f"coupon: {exc}"
        if event.coupon_id and event.coupon_id != coupon.coupon_id:
            return "coupon_id: is not the id of the coupon in the token"
        return coupon

    def _issued(self, event: wire.Event, row: dict[str, Any]) -> str | None:
        coupon = self._coupon(event)
        if isinstance(coupon, str):
            return coupon
        if event.device_id and event.device_id != coupon.device_id:
            return "device_id: is not the device the coupon is bound to"
        place = self.places[event.router_id]
        row.update(coupon_id=coupon.coupon_id, campaign_id=coupon.campaign_id)
        self.writes.issued.append(
            {
                "coupon_id": coupon.coupon_id,
                "short_code": code_of(coupon.coupon_id),
                "campaign_id": coupon.campaign_id,
                "merchant_id": coupon.merchant_id,
                "alliance_id": place.alliance_id,
                "issuer_router_id": event.router_id,
                "issuer_site_id": place.site_id,
                "issuer_merchant_id": place.merchant_id,
                "device_id": coupon.device_id,
                "token": "".join(event.coupon.split()).upper(),
                "issued_at": event.at,
                "not_before": coupon.not_before,
                "not_after": coupon.not_after,
                "state": HELD,
                "replaces": event.replaces,
            }
        )
        if event.replaces:
            self.writes.moved.append(event.replaces)
        return None

    def _redeemed(self, event: wire.Event, row: dict[str, Any]) -> str | None:
        coupon_id, campaign_id = event.coupon_id, event.campaign_id
        if event.coupon:
            coupon = self._coupon(event)
            if isinstance(coupon, str):
                return coupon
            coupon_id, campaign_id = coupon.coupon_id, coupon.campaign_id
        if not re.fullmatch(r"[0-9a-f]{32}", coupon_id):
            return "coupon_id: a redemption names its coupon (32 hex digits) or carries it"
        row.update(coupon_id=coupon_id, campaign_id=campaign_id)
        place = self.places.get(event.router_id)
        self.writes.redeemed.append(
            {
                "coupon_id": coupon_id,
                "campaign_id": campaign_id,
                "merchant_id": None if place is None else place.merchant_id,
                "router_id": event.router_id,
                "site_id": None if place is None else place.site_id,
                "at": event.at,
                "origin_router": event.router_id,
                "origin_boot": event.boot_id,
                "origin_seq": event.seq,
                "double_spend": False,
            }
        )
        return None


def double_spends(redemptions: list[tuple[int, str, float, str]]) -> dict[int, bool]:
    """Per redemption id, whether it is a double spend: all but each coupon's earliest.

    `redemptions` are (id, coupon_id, at, router_id); ties in `at` go by router_id, then id.
    """
    flags: dict[int, bool] = {}
    first: set[str] = set()
    for rid, coupon_id, _, _ in sorted(redemptions, key=lambda r: (r[1], r[2], r[3], r[0])):
        flags[rid] = coupon_id in first
        first.add(coupon_id)
    return flags
