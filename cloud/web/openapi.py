"""The OpenAPI 3 document of every /api/v1 route, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cloud.web import auth

PREFIX = "/api/v1"
_OBJECT: dict[str, Any] = {"type": "object"}
_ERROR_CODES = ("400", "401", "403", "404", "409")


def _query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", **schema},
    }


def _path(name: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", **schema}}


def _operation(summary: str, ok: str = "200", **extra: Any) -> dict[str, Any]:
    responses: dict[str, Any] = {ok: {"description": "done", "content": _json(_OBJECT)}}
    for code in _ERROR_CODES:
        responses[code] = {"$ref": "#/components/responses/Error"}
    return {"summary": summary, "responses": responses, **extra}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": _json(schema)}


_FLEET_FILTERS = [
    _query("city", "only routers of sites in this city"),
    _query("merchant", "only this merchant's routers (by name)"),
    _query("channel_agent", "only routers of this channel agent's merchants (by name)"),
    _query("after", "the `next` cursor of the previous page"),
    _query("limit", "rows per page, 1-500", pattern="^[0-9]{1,3}$"),
]
_ID = _path("id", pattern="^[0-9]{1,9}$")

PATHS: dict[str, dict[str, Any]] = {
    "/me": {"get": _operation("the caller's role and merchants")},
    "/routers": {"get": _operation("the fleet, one page", parameters=_FLEET_FILTERS)},
    "/routers/{router_id}": {
        "get": _operation(
            "one router with its events, configs and commands",
            parameters=[_path("router_id", maxLength=63)],
        )
    },
    "/merchants": {"get": _operation("the merchants the caller may see")},
    "/users": {"get": _operation("the users the caller may see")},
    "/campaigns": {
        "get": _operation("coupon campaigns", parameters=[_query("merchant", "name or id")]),
        "post": _operation(
            "add a campaign",
            ok="201",
            requestBody=_body({"type": "object", "required": ["merchant"]}),
        ),
    },
    "/campaigns/{id}": {
        "get": _operation("one campaign", parameters=[_ID]),
        "patch": _operation("change a campaign", parameters=[_ID], requestBody=_body(_OBJECT)),
    },
    "/campaigns/{id}/stats": {"get": _operation("a campaign's funnel", parameters=[_ID])},
    # On h/cloud-coupons after this branch began: documented here so the merge is whole.
    "/stats/campaigns/{id}": {"get": _operation("a campaign's funnel", parameters=[_ID])},
    "/stats/replay": {
        "get": _operation(
            "replay a router's logins through the coupon rules; the mismatches",
            parameters=[_query("router", "the router's id")],
        )
    },
    "/stats/flows": {
        "get": _operation(
            "customers each merchant sent to each other merchant",
            parameters=[_query("alliance", "name or id")],
        )
    },
    "/partnerships": {
        "get": _operation("partnerships", parameters=[_query("merchant", "name or id")]),
        "post": _operation(
            "propose a partnership",
            ok="201",
            requestBody=_body({"type": "object", "required": ["merchant", "partner"]}),
        ),
    },
    "/partnerships/{id}/{action}": {
        "post": _operation(
            "answer or end a partnership",
            parameters=[_ID, _path("action", enum=["accept", "decline", "end"])],
        )
    },
    "/redemptions": {
        "post": _operation(
            "redeem a coupon exactly once",
            requestBody=_body({"type": "object", "required": ["code", "router_id"]}),
        )
    },
    "/openapi.json": {
        "get": {
            "summary": "this document",
            "security": [],
            "responses": {"200": {"description": "the document", "content": _json(_OBJECT)}},
        }
    },
}


def document() -> dict[str, Any]:
    """The OpenAPI 3.0 document."""
    error = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "Loopspot cloud API", "version": "1"},
        "servers": [{"url": PREFIX}],
        "security": [{"bearer": []}],
        "paths": PATHS,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": error},
            "responses": {"Error": {"description": "the one error shape", "content": _json(error)}},
        },
    }


@auth.public
async def openapi_json(_request: web.Request) -> web.Response:
    return web.json_response(document())


def add_routes(app: web.Application) -> None:
    """Serve the document."""
    app.router.add_get(f"{PREFIX}/openapi.json", openapi_json)
