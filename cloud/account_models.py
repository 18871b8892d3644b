"""The dashboard's tables: channel agents, users, their sessions, API tokens, login failures.

Passwords, session tokens and API tokens are stored only as hashes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String, func
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models import Base

OPERATOR = "operator"
CHANNEL_AGENT = "channel_agent"
MERCHANT_OWNER = "merchant_owner"
MERCHANT_STAFF = "merchant_staff"
ROLES = (OPERATOR, CHANNEL_AGENT, MERCHANT_OWNER, MERCHANT_STAFF)


class ChannelAgent(Base):
    """A reseller who brings merchants in and sees only theirs."""

    __tablename__ = "channel_agents"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AgentMerchant(Base):
    """Which channel agent brought a merchant in (at most one per merchant)."""

    __tablename__ = "agent_merchants"
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id"), primary_key=True)
    channel_agent_id: Mapped[int] = mapped_column(ForeignKey("channel_agents.id"), index=True)


class User(Base):
    """A person who logs in to the dashboard; merchant users belong to one merchant."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    merchant_id: Mapped[int | None] = mapped_column(ForeignKey("merchants.id"), index=True)
    channel_agent_id: Mapped[int | None] = mapped_column(ForeignKey("channel_agents.id"))
    language: Mapped[str] = mapped_column(String(5), default="zh")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WebSession(Base):
    """A logged-in browser; the cookie carries the token, the row only its SHA-256."""

    __tablename__ = "web_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApiToken(Base):
    """A user's token for scripts; only its SHA-256 is kept."""

    __tablename__ = "api_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(80), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DashboardSecret(Base):
    """A secret every serve process shares through the database (the cookie-signing key)."""

    __tablename__ = "dashboard_secrets"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))


class LoginFailure(Base):
    """One wrong password, counted per account and per client address for rate limiting."""

    __tablename__ = "login_failures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(String(254), index=True)
    address: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
