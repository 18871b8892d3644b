"""`loopspot-cloud` commands for coupons: campaigns, partners, plans, the staff PIN, numbers."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from cloud.db import make_engine, sessions
from cloud.settings import CloudSettings

Add = Callable[..., argparse.ArgumentParser]
Handler = Callable[[CloudSettings, Any], dict[str, Any]]


def _campaign_flags(parser: argparse.ArgumentParser) -> None:
    from cloud.coupon_admin import FIELDS

    for name in FIELDS:
        spellings = dict.fromkeys(["--" + name.replace("_", "-"), "--" + name])  # both work
        parser.add_argument(*spellings, dest=name, default=argparse.SUPPRESS, metavar="VALUE")


def _push_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--push", action="store_true", help="then push the alliance's routers their plans"
    )


def add_parsers(add: Add, commands: Any) -> None:
    """Add the coupon commands to the `loopspot-cloud` parser."""
    campaign = add("campaign", "coupon campaigns").add_subparsers(dest="action", required=True)
    create = add("create", "add a campaign (times: 2027-01-31 or Unix seconds)", campaign)
    create.add_argument("--merchant", required=True, help="the merchant that honours it")
    _campaign_flags(create)
    _push_flag(create)
    listing = add("list", "list campaigns", campaign)
    listing.add_argument("--merchant")
    for name, what in (("show", "show one campaign"), ("stats", "a campaign's funnel")):
        add(name, what, campaign).add_argument("campaign_id", type=int)
    update = add("update", "change a campaign (checked whole before it is stored)", campaign)
    update.add_argument("campaign_id", type=int)
    _campaign_flags(update)
    _push_flag(update)
    partner = add("partner", "partnerships").add_subparsers(dest="action", required=True)
    for name, what in (
        ("propose", "MERCHANT asks PARTNER to hand out its coupons"),
        ("accept", "PARTNER accepts MERCHANT's proposal"),
        ("decline", "PARTNER declines MERCHANT's proposal"),
        ("end", "end the partnership (either side)"),
    ):
        sub = add(name, what, partner)
        sub.add_argument("--merchant", required=True, help="the campaign owner")
        sub.add_argument("--partner", required=True)
        _push_flag(sub)
    add("list", "list partnerships", partner).add_argument("--merchant")
    add("alliances", "list alliances and their merchants")
    flows = add("flows", "redeeming customers each merchant sent to each other merchant")
    flows.add_argument("--alliance", required=True, help="name or id")
    coupons = add("coupons", "coupon plans").add_subparsers(dest="action", required=True)
    push = add("push", "push every router (or one) its coupon plan", coupons)
    push.add_argument("--router")
    check = add("check", "replay a router's logins through the rules; list mismatches", coupons)
    check.add_argument("--router", required=True)
    pin = add("staff-pin", "the staff page's PIN").add_subparsers(dest="action", required=True)
    set_pin = add("set", "set a merchant's staff PIN (4-8 digits)", pin)
    set_pin.add_argument("--merchant", required=True)
    set_pin.add_argument("pin")
    coupon = add("coupon", "single coupons").add_subparsers(dest="action", required=True)
    redeem = add("redeem", "redeem a coupon through the cloud (exactly once)", coupon)
    redeem.add_argument("code", help="the short code or the whole token")
    redeem.add_argument("--router", required=True, help="the router of the counter")
    add("serve", "serve the JSON API on web_host:web_port")


@contextmanager
def _engine(settings: CloudSettings) -> Iterator[Engine]:
    engine = make_engine(settings.database_url)
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def _session(settings: CloudSettings) -> Iterator[Session]:
    with _engine(settings) as engine, sessions(engine)() as session, session.begin():
        yield session


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    from cloud.coupon_admin import FIELDS

    return {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}


def _pushed(
    settings: CloudSettings, args: argparse.Namespace, view: dict[str, Any]
) -> dict[str, Any]:
    """`view`, and with --push the plans pushed to the alliance of the merchant it names."""
    if not getattr(args, "push", False):
        return view
    shown = next(iter(view.values()))  # {"campaign": ...} or {"partnership": ...}
    from cloud.coupon_admin import find_merchant
    from cloud.coupon_plans import push_alliance
    from cloud.fleet_push import broker_publisher

    with _session(settings) as session:
        merchant = find_merchant(session, shown.get("merchant_id") or shown["merchant"])
        alliance = None if merchant is None else merchant.alliance_id
    if alliance is None:
        return view
    with _engine(settings) as engine:
        pushed = push_alliance(engine, broker_publisher(settings), alliance, datetime.now(UTC))
    return {**view, "pushed": pushed}


def _campaign_create(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    from cloud.coupon_admin import campaign_view, create_campaign

    with _session(settings) as session:
        view = campaign_view(session, create_campaign(session, args.merchant, _fields(args)))
    return _pushed(settings, args, {"campaign": view})


def _campaign_update(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    from cloud.coupon_admin import campaign_view, update_campaign

    with _session(settings) as session:
        view = campaign_view(session, update_campaign(session, args.campaign_id, _fields(args)))
    return _pushed(settings, args, {"campaign": view})


def _campaign_show(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    from cloud.coupon_admin import campaign_view, get_campaign

    with _session(settings) as session:
        return {"campaign": campaign_view(session, get_campaign(session, args.campaign_id))}


def _campaign_list(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    from cloud.coupon_admin import list_campaigns

    with _session(settings) as session:
        return {"campaigns": list_campaigns(session, args.merchant)}


def _campaign_stats(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    from cloud.coupon_stats import funnel

    with _engine(settings) as engine, engine.connect() as connection:
        return funnel(connection, args.campaign_id)


def _partner(action: str) -> Handler:
    def run(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
        from cloud.coupon_admin import answer, get_partnership, partnership_view, propose

        now = datetime.now(UTC)
        with _session(settings) as session:
            if action == "propose":
                row = propose(session, args.merchant, args.partner, now)
            else:
                found = get_partnership(session, args.merchant, args.partner)
                row = answer(session, found, action, now)
            view = partnership_view(session, row)
        return _pushed(settings, args, {"partnership": view})

    return run


def _partner_list(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    from cloud.coupon_admin import list_partnerships

    with _session(settings) as session:
        return {"partnerships": list_partnerships(session, args.merchant)}


def alliance_id(session: Session, name_or_id: str) -> int:
    """The id of the alliance named (or numbered) `name_or_id`; AdminError (404) if none."""
    from cloud.coupon_admin import MISSING, AdminError
    from cloud.models import Alliance

    number = name_or_id.isascii() and name_or_id.isdigit()
    if "\x00" in name_or_id or len(name_or_id) > 120 or (number and int(name_or_id) >= 2**31):
        raise AdminError("alliance", f"no alliance {name_or_id[:40]!r}", MISSING)
    column = Alliance.id if number else Alliance.name
    value: int | str = int(name_or_id) if number else name_or_id
    found = session.scalar(select(Alliance.id).where(column == value))
    if found is None:
        raise AdminError("alliance", f"no alliance {name_or_id!r}", MISSING)
    return int(found)


def _alliances(settings: CloudSettings, _args: argparse.Namespace) -> dict[str, Any]:
    from cloud.models import Alliance, Merchant

    with _session(settings) as session:
        rows = session.execute(
            select(Alliance.id, Alliance.name, Merchant.name)
            .join(Merchant, Merchant.alliance_id == Alliance.id)
            .order_by(Alliance.name, Merchant.name)
        ).all()
    found: dict[int, dict[str, Any]] = {}
    for number, name, merchant in rows:
        found.setdefault(number, {"id": number, "alliance": name, "merchants": []})
        found[number]["merchants"].append(merchant)
    listed = [{**a, "merchants": ", ".join(a["merchants"])} for a in found.values()]
    return {"alliances": listed}


def _flows(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    from cloud.coupon_stats import flows

    with _session(settings) as session:
        return {"flows": flows(session.connection(), alliance_id(session, args.alliance))}


def _coupons_push(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    from cloud.coupon_plans import alliance_routers, push_plan
    from cloud.fleet_push import broker_publisher

    publish = broker_publisher(settings)
    pushed = {}
    with _engine(settings) as engine:
        with engine.connect() as connection:
            routers = alliance_routers(connection, args.router)
        if args.router and not routers:
            from cloud.fleet_push import PushError

            raise PushError(f"router: no router {args.router!r}; see `loopspot-cloud routers`")
        for router_id in routers:
            config = push_plan(engine, publish, router_id, datetime.now(UTC))
            pushed[router_id] = None if config is None else config.version
    return {"pushed": pushed}


def _coupons_check(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    from cloud.coupon_stats import replay_router

    with _engine(settings) as engine, engine.connect() as connection:
        found = replay_router(connection, args.router)
    return {
        "router_id": args.router,
        "mismatches": [
            {
                "device_id": m.device_id,
                "campaign_id": m.campaign_id,
                "day": m.day,
                "expected": m.expected,
                "issued": m.issued,
            }
            for m in found
        ],
    }


def _staff_pin(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    from cloud.coupon_admin import set_staff_pin

    with _session(settings) as session:
        merchant = set_staff_pin(session, args.merchant, args.pin)
        return {
            "merchant": merchant.name,
            "staff_pin": "set (its hash reaches routers with their plan)",
        }


def _redeem(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    from cloud.coupon_redeem import announce, redeem
    from cloud.fleet_push import broker_publisher

    with _engine(settings) as engine:
        done = redeem(engine, args.code, args.router, time.time())
        try:
            told = announce(engine, broker_publisher(settings), done)
        except Exception as error:  # redeemed all the same: say so, and who was not told
            print(f"warning: the other routers were not told ({error})", file=sys.stderr)
            told = []
    return {
        "redeemed": done.coupon.coupon_id,
        "campaign_id": done.coupon.campaign_id,
        "router_id": done.router_id,
        "told": told,
    }


def _serve(settings: CloudSettings, _args: argparse.Namespace) -> dict[str, Any]:
    import logging

    from cloud.web.app import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    serve(settings)
    return {}


COMMANDS: dict[tuple[str, str | None], Handler] = {
    ("campaign", "create"): _campaign_create,
    ("campaign", "list"): _campaign_list,
    ("campaign", "show"): _campaign_show,
    ("campaign", "update"): _campaign_update,
    ("campaign", "stats"): _campaign_stats,
    **{("partner", a): _partner(a) for a in ("propose", "accept", "decline", "end")},
    ("partner", "list"): _partner_list,
    ("alliances", None): _alliances,
    ("flows", None): _flows,
    ("coupons", "push"): _coupons_push,
    ("coupons", "check"): _coupons_check,
    ("staff-pin", "set"): _staff_pin,
    ("coupon", "redeem"): _redeem,
    ("serve", None): _serve,
}
ONE = ("campaign", "partnership")  # results holding one thing, shown field by field


def show(result: dict[str, Any]) -> bool:
    """Print `result` if it is one campaign or partnership; False if it is not."""
    key = next((k for k in ONE if isinstance(result.get(k), dict)), None)
    if key is None:
        return False
    for name, value in result[key].items():
        print(f"{name}: {value}")
    for name, value in result.items():
        if name != key:
            print(f"{name}: {value}")
    return True


TABLES = {
    "campaigns": ["id", "merchant", "title_en", "budget", "allotted", "reach", "trigger"],
    "partnerships": ["id", "merchant", "partner", "state"],
    "flows": ["from_merchant", "to_merchant", "customers", "redemptions"],
    "alliances": ["id", "alliance", "merchants"],
}
