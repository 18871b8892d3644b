"""The cloud's tables, defined once (SQLAlchemy 2, typed). Alembic migrations follow this.

No raw MAC address is ever stored: devices are known by their `device_id` pseudonym.
"""

from __future__ import annotations

import os
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Base of every table."""


COUPON_SEED_BYTES = 32


def new_coupon_seed() -> bytes:
    """A fresh Ed25519 seed for an alliance's coupon root key."""
    return os.urandom(COUPON_SEED_BYTES)


class Alliance(Base):
    """Merchants who issue each other's coupons; they share one key for device pseudonyms."""

    __tablename__ = "alliances"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    device_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    # The Ed25519 seed of the root key that certifies its routers' coupon-issuing keys.
    coupon_key: Mapped[bytes] = mapped_column(LargeBinary(32), default=new_coupon_seed)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Merchant(Base):
    """A business that owns sites."""

    __tablename__ = "merchants"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    alliance_id: Mapped[int | None] = mapped_column(ForeignKey("alliances.id"))
    staff_pin: Mapped[str | None] = mapped_column(String(160))  # agent.coupons.pin's hash only
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Site(Base):
    """One shop; it has one or more routers."""

    __tablename__ = "sites"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    city: Mapped[str] = mapped_column(String(80), default="", server_default=text("''"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    __table_args__ = (UniqueConstraint("merchant_id", "name"),)


RETIRED = "retired"  # Router.state of a router taken out of the fleet for good


class Router(Base):
    """One enrolled OpenWrt router, and its latest reported status."""

    __tablename__ = "routers"
    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    enrolled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cert_fingerprint: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="unknown")
    # The router's own `at` of the status stored here; an older status is ignored.
    status_at: Mapped[float | None] = mapped_column(Float)
    # The router's time its MQTT connection of that status began; a will of an older one
    # is ignored.
    connected_at: Mapped[float | None] = mapped_column(Float)
    last_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    boot_id: Mapped[str | None] = mapped_column(String(64))
    agent_version: Mapped[str | None] = mapped_column(String(32))
    clients: Mapped[int] = mapped_column(Integer, default=0)
    config_version: Mapped[int] = mapped_column(Integer, default=0)
    spool_depth: Mapped[int] = mapped_column(Integer, default=0)
    spool_dropped: Mapped[int] = mapped_column(BigInteger, default=0)


class ClaimCode(Base):
    """A one-time code an installer types to enrol a router; only its hash is kept."""

    __tablename__ = "claim_codes"
    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    router_id: Mapped[str] = mapped_column(ForeignKey("routers.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Event(Base):
    """One event a router reported; (router_id, boot_id, seq) makes a redelivery a no-op."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    router_id: Mapped[str] = mapped_column(String(63))
    boot_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    device_id: Mapped[str] = mapped_column(String(32), default="", index=True)
    randomized: Mapped[bool] = mapped_column(Boolean, default=False)
    session_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    duration: Mapped[float] = mapped_column(Float, default=0.0)
    reason: Mapped[str] = mapped_column(String(64), default="")
    terms_version: Mapped[str] = mapped_column(String(32), default="")
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    # Coupon events: the coupon and campaign by id (the token text stays in coupons only).
    coupon_id: Mapped[str] = mapped_column(String(32), default="", server_default=text("''"))
    campaign_id: Mapped[int] = mapped_column(
        BigInteger, default=0, server_default=text("0"), index=True
    )
    replaces: Mapped[str] = mapped_column(String(32), default="", server_default=text("''"))
    to_device: Mapped[str] = mapped_column(String(32), default="", server_default=text("''"))
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    __table_args__ = (UniqueConstraint("router_id", "boot_id", "seq", name="uq_event_origin"),)


class DeadLetter(Base):
    """A message the ingest could not accept, kept with the reason."""

    __tablename__ = "dead_letters"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    topic: Mapped[str] = mapped_column(String(255))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    reason: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class RouterConfig(Base):
    """A versioned config pushed to a router, and whether the router acknowledged it."""

    __tablename__ = "router_configs"
    router_id: Mapped[str] = mapped_column(ForeignKey("routers.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    acked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ack_error: Mapped[str | None] = mapped_column(Text)


class Command(Base):
    """A command sent to a router and its acknowledgement."""

    __tablename__ = "commands"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    router_id: Mapped[str] = mapped_column(ForeignKey("routers.id"), index=True)
    action: Mapped[str] = mapped_column(String(32))
    device_id: Mapped[str] = mapped_column(String(32), default="")
    coupons: Mapped[str] = mapped_column(Text, default="", server_default=text("''"))  # ids, ","
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    acked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ok: Mapped[bool | None] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)


class Campaign(Base):
    """A merchant's offer: what its coupons give, when and where they are handed out.

    Its `issuers` are not stored: they follow from `reach` and the accepted partnerships.
    """

    __tablename__ = "campaigns"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id"), index=True)
    title_en: Mapped[str] = mapped_column(String(120))
    title_zh: Mapped[str] = mapped_column(String(120))
    terms_en: Mapped[str] = mapped_column(Text, default="")
    terms_zh: Mapped[str] = mapped_column(Text, default="")
    image: Mapped[str] = mapped_column(String(255), default="")
    starts_at: Mapped[int] = mapped_column(BigInteger)
    ends_at: Mapped[int] = mapped_column(BigInteger)
    budget: Mapped[int] = mapped_column(Integer)
    per_device: Mapped[int] = mapped_column(Integer, default=1)
    trigger: Mapped[str] = mapped_column(String(16), default="login")
    nth_visit: Mapped[int] = mapped_column(Integer, default=1)
    reach: Mapped[str] = mapped_column(String(16), default="own")
    coupon_days: Mapped[int] = mapped_column(Integer, default=0)
    slice_size: Mapped[int] = mapped_column(Integer, default=50)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


PROPOSED, ACCEPTED, DECLINED, ENDED = "proposed", "accepted", "declined", "ended"


class Partnership(Base):
    """A merchant asks a partner of its alliance to hand out its coupons at the partner's sites."""

    __tablename__ = "partnerships"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id"), index=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("merchants.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), default=PROPOSED)
    proposed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (UniqueConstraint("merchant_id", "partner_id", name="uq_partnership"),)


class CouponSlice(Base):
    """The coupons of a campaign one router may issue on its own, and how many it did."""

    __tablename__ = "coupon_slices"
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    router_id: Mapped[str] = mapped_column(ForeignKey("routers.id"), primary_key=True)
    allotted: Mapped[int] = mapped_column(Integer, default=0)
    issued: Mapped[int] = mapped_column(Integer, default=0)


class IssuerKey(Base):
    """A router's coupon-issuing key as the cloud certified it; a newer one replaces it."""

    __tablename__ = "issuer_keys"
    key_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    router_id: Mapped[str] = mapped_column(ForeignKey("routers.id"), index=True)
    public_key: Mapped[str] = mapped_column(String(64))  # hex
    certificate: Mapped[str] = mapped_column(Text)  # agent.coupons.token's base32 text
    not_after: Mapped[int] = mapped_column(BigInteger)
    certified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    replaced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


HELD, REDEEMED, MOVED = "held", "redeemed", "moved"


class CouponRow(Base):
    """The ledger: one row per coupon a router issued, by its coupon_id."""

    __tablename__ = "coupons"
    coupon_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    short_code: Mapped[str] = mapped_column(String(10), index=True)
    campaign_id: Mapped[int] = mapped_column(BigInteger, index=True)
    merchant_id: Mapped[int] = mapped_column(BigInteger)  # the merchant that honours it
    alliance_id: Mapped[int] = mapped_column(Integer, index=True)
    issuer_router_id: Mapped[str] = mapped_column(String(63))
    issuer_site_id: Mapped[int | None] = mapped_column(Integer)
    issuer_merchant_id: Mapped[int | None] = mapped_column(Integer)
    device_id: Mapped[str] = mapped_column(String(32), index=True)
    token: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[float] = mapped_column(Float)
    not_before: Mapped[int] = mapped_column(BigInteger)
    not_after: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), default=HELD)
    redeemed_at: Mapped[float | None] = mapped_column(Float)
    replaces: Mapped[str] = mapped_column(String(32), default="")


