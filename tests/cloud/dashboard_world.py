"""Two tenants for the dashboard tests: merchant A (brought in by channel agent A) and
merchant B, a router each, and a user of every role. `Browser` logs in like a person would."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cloud import accounts
from cloud.account_models import CHANNEL_AGENT, MERCHANT_OWNER, MERCHANT_STAFF, OPERATOR
from cloud.enrol_fleet import create_merchant, create_site
from cloud.models import Command, Event, Router, RouterConfig

PASSWORD = "correct-horse-1"
OPERATOR_TOKEN = "operator-secret-token"
USERS = {
    "operator": (OPERATOR, None, None),
    "agent_a": (CHANNEL_AGENT, None, "agent-a"),
    "owner_a": (MERCHANT_OWNER, "merchant-a", None),
    "staff_a": (MERCHANT_STAFF, "merchant-a", None),
    "owner_b": (MERCHANT_OWNER, "merchant-b", None),
}
# What only tenant B's rows hold (never the ids a request names, which pages may echo).
B_MARKERS = ("agent-9.9.9-b", "merchant-b", "owner_b@", "shop-b", "shenzhen")


def email(name: str) -> str:
    """The test user's email."""
    return f"{name}@example.com"


@dataclass
class World:
    """Ids of what `make_world` made, and one API token per user."""

    tokens: dict[str, str]
    merchant_ids: dict[str, int]


def make_world(engine: Engine) -> World:
    """Merchants A and B with a site, a router with history each, and the users."""
    now = datetime.now(UTC)
    tokens: dict[str, str] = {}
    ids: dict[str, int] = {}
    with Session(engine) as session, session.begin():
        for letter, city in (("a", "guangzhou"), ("b", "shenzhen")):
            merchant = create_merchant(session, f"merchant-{letter}")
            ids[letter] = merchant.id
            site = create_site(session, merchant.name, f"shop-{letter}")
            site.city = city
            session.flush()
            router = Router(id=f"r{letter}-1", site_id=site.id, state="online", enrolled_at=now)
            router.agent_version = "agent-1.2.0-a" if letter == "a" else "agent-9.9.9-b"
            router.clients, router.last_seen = 3, now
            session.add(router)
            session.flush()
            session.add(RouterConfig(router_id=router.id, version=2, body="{}"))
            session.add(
                Event(router_id=router.id, boot_id="b", seq=1, at=1.0, kind="login", device_id="d1")
            )
            session.add(Command(id=f"cmd-{letter}", router_id=router.id, action="send_status"))
        agent = accounts.channel_agent_named(session, "agent-a", create=True)
        accounts.assign_merchant(session, agent, ids["a"])
        for name, (role, merchant_name, agent_name) in USERS.items():
            user = accounts.create_user(
                session, email(name), role, PASSWORD, merchant_name, agent_name
            )
            tokens[name] = accounts.issue_api_token(session, user, "tests", now)
    return World(tokens=tokens, merchant_ids=ids)


def csrf_of(page: str) -> str:
    """The CSRF token in a page's first form."""
    found = re.search(r'name="csrf" value="([^"]*)"', page)
    assert found, "no CSRF field on the page"
    return found.group(1)


async def log_in(client: TestClient[Any, Any], name: str, password: str = PASSWORD) -> int:
    """Log in through the form; the status of the POST (302 on success)."""
    page = await (await client.get("/login")).text()
    answer = await client.post(
        "/login",
        data={"csrf": csrf_of(page), "email": email(name), "password": password},
        allow_redirects=False,
    )
    return answer.status


async def page_csrf(client: TestClient[Any, Any], path: str = "/password") -> str:
    """The session's CSRF token, read from a page with a form."""
    return csrf_of(await (await client.get(path)).text())


def dashboard_app(database_url: str, engine: Engine, web_secret: str = "") -> Any:
    """The whole web app on the test's database, with a throwaway broker publisher; its
    cookie key is `web_secret`, else the one shared in the database."""
    from cloud.settings import CloudSettings
    from cloud.web.app import make_app

    settings = CloudSettings(
        database_url=database_url, api_token=OPERATOR_TOKEN, web_secret=web_secret
    )
    return make_app(settings, engine, lambda topic, payload, retain: None)


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of an API token."""
    return {"Authorization": f"Bearer {token}"}
