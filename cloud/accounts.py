"""Users, passwords (scrypt), browser sessions, API tokens and login rate limits.

Only hashes are stored: scrypt for passwords (memory-hard), SHA-256 for random tokens
(they carry 256 bits, so a fast hash is enough). Times are passed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from cloud.account_models import (
    CHANNEL_AGENT,
    MERCHANT_OWNER,
    MERCHANT_STAFF,
    OPERATOR,
    ROLES,
    AgentMerchant,
    ApiToken,
    ChannelAgent,
    LoginFailure,
    User,
    WebSession,
)
from cloud.enrol_fleet import merchant_named, utc
from cloud.errors import CloudError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # 16 MiB per hash
SESSION_LIFETIME = timedelta(hours=12)
FAILURE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_ACCOUNT = 5
MAX_FAILURES_PER_ADDRESS = 20
MIN_PASSWORD = 10


class AccountError(CloudError):
    """A refused account operation; the message names the field and the fix."""


class LoginThrottled(AccountError):
    """Too many wrong passwords lately for this account or address."""


def hash_password(password: str) -> str:
    """The scrypt hash of `password` with a fresh salt, as one self-describing string."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    """Whether `password` matches the stored scrypt hash."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        again = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=32,
            maxmem=2**26,
        )
    except ValueError:
        return False
    return hmac.compare_digest(again, base64.b64decode(digest))


def token_hash(token: str) -> str:
    """The SHA-256 under which a session or API token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def _check_password_rule(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password: use at least {MIN_PASSWORD} characters")


def channel_agent_named(session: Session, name: str, create: bool = False) -> ChannelAgent:
    """The channel agent called `name` (created if asked)."""
    found = session.scalar(select(ChannelAgent).where(ChannelAgent.name == name))
    if found is None and create:
        found = ChannelAgent(name=name)
        session.add(found)
        session.flush()
    if found is None:
        raise AccountError(f"channel_agent: no channel agent {name!r}; create it first")
    return found


def assign_merchant(session: Session, agent: ChannelAgent, merchant_id: int) -> None:
    """Record that `agent` brought in the merchant (replacing any earlier agent)."""
    row = session.get(AgentMerchant, merchant_id)
    if row is None:
        session.add(AgentMerchant(merchant_id=merchant_id, channel_agent_id=agent.id))
    else:
        row.channel_agent_id = agent.id
    session.flush()


def create_user(
    session: Session,
    email: str,
    role: str,
    password: str,
    merchant: str | None = None,
    channel_agent: str | None = None,
) -> User:
    """A new user; merchant roles need `merchant`, the channel agent role `channel_agent`."""
    email = email.strip().lower()
    if "@" not in email or len(email) > 254:
        raise AccountError(f"email: {email!r} is not an email address")
    if role not in ROLES:
        raise AccountError(f"role: {role!r} is not one of {', '.join(ROLES)}")
    _check_password_rule(password)
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise AccountError(f"email: {email!r} already has an account")
    user = User(email=email, role=role, password_hash=hash_password(password), language="zh")
    if role in (MERCHANT_OWNER, MERCHANT_STAFF):
        if merchant is None or channel_agent is not None:
            raise AccountError(f"merchant: role {role} needs --merchant (and no --channel-agent)")
        user.merchant_id = merchant_named(session, merchant).id
    elif role == CHANNEL_AGENT:
        if channel_agent is None or merchant is not None:
            raise AccountError("channel_agent: role channel_agent needs --channel-agent NAME")
        user.channel_agent_id = channel_agent_named(session, channel_agent, create=True).id
    elif merchant is not None or channel_agent is not None:
        raise AccountError(f"role: an {OPERATOR} belongs to no merchant or channel agent")
    session.add(user)
    session.flush()
    return user


def throttled(session: Session, account: str, address: str, now: datetime) -> bool:
    """Whether logins for this account or from this address are paused for now."""
    since = now - FAILURE_WINDOW
    per_account = session.scalar(
        select(func.count())
        .select_from(LoginFailure)
        .where(LoginFailure.account == account, LoginFailure.at > since)
    )
    per_address = session.scalar(
        select(func.count())
        .select_from(LoginFailure)
        .where(LoginFailure.address == address, LoginFailure.at > since)
    )
    return (per_account or 0) >= MAX_FAILURES_PER_ACCOUNT or (
        per_address or 0
    ) >= MAX_FAILURES_PER_ADDRESS


def authenticate(session: Session, email: str, password: str, address: str, now: datetime) -> User:
    """The user with these credentials; each failure counts towards the rate limits."""
    account = email.strip().lower()[:254]
    if throttled(session, account, address, now):
        raise LoginThrottled("password: too many wrong passwords; wait 15 minutes")
    user = session.scalar(select(User).where(User.email == account))
    stored = user.password_hash if user is not None else _DUMMY_HASH
    if not check_password(password, stored) or user is None or user.disabled:
        session.execute(delete(LoginFailure).where(LoginFailure.at < now - FAILURE_WINDOW))
        session.add(LoginFailure(account=account, address=address[:64], at=now))
        raise AccountError("password: wrong email or password")
    session.execute(delete(LoginFailure).where(LoginFailure.account == account))
    return user


_DUMMY_HASH = hash_password("not-a-real-password")  # equal work for unknown accounts


@dataclass(frozen=True, slots=True)
class NewSession:
    """A session just started: the cookie's token and the form's CSRF token."""

    token: str
    csrf: str


def start_session(session: Session, user: User, now: datetime) -> NewSession:
    """A new server-side session row for `user`."""
    made = NewSession(token=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32))
    session.execute(  # the user's ended and expired sessions are of no use any more
        delete(WebSession).where(
            WebSession.user_id == user.id,
            (WebSession.ended_at.is_not(None)) | (WebSession.expires_at < now),
        )
    )
    session.add(
        WebSession(
            token_hash=token_hash(made.token),
            user_id=user.id,
            csrf=made.csrf,
            created_at=now,
            expires_at=now + SESSION_LIFETIME,
        )
    )
    return made


def session_user(session: Session, token: str, now: datetime) -> tuple[User, WebSession] | None:
    """The user and session of a live session token, or None."""
    row = session.get(WebSession, token_hash(token))
    if row is None or row.ended_at is not None or utc(row.expires_at) <= now:
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    return user, row


def end_session(session: Session, token: str, now: datetime) -> None:
    """End a session: its cookie is worth nothing from now on."""
    row = session.get(WebSession, token_hash(token))
    if row is not None and row.ended_at is None:
        row.ended_at = now


def change_password(session: Session, user: User, old: str, new: str, now: datetime) -> None:
    """Replace the password after checking the old one; other sessions of the user end."""
    if not check_password(old, user.password_hash):
        raise AccountError("old_password: is not your current password")
    _check_password_rule(new)
    user.password_hash = hash_password(new)
    for row in session.scalars(
        select(WebSession).where(WebSession.user_id == user.id, WebSession.ended_at.is_(None))
    ):
        row.ended_at = now


def issue_api_token(session: Session, user: User, name: str, now: datetime) -> str:
    """A new API token for `user`; only its hash is stored, so show it once."""
    token = "lsk_" + secrets.token_urlsafe(32)
    session.add(ApiToken(token_hash=token_hash(token), user_id=user.id, name=name, created_at=now))
    return token


def api_token_user(session: Session, token: str) -> User | None:
    """The user of a live API token, or None."""
    row = session.get(ApiToken, token_hash(token))
    if row is None or row.revoked_at is not None:
        return None
    user = session.get(User, row.user_id)
    return None if user is None or user.disabled else user
