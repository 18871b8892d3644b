"""Coupon routes of the JSON API: campaigns, partnerships, numbers, redemptions."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

from aiohttp import web
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cloud import coupon_admin as admin
from cloud.coupon_plans import push_alliance
from cloud.coupon_redeem import RedeemError, RedeemRefused, announce, redeem
from cloud.db import sessions
from cloud.fleet_push import Publish
from cloud.models import Partnership
from cloud.web.app import PUBLISH, ApiError, in_thread, json_body

log = logging.getLogger(__name__)
PREFIX = "/api/v1"


def _in_session(
    work: Callable[[Session], Any], push: Publish | None = None
) -> Callable[[Engine], Any]:
    """`work` in one transaction; AdminError becomes the API's error. With `push`, the
    routers of the alliance of the merchant the changed campaign or partnership names get
    their new plans once it is committed."""

    def run(engine: Engine) -> Any:
        try:
            with sessions(engine)() as session, session.begin():
                result = work(session)
                alliance = _alliance_of(session, result) if push is not None else None
        except admin.AdminError as error:
            raise ApiError(error.status, error.field, error.message) from None
        if push is not None and alliance is not None:
            push_alliance(engine, push, alliance, datetime.now(UTC))
        return result

    return run


def _alliance_of(session: Session, view: dict[str, Any]) -> int | None:
    """The alliance of the merchant a campaign or partnership view names."""
    merchant = view.get("merchant_id") or view.get("merchant")
    found = admin.find_merchant(session, merchant) if merchant is not None else None
    return None if found is None else found.alliance_id


def _pusher(request: web.Request) -> Publish:
    return cast(Publish, request.app[PUBLISH])


def _number(request: web.Request, name: str) -> int:
    text = request.match_info[name]
    if not text.isdigit():
        raise ApiError(404, name, f"{text!r} is not a number")
    return int(text)


async def list_campaigns(request: web.Request) -> web.Response:
    merchant = request.query.get("merchant")
    found = await in_thread(request, _in_session(lambda s: admin.list_campaigns(s, merchant)))
    return web.json_response({"campaigns": found})


async def create_campaign(request: web.Request) -> web.Response:
    body = await json_body(request)
    merchant = body.pop("merchant", None)
    if merchant is None:
        raise ApiError(400, "merchant", "is required: the merchant (name or id) that honours it")

    def work(session: Session) -> Any:
        return admin.campaign_view(session, admin.create_campaign(session, merchant, body))

    made = await in_thread(request, _in_session(work, _pusher(request)))
    return web.json_response(made, status=201)


async def show_campaign(request: web.Request) -> web.Response:
    number = _number(request, "id")

    def work(session: Session) -> Any:
        return admin.campaign_view(session, admin.get_campaign(session, number))

    return web.json_response(await in_thread(request, _in_session(work)))


async def update_campaign(request: web.Request) -> web.Response:
    number, body = _number(request, "id"), await json_body(request)

    def work(session: Session) -> Any:
        return admin.campaign_view(session, admin.update_campaign(session, number, body))

    return web.json_response(await in_thread(request, _in_session(work, _pusher(request))))


async def campaign_stats(request: web.Request) -> web.Response:
    from cloud.coupon_stats import funnel

    number = _number(request, "id")
    found = await in_thread(request, _in_session(lambda s: funnel(s.connection(), number)))
    return web.json_response(found)


async def flows(request: web.Request) -> web.Response:
    from cloud.cli_coupons import alliance_id
    from cloud.coupon_stats import flows as alliance_flows

    name = request.query.get("alliance", "")
    if not name:
        raise ApiError(400, "alliance", "is required: ?alliance=NAME_OR_ID")

    def work(session: Session) -> Any:
        return alliance_flows(session.connection(), alliance_id(session, name))

    return web.json_response({"flows": await in_thread(request, _in_session(work))})


async def replay(request: web.Request) -> web.Response:
    from cloud.coupon_stats import replay_router

    router_id = request.query.get("router", "")
    if not router_id:
        raise ApiError(400, "router", "is required: ?router=ROUTER_ID")

    def work(session: Session) -> Any:
        return [
            {
                "device_id": m.device_id,
                "campaign_id": m.campaign_id,
                "day": m.day,
                "expected": m.expected,
                "issued": m.issued,
            }
            for m in replay_router(session.connection(), router_id)
        ]

    found = await in_thread(request, _in_session(work))
    return web.json_response({"router_id": router_id, "mismatches": found})


async def list_partnerships(request: web.Request) -> web.Response:
    merchant = request.query.get("merchant")
    found = await in_thread(request, _in_session(lambda s: admin.list_partnerships(s, merchant)))
    return web.json_response({"partnerships": found})


async def propose(request: web.Request) -> web.Response:
    body = await json_body(request)
    for name in ("merchant", "partner"):
        if not isinstance(body.get(name), str | int):
            raise ApiError(400, name, "is required (a merchant's name or id)")

    def work(session: Session) -> Any:
        made = admin.propose(session, body["merchant"], body["partner"], datetime.now(UTC))
        return admin.partnership_view(session, made)

    return web.json_response(await in_thread(request, _in_session(work)), status=201)


async def answer(request: web.Request) -> web.Response:
    number, action = _number(request, "id"), request.match_info["action"]

    def work(session: Session) -> Any:
        row = session.get(Partnership, number)
        if row is None:
            raise admin.AdminError("partnership", f"no partnership {number}", admin.MISSING)
        return admin.partnership_view(
            session, admin.answer(session, row, action, datetime.now(UTC))
        )

    return web.json_response(await in_thread(request, _in_session(work, _pusher(request))))


async def redemption(request: web.Request) -> web.Response:
    body = await json_body(request)
    code, router_id = body.get("code"), body.get("router_id")
    if not isinstance(code, str) or not code.strip():
        raise ApiError(400, "code", "is required: the short code or the whole token")
    if not isinstance(router_id, str):
        raise ApiError(400, "router_id", "is required: the router of the counter")
    publish = _pusher(request)

    def work(engine: Engine) -> dict[str, Any]:
        try:
            done = redeem(engine, code, router_id, time.time())
        except RedeemRefused as refused:
            raise ApiError(409, "code", str(refused)) from None
        except RedeemError as error:
            raise ApiError(404, "router_id", str(error).split(": ", 1)[-1]) from None
        try:
            told = announce(engine, publish, done)
        except Exception as error:  # redeemed all the same; routers sync at the next spent
            log.warning("spent coupon %s not announced: %s", done.coupon.coupon_id, error)
            told = []
        return {
            "redeemed": done.coupon.coupon_id,
            "campaign_id": done.coupon.campaign_id,
            "router_id": router_id,
            "told": told,
        }

    return web.json_response(await in_thread(request, work))


def add_routes(app: web.Application) -> None:
    """The coupon routes under /api/v1/."""
    app.router.add_get(f"{PREFIX}/campaigns", list_campaigns)
    app.router.add_post(f"{PREFIX}/campaigns", create_campaign)
    app.router.add_get(f"{PREFIX}/campaigns/{{id}}", show_campaign)
    app.router.add_patch(f"{PREFIX}/campaigns/{{id}}", update_campaign)
    app.router.add_get(f"{PREFIX}/campaigns/{{id}}/stats", campaign_stats)
    app.router.add_get(f"{PREFIX}/stats/campaigns/{{id}}", campaign_stats)
    app.router.add_get(f"{PREFIX}/stats/flows", flows)
    app.router.add_get(f"{PREFIX}/stats/replay", replay)
    app.router.add_get(f"{PREFIX}/partnerships", list_partnerships)
    app.router.add_post(f"{PREFIX}/partnerships", propose)
    app.router.add_post(f"{PREFIX}/partnerships/{{id}}/{{action}}", answer)
    app.router.add_post(f"{PREFIX}/redemptions", redemption)
