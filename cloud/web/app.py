"""The JSON API's application: bearer-token authentication, one error shape, the database.

Every error is `{"error": {"field": ..., "message": ...}}` with 400 (bad input), 401 (no
or wrong token), 404 (no such thing) or 409 (conflicts with what is stored). Database work
runs on a thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy import Engine

from cloud.db import make_engine
from cloud.fleet_push import Publish, broker_publisher
from cloud.settings import CloudSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
ENGINE = web.AppKey("engine", Engine)
POOL = web.AppKey("pool", ThreadPoolExecutor)
PUBLISH = web.AppKey("publish", object)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An answer in the one error shape."""

    def __init__(self, status: int, field: str, message: str) -> None:
        self.status = status
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def error_response(status: int, field: str, message: str) -> web.Response:
    """The one error shape."""
    return web.json_response({"error": {"field": field, "message": message}}, status=status)


def _authenticated(token: str) -> Any:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not token:
            return error_response(
                401, "authorization", "the API is off: set api_token (LOOPSPOT_API_TOKEN)"
            )
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return error_response(401, "authorization", "send 'Authorization: Bearer <api_token>'")
        try:
            return await handler(request)
        except ApiError as error:
            return error_response(error.status, error.field, error.message)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            return error_response(error.status, "path", error.reason)

    return check


async def in_thread(request: web.Request, work: Callable[[Engine], T]) -> T:
    """Run `work(engine)` on the API's database threads."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(request.app[POOL], work, request.app[ENGINE])


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; ApiError 400 otherwise."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "body", "must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "body", "must be a JSON object")
    return body


def make_app(
    settings: CloudSettings, engine: Engine | None = None, publish: Publish | None = None
) -> web.Application:
    """The API app; `engine` and `publish` default to the settings' database and broker."""
    from cloud.web import coupons_api, dashboard

    # The dashboard's guard replaces _authenticated: the operator token still opens every
    # route, and it adds user tokens, sessions, roles and tenants.
    app = web.Application(middlewares=[dashboard.guard(settings)])
    own = engine is None
    app[ENGINE] = engine or make_engine(settings.database_url)
    app[POOL] = ThreadPoolExecutor(4, thread_name_prefix="api-db")
    app[PUBLISH] = publish or broker_publisher(settings)
    coupons_api.add_routes(app)
    dashboard.install(app, settings)

    async def close(app: web.Application) -> None:
        app[POOL].shutdown(wait=False)
        if own:
            app[ENGINE].dispose()

    app.on_cleanup.append(close)
    return app


def serve(settings: CloudSettings) -> None:
    """Serve the API and dashboard on web_host:web_port until interrupted (JSON log lines)."""
    from cloud.web.ops import json_logging

    json_logging()
    web.run_app(make_app(settings), host=settings.web_host, port=settings.web_port, print=None)
