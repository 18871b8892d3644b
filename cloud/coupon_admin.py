"""Campaigns and partnerships as merchants manage them (the CLI and the JSON API share this).

Every change is checked in full before anything is written: a refused change raises
AdminError naming the field and the fix, and what was stored stays as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agent import wire
from agent.coupons.campaigns import CampaignError, check_budget, check_campaign, issuers_of
from cloud.coupon_plans import campaign_message
from cloud.errors import CloudError
from cloud.models import (
    ACCEPTED,
    DECLINED,
    ENDED,
    PROPOSED,
    Campaign,
    CouponSlice,
    Merchant,
    Partnership,
)

BAD, MISSING, CONFLICT = 400, 404, 409
_TEXT = {"title_en": 120, "title_zh": 120, "terms_en": 512, "terms_zh": 512, "image": 255}
_NUMBERS = ("budget", "per_device", "nth_visit", "coupon_days", "slice_size")
_TIMES = ("starts_at", "ends_at")
_CHOICES = {"trigger": wire.Trigger, "reach": wire.Reach}
FIELDS = (*_TEXT, *_TIMES, *_NUMBERS, *_CHOICES)
REQUIRED = ("title_en", "title_zh", "starts_at", "ends_at", "budget")
DEFAULTS: dict[str, Any] = {
    "terms_en": "",
    "terms_zh": "",
    "image": "",
    "per_device": 1,
    "trigger": "login",
    "nth_visit": 1,
    "reach": "own",
    "coupon_days": 0,
    "slice_size": 50,
}
_NUMBER_MAX = 2**31 - 1


class AdminError(CloudError):
    """A refused change: `field` at fault, the fix in the message, `status` as HTTP says it."""

    def __init__(self, field: str, message: str, status: int = BAD) -> None:
        self.field = field
        self.message = message
        self.status = status
        super().__init__(f"{field}: {message}")


def parse_time(field: str, value: object) -> int:
    """Unix seconds from a number or an ISO 8601 date or time (without a zone: UTC)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise AdminError(
            field, f"{value!r} is no time; write 2027-01-31, 2027-01-31T18:00+08:00 or Unix seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _clean(values: Mapping[str, object]) -> dict[str, Any]:
    """The campaign fields in `values`, typed; AdminError for an unknown or bad one."""
    clean: dict[str, Any] = {}
    for name, value in values.items():
        if name not in FIELDS:
            raise AdminError(name, f"is not a campaign field; use one of {', '.join(FIELDS)}")
        if name in _TEXT:
            if not isinstance(value, str) or len(value) > _TEXT[name]:
                raise AdminError(name, f"must be text of at most {_TEXT[name]} characters")
            clean[name] = value
        elif name in _TIMES:
            clean[name] = parse_time(name, value)
        elif name in _NUMBERS:
            try:
                number = int(str(value).strip()) if not isinstance(value, bool) else -1
            except ValueError:
                number = -1
            if not 0 <= number <= _NUMBER_MAX:
                raise AdminError(name, f"{value!r} must be a whole number, 0 or more")
            clean[name] = number
        else:
            choices = [c.value for c in _CHOICES[name] if c.value != "unknown"]
            if value not in choices:
                raise AdminError(name, f"{value!r} is not one of {', '.join(choices)}")
            clean[name] = value
    return clean


def find_merchant(session: Session, merchant: str | int) -> Merchant | None:
    """The merchant with this id or name, if there is one; AdminError for neither (a JSON list)."""
    if isinstance(merchant, bool) or not isinstance(merchant, str | int):
        raise AdminError("merchant", "give the merchant's name or its id")
    if isinstance(merchant, int) or (merchant.isascii() and merchant.isdigit()):
        number = int(merchant)
        return session.get(Merchant, number) if 0 < number <= _NUMBER_MAX else None
    if "\x00" in merchant or len(merchant) > 120:
        return None  # no merchant has such a name
    return session.scalars(select(Merchant).where(Merchant.name == merchant)).one_or_none()


def _merchant(session: Session, merchant: str | int) -> Merchant:
    found = find_merchant(session, merchant)
    if found is None:
        raise AdminError(
            "merchant", f"no merchant {merchant!r}; see `loopspot-cloud sites`", MISSING
        )
    return found


def _check(row_values: dict[str, Any], merchant_id: int) -> None:
    """The campaign rules (agent.coupons.campaigns.check_campaign) and the slice size."""
    probe = SimpleNamespace(id=0, merchant_id=merchant_id, **row_values)
    try:
        check_campaign(campaign_message(probe))
    except CampaignError as exc:
        message = str(exc).split(": ", 1)[-1]
        raise AdminError(exc.field, message) from None
    if row_values["slice_size"] < 1:
        raise AdminError("slice_size", "must be at least 1 coupon per router at a time")


def allotted_total(session: Session, campaign_id: int) -> int:
    """The coupons of the campaign already handed out to routers as slices."""
    total = session.scalar(
        select(func.sum(CouponSlice.allotted)).where(CouponSlice.campaign_id == campaign_id)
    )
    return int(total or 0)


def create_campaign(
    session: Session, merchant: str | int, values: Mapping[str, object]
) -> Campaign:
    """A new campaign of `merchant`; flushed, so its id is set."""
    owner = _merchant(session, merchant)
    clean = _clean(values)
    missing = [name for name in REQUIRED if name not in clean]
    if missing:
        raise AdminError(missing[0], "is required for a new campaign")
    row_values = {**DEFAULTS, **clean}
    _check(row_values, owner.id)
    row = Campaign(merchant_id=owner.id, **row_values)
    session.add(row)
    session.flush()
    return row


def get_campaign(session: Session, campaign_id: int) -> Campaign:
    """The campaign `campaign_id`; AdminError (404) if there is none."""
    row = session.get(Campaign, campaign_id)
    if row is None:
        raise AdminError("campaign", f"no campaign {campaign_id}; see `campaign list`", MISSING)
    return row


def update_campaign(session: Session, campaign_id: int, values: Mapping[str, object]) -> Campaign:
    """The campaign with `values` changed, once the whole result passes every check."""
    row = get_campaign(session, campaign_id)
    clean = _clean(values)
    merged = {name: getattr(row, name) for name in FIELDS} | clean
    _check(merged, row.merchant_id)
    if "budget" in clean:
        try:
            check_budget(clean["budget"], allotted_total(session, campaign_id))
        except CampaignError as exc:
            raise AdminError(exc.field, str(exc).split(": ", 1)[-1], CONFLICT) from None
    for name, value in clean.items():
        setattr(row, name, value)
    session.flush()
    return row


def accepted_of(session: Session, merchant_id: int) -> set[int]:
    """The partners of the same alliance who accepted `merchant_id`'s partnership."""
    owner = session.get_one(Merchant, merchant_id)
    rows = session.execute(
        select(Partnership.partner_id)
        .join(Merchant, Merchant.id == Partnership.partner_id)
        .where(
            Partnership.merchant_id == merchant_id,
            Partnership.state == ACCEPTED,
            Merchant.alliance_id == owner.alliance_id,
        )
    )
    return set(rows.scalars())


def campaign_view(session: Session, row: Campaign) -> dict[str, Any]:
    """A campaign as the CLI and the API show it."""
    owner = session.get_one(Merchant, row.merchant_id)
    issuers = issuers_of(
        row.merchant_id, wire.Reach(row.reach), accepted_of(session, row.merchant_id)
    )
    return {
        "id": row.id,
        "merchant_id": row.merchant_id,
        "merchant": owner.name,
        **{name: getattr(row, name) for name in FIELDS},
        "issuers": list(issuers),
        "allotted": allotted_total(session, row.id),
    }


def list_campaigns(session: Session, merchant: str | int | None = None) -> list[dict[str, Any]]:
    """Every campaign (of `merchant`, if given), by id."""
    query = select(Campaign).order_by(Campaign.id)
    if merchant is not None:
        query = query.where(Campaign.merchant_id == _merchant(session, merchant).id)
    return [campaign_view(session, row) for row in session.scalars(query)]


def propose(
    session: Session, merchant: str | int, partner: str | int, now: datetime
) -> Partnership:
    """`merchant` asks `partner` (same alliance) to hand out its coupons; flushed."""
    owner, other = _merchant(session, merchant), _merchant(session, partner)
    if owner.id == other.id:
        raise AdminError("partner", "is the merchant itself; name another merchant")
    if owner.alliance_id is None or owner.alliance_id != other.alliance_id:
        raise AdminError(
            "partner",
            f"{other.name!r} is not in the alliance of {owner.name!r}; partners must share one",
        )
    found = session.scalars(
        select(Partnership).where(
            Partnership.merchant_id == owner.id, Partnership.partner_id == other.id
        )
    ).one_or_none()
    if found is not None and found.state in (PROPOSED, ACCEPTED):
        raise AdminError("partner", f"a partnership with {other.name!r} is {found.state}", CONFLICT)
    if found is None:
        found = Partnership(merchant_id=owner.id, partner_id=other.id, proposed_at=now)
        session.add(found)
    found.state, found.proposed_at, found.answered_at, found.ended_at = PROPOSED, now, None, None
    session.flush()
    return found


_MOVES: dict[str, tuple[tuple[str, ...], str]] = {
    "accept": ((PROPOSED,), ACCEPTED),
    "decline": ((PROPOSED,), DECLINED),
    "end": ((PROPOSED, ACCEPTED), ENDED),
}


def get_partnership(session: Session, merchant: str | int, partner: str | int) -> Partnership:
    """The partnership `merchant` proposed to `partner`; AdminError (404) if none."""
    owner, other = _merchant(session, merchant), _merchant(session, partner)
    found = session.scalars(
        select(Partnership).where(
            Partnership.merchant_id == owner.id, Partnership.partner_id == other.id
        )
    ).one_or_none()
    if found is None:
        raise AdminError("partner", f"{owner.name!r} proposed nothing to {other.name!r}", MISSING)
    return found


def answer(session: Session, partnership: Partnership, action: str, now: datetime) -> Partnership:
    """The partner accepts or declines a proposal; either side ends it."""
    if action not in _MOVES:
        raise AdminError("action", f"{action!r}: use accept, decline or end")
    sources, target = _MOVES[action]
    if partnership.state not in sources:
        raise AdminError(
            "state", f"the partnership is {partnership.state}; it cannot {action} now", CONFLICT
        )
    partnership.state = target
    if target == ENDED:
        partnership.ended_at = now
    else:
        partnership.answered_at = now
    session.flush()
    return partnership


def partnership_view(session: Session, row: Partnership) -> dict[str, Any]:
    """A partnership as the CLI and the API show it."""

    def stamp(moment: datetime | None) -> str | None:
        return None if moment is None else moment.isoformat(timespec="seconds")

    return {
        "id": row.id,
        "merchant": session.get_one(Merchant, row.merchant_id).name,
        "partner": session.get_one(Merchant, row.partner_id).name,
        "state": row.state,
        "proposed_at": stamp(row.proposed_at),
        "answered_at": stamp(row.answered_at),
        "ended_at": stamp(row.ended_at),
    }


def list_partnerships(session: Session, merchant: str | int | None = None) -> list[dict[str, Any]]:
    """Every partnership (that `merchant` is either side of, if given)."""
    query = select(Partnership).order_by(Partnership.id)
    if merchant is not None:
        mid = _merchant(session, merchant).id
        query = query.where((Partnership.merchant_id == mid) | (Partnership.partner_id == mid))
    return [partnership_view(session, row) for row in session.scalars(query)]


def set_staff_pin(session: Session, merchant: str | int, pin: str) -> Merchant:
    """Store the hash of `merchant`'s staff PIN (4-8 digits); the PIN itself is never kept."""
    from agent.coupons.pin import PinError, hash_pin

    owner = _merchant(session, merchant)
    try:
        owner.staff_pin = hash_pin(pin)
    except PinError as exc:
        raise AdminError("pin", str(exc)) from None
    session.flush()
    return owner