class Redemption(Base):
    """One redemption, as a router reported it (by its event) or the cloud made it.

    Two routers offline at once may redeem one coupon: both are kept, and every one but
    the earliest (by the router's `at`, then router_id) is a double spend.
    """

    __tablename__ = "redemptions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    coupon_id: Mapped[str] = mapped_column(String(32), index=True)
    campaign_id: Mapped[int] = mapped_column(BigInteger, index=True)
    merchant_id: Mapped[int | None] = mapped_column(Integer)  # the redeeming router's
    router_id: Mapped[str] = mapped_column(String(63))
    site_id: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[float] = mapped_column(Float)
    origin_router: Mapped[str | None] = mapped_column(String(63))  # the event, if a router's
    origin_boot: Mapped[str | None] = mapped_column(String(64))
    origin_seq: Mapped[int | None] = mapped_column(BigInteger)
    double_spend: Mapped[bool] = mapped_column(Boolean, default=False)
    __table_args__ = (
        UniqueConstraint("origin_router", "origin_boot", "origin_seq", name="uq_redemption_origin"),
    )


# --- visitor analytics and privacy (cloud.rollups, cloud.rollup_store, cloud.privacy) -------

Index(
    "ix_events_to_device",
    Event.to_device,
    postgresql_where=Event.to_device != "",
    sqlite_where=Event.to_device != "",
)


