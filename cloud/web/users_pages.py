"""The users page: operators see and add anyone; a merchant owner sees their merchant's
users and adds staff to it, and nothing else."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import Engine, select

from cloud import accounts
from cloud.account_models import MERCHANT_OWNER, MERCHANT_STAFF, OPERATOR, ROLES, User
from cloud.db import sessions
from cloud.errors import CloudError
from cloud.models import Merchant
from cloud.web import auth
from cloud.web.app import ApiError, in_thread
from cloud.web.dashboard import render
from cloud.web.tenancy import Scope


def _listing(scope: Scope) -> Any:
    def work(engine: Engine) -> list[dict[str, Any]]:
        with sessions(engine)() as session:
            found = session.execute(
                scope.limit(
                    select(User, Merchant.name)
                    .outerjoin(Merchant, Merchant.id == User.merchant_id)
                    .order_by(User.email),
                    User,
                )
            )
            return [{"email": u.email, "role": u.role, "merchant": name or ""} for u, name in found]

    return work


async def _page(request: web.Request, status: int = 200, **context: Any) -> web.Response:
    scope = request[auth.SCOPE]
    listing = await in_thread(request, _listing(scope))
    roles = ROLES if scope.whole_fleet else (MERCHANT_STAFF,)
    return render(request, "users.html", status=status, users=listing, roles=roles, **context)


@auth.allow(OPERATOR, MERCHANT_OWNER)
async def users_page(request: web.Request) -> web.Response:
    return await _page(request)


@auth.allow(OPERATOR, MERCHANT_OWNER)
async def add_user(request: web.Request) -> web.Response:
    scope = request[auth.SCOPE]
    form = {key: str(value) for key, value in (await request.post()).items()}
    role = form.get("role", "")
    if not scope.whole_fleet and role != MERCHANT_STAFF:
        raise ApiError(403, "role", "a merchant owner adds merchant_staff only")

    def work(engine: Engine) -> str:
        with sessions(engine)() as session, session.begin():
            merchant = form.get("merchant") or None
            if not scope.whole_fleet:  # the owner's own merchant, whatever the form says
                own = sorted(scope.merchant_ids or ())
                found = session.get(Merchant, own[0]) if own else None
                if found is None:
                    return "merchant: your account belongs to no merchant"
                merchant = found.name
            try:
                accounts.create_user(
                    session,
                    form.get("email", ""),
                    role,
                    form.get("password", ""),
                    merchant,
                    form.get("channel_agent") or None,
                )
            except CloudError as error:
                session.rollback()
                return str(error)
            return ""

    problem = await in_thread(request, work)
    if problem:
        return await _page(request, status=400, problem=problem)
    return await _page(request, added=form.get("email", ""))


def add_routes(app: web.Application) -> None:
    """The users page's routes."""
    app.router.add_get("/users", users_page)
    app.router.add_post("/users", add_user)
