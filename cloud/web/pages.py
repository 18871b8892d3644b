"""Server-rendered pages: log in and out, change password, the fleet, one router, retire, CSV."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy import Engine

from cloud import accounts
from cloud.account_models import CHANNEL_AGENT, MERCHANT_OWNER, MERCHANT_STAFF, OPERATOR, User
from cloud.db import sessions
from cloud.enrol_fleet import retire_router
from cloud.web import auth, tables
from cloud.web.app import ApiError, in_thread
from cloud.web.dashboard import LANG_COOKIE, SIGNER, render
from cloud.web.fleet_view import COLUMNS, FleetFilter, fleet_page, router_history
from cloud.web.i18n import LANGUAGES
from cloud.web.tenancy import Scope

FLEET_ROLES = (OPERATOR, CHANNEL_AGENT, MERCHANT_OWNER)
EVERYONE = (OPERATOR, CHANNEL_AGENT, MERCHANT_OWNER, MERCHANT_STAFF)


def _now() -> datetime:
    return datetime.now(UTC)


def _local_path(raw: str, fallback: str = "/") -> str:
    """`raw` if it is a path on this site (no open redirect), else `fallback`."""
    return raw if raw.startswith("/") and not raw.startswith("//") and "\\" not in raw else fallback


def home_of(role: str) -> str:
    """Where a role lands after logging in."""
    return "/counter" if role == MERCHANT_STAFF else "/fleet"


def _client_address(request: web.Request) -> str:
    return request.remote or "unknown"


@auth.public
async def login_page(request: web.Request) -> web.Response:
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", csrf=token, next=request.query.get("next", ""))
    auth.set_cookie(request, response, auth.LOGIN_CSRF_COOKIE, request.app[SIGNER].sign(token))
    return response


@auth.public
async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    cookie = request.app[SIGNER].unsign(request.cookies.get(auth.LOGIN_CSRF_COOKIE, "")) or ""
    if not await auth.form_csrf_ok(request, cookie):
        raise ApiError(403, "csrf", "the login form is stale: reload the page")
    email, password = str(form.get("email", "")), str(form.get("password", ""))
    address = _client_address(request)

    def work(engine: Engine) -> tuple[str, str] | str:
        with sessions(engine)() as session, session.begin():
            try:
                user = accounts.authenticate(session, email, password, address, _now())
            except accounts.LoginThrottled:
                return "throttled"
            except accounts.AccountError:
                return "wrong_login"
            return accounts.start_session(session, user, _now()).token, user.role

    outcome = await in_thread(request, work)
    if isinstance(outcome, str):
        status = 429 if outcome == "throttled" else 401
        return render(request, "login.html", status=status, problem=outcome, csrf="", next="")
    token, role = outcome
    response = web.HTTPFound(_local_path(str(form.get("next", "")), home_of(role)))
    auth.set_cookie(request, response, auth.SESSION_COOKIE, request.app[SIGNER].sign(token))
    response.del_cookie(auth.LOGIN_CSRF_COOKIE, path="/")
    raise response


@auth.allow(*EVERYONE)
async def logout(request: web.Request) -> web.StreamResponse:
    token = request[auth.SESSION_TOKEN]

    def work(engine: Engine) -> None:
        with sessions(engine)() as session, session.begin():
            accounts.end_session(session, token, _now())

    await in_thread(request, work)
    response = web.HTTPFound("/login")
    response.del_cookie(auth.SESSION_COOKIE, path="/")
    raise response


@auth.public
async def switch_language(request: web.Request) -> web.StreamResponse:
    chosen = request.match_info["lang"]
    if chosen not in LANGUAGES:
        raise web.HTTPNotFound()
    response = web.HTTPFound(_local_path(request.query.get("next", "/")))
    auth.set_cookie(request, response, LANG_COOKIE, chosen)
    raise response


@auth.allow(*EVERYONE)
async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(home_of(request[auth.SCOPE].role))


@auth.allow(*EVERYONE)
async def password_page(request: web.Request) -> web.Response:
    return render(request, "password.html")


@auth.allow(*EVERYONE)
async def change_password(request: web.Request) -> web.Response:
    form = await request.post()
    user_id: int = request[auth.USER].id
    old, new = str(form.get("old_password", "")), str(form.get("new_password", ""))

    def work(engine: Engine) -> str:
        with sessions(engine)() as session, session.begin():
            user = session.get(User, user_id)
            assert user is not None
            try:
                accounts.change_password(session, user, old, new, _now())
            except accounts.AccountError as error:
                return str(error)
            return ""

    problem = await in_thread(request, work)
    if problem:
        return render(request, "password.html", status=400, problem=problem)
    # Changing the password ended every session, this one too: log in again.
    return render(request, "password.html", done=True)


@auth.allow(MERCHANT_OWNER, MERCHANT_STAFF)
async def counter(request: web.Request) -> web.Response:
    return render(request, "counter.html")


def fleet_filter(request: web.Request) -> FleetFilter:
    """The table's filters from the query string."""
    q = request.query
    return FleetFilter(
        city=q.get("city", "")[:80],
        merchant=q.get("merchant", "")[:120],
        channel_agent=q.get("channel_agent", "")[:120],
    )