class SiteAnalytics(Base):
    """A site's analytics rules from `valid_from` (Unix s) on: time zone, passer-by threshold."""

    __tablename__ = "site_analytics"
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), primary_key=True)
    valid_from: Mapped[float] = mapped_column(Float, primary_key=True)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    passer_by_seconds: Mapped[float] = mapped_column(Float, default=300.0)


class SiteHour(Base):
    """The rollup: one site's counts for one local hour (cloud.rollups.COUNTS)."""

    __tablename__ = "site_hours"
    site_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True, index=True)
    hour: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    visitors: Mapped[int] = mapped_column(BigInteger, default=0)
    new_visitors: Mapped[int] = mapped_column(BigInteger, default=0)
    returning_visitors: Mapped[int] = mapped_column(BigInteger, default=0)
    stays: Mapped[int] = mapped_column(BigInteger, default=0)
    passers_by: Mapped[int] = mapped_column(BigInteger, default=0)
    dwell_under_5m: Mapped[int] = mapped_column(BigInteger, default=0)
    dwell_5_15m: Mapped[int] = mapped_column(BigInteger, default=0)
    dwell_15_30m: Mapped[int] = mapped_column(BigInteger, default=0)
    dwell_30_60m: Mapped[int] = mapped_column(BigInteger, default=0)
    dwell_over_60m: Mapped[int] = mapped_column(BigInteger, default=0)
    dwell_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    sessions: Mapped[int] = mapped_column(BigInteger, default=0)
    sessions_ended: Mapped[int] = mapped_column(BigInteger, default=0)
    session_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    session_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    terms_accepted: Mapped[int] = mapped_column(BigInteger, default=0)
    portal_views: Mapped[int] = mapped_column(BigInteger, default=0)


class SiteDay(Base):
    """A device present at a site on one local day: when first, and in which hours (bits 0-23)."""

    __tablename__ = "site_days"
    site_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True, index=True)
    device_id: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)
    first_seen: Mapped[float] = mapped_column(Float)
    hours: Mapped[int] = mapped_column(Integer, default=0)


class SiteDevice(Base):
    """A device's first and last local day at a site: new or returning, and its ingest lock."""

    __tablename__ = "site_devices"
    site_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)
    first_day: Mapped[date] = mapped_column(Date)
    last_day: Mapped[date] = mapped_column(Date, index=True)


class SiteTerms(Base):
    """A terms version accepted at a site: first and last acceptance (router time) and count."""

    __tablename__ = "site_terms"
    site_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    terms_version: Mapped[str] = mapped_column(String(32), primary_key=True)
    first_at: Mapped[float] = mapped_column(Float)
    last_at: Mapped[float] = mapped_column(Float)
    acceptances: Mapped[int] = mapped_column(BigInteger, default=0)


class Erasure(Base):
    """A device erased on request: its device_id hashed again, when, by whom, rows removed."""

    __tablename__ = "erasures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_hash: Mapped[str] = mapped_column(String(64), index=True)
    erased_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    erased_by: Mapped[str] = mapped_column(String(120))
    removed: Mapped[str] = mapped_column(Text)  # JSON: table -> rows deleted or anonymised
