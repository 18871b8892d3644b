"""Who is asking: sessions for pages, tokens for /api/v1, roles per route, CSRF on forms.

A route says who may use it with `@allow(...)` (or `@public`); a route that says nothing is
for operators only, so a new route is closed until someone opens it. Every request that
passes gets `request[SCOPE]`, the caller's tenant (cloud.web.tenancy).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from cloud import accounts
from cloud.account_models import OPERATOR, DashboardSecret, User
from cloud.db import sessions
from cloud.web.tenancy import OPERATOR_SCOPE, Scope, scope_of

SESSION_COOKIE = "ls_session"
LOGIN_CSRF_COOKIE = "ls_login_csrf"
SCOPE = web.RequestKey("scope", Scope)
USER = web.RequestKey("user", User)
CSRF = web.RequestKey("csrf", str)
SESSION_TOKEN = web.RequestKey("session_token", str)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ALLOW = "__loopspot_roles__"
_PUBLIC = "__loopspot_public__"
F = TypeVar("F", bound=Callable[..., Any])


def allow(*roles: str) -> Callable[[F], F]:
    """Mark a handler as open to these roles (each still sees only its own tenant)."""

    def mark(handler: F) -> F:
        setattr(handler, _ALLOW, frozenset(roles))
        return handler

    return mark


def public(handler: F) -> F:
    """Mark a handler as needing no login (login page, health, metrics, static files)."""
    setattr(handler, _PUBLIC, True)
    return handler


def roles_of(handler: Any) -> frozenset[str] | None:
    """The roles a handler is open to; None when it is public."""
    if getattr(handler, _PUBLIC, False):
        return None
    return getattr(handler, _ALLOW, frozenset({OPERATOR}))


COOKIE_KEY = "cookie_key"


def shared_secret(engine: Engine, name: str = COOKIE_KEY) -> bytes:
    """The secret every serve process on this database shares, made by the first to ask."""
    make = sessions(engine)
    with make() as session:
        found = session.get(DashboardSecret, name)
        if found is not None:
            return found.value.encode()
    try:
        with make() as session, session.begin():
            session.add(DashboardSecret(name=name, value=secrets.token_hex(32)))
    except IntegrityError:
        pass  # another process made it first: use theirs
    with make() as session:
        made = session.get(DashboardSecret, name)
        assert made is not None
        return made.value.encode()


class Signer:
    """HMAC-signs cookie values, so a forged or altered cookie is refused before any lookup.

    Its secret is set at startup (`load`); until then it signs nothing valid.
    """

    def __init__(self, secret: bytes = b"") -> None:
        self._secret = secret or secrets.token_bytes(32)

    def load(self, secret: bytes) -> None:
        """Sign with `secret` from now on."""
        self._secret = secret

    def sign(self, value: str) -> str:
        """`value` with its signature."""
        mac = hmac.new(self._secret, value.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{value}.{mac}"

    def unsign(self, signed: str) -> str | None:
        """The value of a correctly signed cookie, else None."""
        value = signed.rpartition(".")[0]
        if value and hmac.compare_digest(self.sign(value), signed):
            return value
        return None


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str) -> None:
    """An HttpOnly, SameSite=Lax cookie, Secure when the request came over TLS."""
    response.set_cookie(name, value, httponly=True, samesite="Lax", secure=request.secure, path="/")


def _now() -> datetime:
    return datetime.now(UTC)


def bearer_token(request: web.Request) -> str:
    given = request.headers.get("Authorization", "")
    return given[7:].strip() if given.startswith("Bearer ") else ""


def resolve_api(engine: Engine, operator_token: str, token: str) -> Scope | None:
    """The Scope of an API token: the operator's bearer token or a user's token."""
    if not token:
        return None
    if operator_token and hmac.compare_digest(token.encode(), operator_token.encode()):
        return OPERATOR_SCOPE
    if not token.startswith("lsk_"):
        return None
    with sessions(engine)() as session:
        user = accounts.api_token_user(session, token)
        return None if user is None else scope_of(session, user)


def resolve_session(engine: Engine, token: str) -> tuple[Scope, User, str] | None:
    """The Scope, user and CSRF token of a live browser session."""
    with sessions(engine)() as session:
        found = accounts.session_user(session, token, _now())
        if found is None:
            return None
        user, row = found
        session.expunge(user)
        return scope_of(session, user), user, row.csrf


def session_token(request: web.Request, signer: Signer) -> str | None:
    """The session token of the request's cookie, if its signature holds."""
    cookie = request.cookies.get(SESSION_COOKIE, "")
    return signer.unsign(cookie) if cookie else None


async def form_csrf_ok(request: web.Request, expected: str) -> bool:
    """Whether the posted form's `csrf` field is `expected`."""
    form = await request.post()
    given = form.get("csrf", "")
    return isinstance(given, str) and bool(expected) and hmac.compare_digest(given, expected)
