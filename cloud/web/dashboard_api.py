"""JSON under /api/v1 for what the dashboard pages show: who am I, routers, merchants, users."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import Engine, select

from cloud.account_models import MERCHANT_OWNER, OPERATOR, User
from cloud.db import sessions
from cloud.web import auth
from cloud.web.app import ApiError, in_thread
from cloud.web.fleet_view import fleet_page, router_history
from cloud.web.pages import EVERYONE, FLEET_ROLES, fleet_filter
from cloud.web.tables import page_size
from cloud.web.tenancy import merchants_query

PREFIX = "/api/v1"


@auth.allow(*EVERYONE)
async def me(request: web.Request) -> web.Response:
    scope = request[auth.SCOPE]
    merchants = None if scope.merchant_ids is None else sorted(scope.merchant_ids)
    return web.json_response({"role": scope.role, "user_id": scope.user_id, "merchants": merchants})


@auth.allow(*FLEET_ROLES)
async def routers(request: web.Request) -> web.Response:
    scope, where = request[auth.SCOPE], fleet_filter(request)
    after, size = request.query.get("after", "")[:63], page_size(request)

    def work(engine: Engine) -> Any:
        with sessions(engine)() as session:
            return fleet_page(session, scope, where, after, size)

    rows, cursor = await in_thread(request, work)
    return web.json_response({"routers": [r.as_dict() for r in rows], "next": cursor})


@auth.allow(*FLEET_ROLES)
async def router(request: web.Request) -> web.Response:
    scope, router_id = request[auth.SCOPE], request.match_info["router_id"]

    def work(engine: Engine) -> Any:
        with sessions(engine)() as session:
            return router_history(session, scope, router_id)

    found = await in_thread(request, work)
    if found is None:
        raise ApiError(404, "router_id", f"no router {router_id!r} of yours")
    return web.json_response(found)


@auth.allow(*FLEET_ROLES)
async def merchants(request: web.Request) -> web.Response:
    scope = request[auth.SCOPE]

    def work(engine: Engine) -> Any:
        with sessions(engine)() as session:
            return [{"id": m.id, "name": m.name} for m in session.scalars(merchants_query(scope))]

    return web.json_response({"merchants": await in_thread(request, work)})


@auth.allow(OPERATOR, MERCHANT_OWNER)
async def users(request: web.Request) -> web.Response:
    scope = request[auth.SCOPE]

    def work(engine: Engine) -> Any:
        with sessions(engine)() as session:
            found = session.scalars(scope.limit(select(User).order_by(User.email), User))
            return [
                {"id": u.id, "email": u.email, "role": u.role, "merchant_id": u.merchant_id}
                for u in found
            ]

    return web.json_response({"users": await in_thread(request, work)})


def add_routes(app: web.Application) -> None:
    """The dashboard's JSON routes."""
    app.router.add_get(f"{PREFIX}/me", me)
    app.router.add_get(f"{PREFIX}/routers", routers)
    app.router.add_get(f"{PREFIX}/routers/{{router_id}}", router)
    app.router.add_get(f"{PREFIX}/merchants", merchants)
    app.router.add_get(f"{PREFIX}/users", users)