def _read_page(scope: Scope, where: FleetFilter, after: str, size: int) -> Any:
    def work(engine: Engine) -> Any:
        with sessions(engine)() as session:
            return fleet_page(session, scope, where, after, size)

    return work


@auth.allow(*FLEET_ROLES)
async def fleet(request: web.Request) -> web.Response:
    where, after = fleet_filter(request), request.query.get("after", "")[:63]
    rows, cursor = await in_thread(
        request, _read_page(request[auth.SCOPE], where, after, tables.page_size(request))
    )
    return render(request, "fleet.html", rows=rows, cursor=cursor, where=where, columns=COLUMNS)


@auth.allow(*FLEET_ROLES)
async def fleet_csv(request: web.Request) -> web.StreamResponse:
    scope, where = request[auth.SCOPE], fleet_filter(request)

    def read_page(after: str, size: int) -> Any:
        def work(engine: Engine) -> tuple[list[dict[str, Any]], str | None]:
            rows, cursor = _read_page(scope, where, after, size)(engine)
            return [row.as_dict() for row in rows], cursor

        return work

    return await tables.csv_download(request, "fleet.csv", COLUMNS, read_page)


def _history(scope: Scope, router_id: str) -> Any:
    def work(engine: Engine) -> Any:
        with sessions(engine)() as session:
            return router_history(session, scope, router_id)

    return work


@auth.allow(*FLEET_ROLES)
async def router_page(request: web.Request) -> web.Response:
    router_id = request.match_info["router_id"]
    found = await in_thread(request, _history(request[auth.SCOPE], router_id))
    if found is None:
        raise ApiError(404, "router_id", f"no router {router_id!r} of yours")
    return render(request, "router.html", found=found)


@auth.allow(OPERATOR)
async def retire(request: web.Request) -> web.StreamResponse:
    router_id, scope = request.match_info["router_id"], request[auth.SCOPE]

    def work(engine: Engine) -> bool:
        with sessions(engine)() as session, session.begin():
            if not scope.sees_router(session, router_id):
                return False
            retire_router(session, router_id)
            return True

    if not await in_thread(request, work):
        raise ApiError(404, "router_id", f"no router {router_id!r} of yours")
    raise web.HTTPFound(f"/fleet/{router_id}")


def add_routes(app: web.Application) -> None:
    """The pages' routes."""
    app.router.add_get("/", home)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/lang/{lang}", switch_language)
    app.router.add_get("/password", password_page)
    app.router.add_post("/password", change_password)
    app.router.add_get("/counter", counter)
    app.router.add_get("/fleet", fleet)
    app.router.add_get("/fleet.csv", fleet_csv)
    app.router.add_get("/fleet/{router_id}", router_page)
    app.router.add_post("/fleet/{router_id}/retire", retire)
