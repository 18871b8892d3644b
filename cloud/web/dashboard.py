"""The dashboard's wiring: the guard middleware (auth, roles, CSRF, one error shape) and
templates. `install` adds every dashboard route to the API app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from cloud.account_models import User
from cloud.settings import CloudSettings
from cloud.web import auth
from cloud.web.app import ENGINE, POOL, ApiError, error_response, in_thread
from cloud.web.i18n import LANGUAGES, translate
from cloud.web.tenancy import Scope

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SIGNER = web.AppKey("signer", auth.Signer)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
OBSERVE = web.AppKey("observe", object)
LANG_COOKIE = "ls_lang"
SECRET_WAIT = 10.0  # seconds startup waits for the shared cookie key
SECRET_RETRY = 5.0
log = logging.getLogger(__name__)
TEMPLATE_DIR = Path(__file__).parent / "templates"


def language(request: web.Request) -> str:
    """The language chosen by the switch, else the user's, else Chinese."""
    chosen = request.cookies.get(LANG_COOKIE, "")
    if chosen in LANGUAGES:
        return chosen
    user = request.get(auth.USER)
    return getattr(user, "language", "zh") if user is not None else "zh"


def render(request: web.Request, name: str, status: int = 200, **context: Any) -> web.Response:
    """A page from templates/, with the language, the user and the CSRF token filled in."""
    lang = language(request)
    filled: dict[str, Any] = {
        "lang": lang,
        "t": lambda key: translate(key, lang),
        "user": request.get(auth.USER),
        "csrf": request.get(auth.CSRF, ""),
        "path": request.path_qs,
    }
    page = request.app[TEMPLATES].get_template(name).render({**filled, **context})
    return web.Response(text=page, status=status, content_type="text/html")


def _page_error(request: web.Request, status: int, message: str) -> web.Response:
    return render(request, "error.html", status=status, status_code=status, message=message)


async def _guarded(request: web.Request, handler: Handler, settings: CloudSettings) -> Any:
    if request.match_info.http_exception is not None:
        raise request.match_info.http_exception
    roles = auth.roles_of(request.match_info.handler)
    if roles is None:
        return await handler(request)
    if request.path.startswith("/api/"):
        token = auth.bearer_token(request)
        scope = await in_thread(request, lambda e: auth.resolve_api(e, settings.api_token, token))
        if scope is None:
            raise ApiError(
                401,
                "authorization",
                "send 'Authorization: Bearer <token>': the operator's api_token"
                " (LOOPSPOT_API_TOKEN) or a user's API token",
            )
    else:
        session_token = auth.session_token(request, request.app[SIGNER])
        found: tuple[Scope, User, str] | None = None
        if session_token:
            found = await in_thread(request, lambda e: auth.resolve_session(e, session_token))
        if found is None:
            if request.method in auth.SAFE_METHODS:
                raise web.HTTPFound(f"/login?next={quote(request.path_qs)}")
            raise ApiError(403, "session", "log in first")
        scope, user, csrf = found
        request[auth.USER] = user
        request[auth.CSRF] = csrf
        request[auth.SESSION_TOKEN] = session_token or ""
        if request.method not in auth.SAFE_METHODS and not await auth.form_csrf_ok(request, csrf):
            raise ApiError(403, "csrf", "the form is stale: reload the page and send it again")
    if scope.role not in roles:
        raise ApiError(403, "role", f"a {scope.role} may not use this")
    request[auth.SCOPE] = scope
    return await handler(request)


def guard(settings: CloudSettings) -> Any:
    """The middleware every request passes: who is asking, may they, and errors in one shape."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        api = request.path.startswith("/api/")
        started = time.perf_counter()
        try:
            response: web.StreamResponse = await _guarded(request, handler, settings)
        except ApiError as error:
            response = (
                error_response(error.status, error.field, error.message)
                if api
                else _page_error(request, error.status, f"{error.field}: {error.message}")
            )
        except web.HTTPException as error:
            if error.status < 400:
                raise
            response = (
                error_response(error.status, "path", error.reason)
                if api
                else _page_error(request, error.status, error.reason)
            )
        observe = request.app.get(OBSERVE)
        if callable(observe):
            observe(request, response.status, time.perf_counter() - started)
        return response

    return check


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
    ),
}


async def _security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def install(app: web.Application, settings: CloudSettings) -> None:
    """Add the dashboard's pages, live stream, JSON routes and operations endpoints."""
    from cloud.web import (
        coupon_pages,
        dashboard_api,
        design_pages,
        live,
        manage_pages,
        openapi,
        ops,
        pages,
        users_pages,
        visitors_pages,
    )

    signer = auth.Signer(settings.web_secret.encode())
    app[SIGNER] = signer
    if not settings.web_secret:  # every process on this database signs with the same key

        async def load_secret(app: web.Application) -> None:
            # Until the database answers, this process signs with a key of its own.
            loop = asyncio.get_running_loop()
            while True:
                try:
                    key = await loop.run_in_executor(app[POOL], auth.shared_secret, app[ENGINE])
                except SQLAlchemyError as error:
                    log.warning("cookie key not loaded yet (%s); retrying", type(error).__name__)
                    await asyncio.sleep(SECRET_RETRY)
                    continue
                signer.load(key)
                return

        async def start(app: web.Application) -> AsyncIterator[None]:
            task = asyncio.get_running_loop().create_task(load_secret(app), name="cookie-key")
            await asyncio.wait({task}, timeout=SECRET_WAIT)  # usually loaded before serving
            yield
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        app.cleanup_ctx.append(start)
    app[TEMPLATES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR), autoescape=True
    )
    app.on_response_prepare.append(_security_headers)
    live.add_routes(app)  # before pages: /fleet/events must win over /fleet/{router_id}
    pages.add_routes(app)
    users_pages.add_routes(app)
    visitors_pages.add_routes(app)
    design_pages.add_routes(app)
    manage_pages.add_routes(app)
    coupon_pages.add_routes(app)
    dashboard_api.add_routes(app)
    openapi.add_routes(app)
    ops.add_routes(app)
