"""The cloud's tables, defined once (SQLAlchemy 2, typed). Alembic migrations follow this.

No raw MAC address is ever stored: devices are known by their `device_id` pseudonym.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Base of every table."""


class Alliance(Base):
    """Merchants who issue each other's coupons; they share one key for device pseudonyms."""

    __tablename__ = "alliances"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    device_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Merchant(Base):
    """A business that owns sites."""

    __tablename__ = "merchants"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    alliance_id: Mapped[int | None] = mapped_column(ForeignKey("alliances.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Site(Base):
    """One shop; it has one or more routers."""

    __tablename__ = "sites"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id"), index=True)
    name: Mapped[str] = mapped_column(String(120))
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
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    acked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ok: Mapped[bool | None] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)
