"""Logging in and out, sessions, CSRF, rate limits and roles, over real HTTP on both databases."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from cloud import accounts
from cloud.account_models import WebSession
from cloud.web.auth import roles_of
from tests.cloud.dashboard_world import (
    PASSWORD,
    World,
    bearer,
    dashboard_app,
    email,
    log_in,
    page_csrf,
)


def test_passwords_are_stored_as_scrypt_hashes_only() -> None:
    stored = accounts.hash_password("a long secret")
    assert stored.startswith("scrypt$16384$8$1$") and "a long secret" not in stored
    assert accounts.check_password("a long secret", stored)
    assert not accounts.check_password("a long secreT", stored)
    assert not accounts.check_password("anything", "not-a-hash")


async def test_an_operator_logs_in_and_lands_on_the_fleet(client: TestClient[Any, Any]) -> None:
    assert await log_in(client, "operator") == 302
    page = await client.get("/")
    assert page.status == 200 and "rb-1" in await page.text() and "ra-1" in await page.text()


async def test_the_session_cookie_is_httponly_samesite_and_signed(
    client: TestClient[Any, Any],
) -> None:
    page = await (await client.get("/login")).text()
    from tests.cloud.dashboard_world import csrf_of

    answer = await client.post(
        "/login",
        data={"csrf": csrf_of(page), "email": email("operator"), "password": PASSWORD},
        allow_redirects=False,
    )
    cookie = answer.cookies["ls_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/"
    assert not cookie["secure"]  # plain HTTP here; Secure follows request.secure
    token, _, signature = cookie.value.rpartition(".")
    forged = f"{token}.{'0' * len(signature)}"
    client.session.cookie_jar.clear()
    refused = await client.get("/fleet", cookies={"ls_session": forged}, allow_redirects=False)
    assert refused.status == 302 and refused.headers["Location"].startswith("/login")


async def test_wrong_passwords_are_rate_limited_per_account(client: TestClient[Any, Any]) -> None:
    for _ in range(accounts.MAX_FAILURES_PER_ACCOUNT):
        assert await log_in(client, "owner_a", "wrong-password!") == 401
    # Even the right password is refused now, for this account only.
    assert await log_in(client, "owner_a") == 429
    assert await log_in(client, "owner_b") == 302


async def test_wrong_passwords_are_rate_limited_per_client_address(
    client: TestClient[Any, Any],
) -> None:
    for number in range(accounts.MAX_FAILURES_PER_ADDRESS):
        page = await (await client.get("/login")).text()
        from tests.cloud.dashboard_world import csrf_of

        answer = await client.post(
            "/login",
            data={"csrf": csrf_of(page), "email": f"nobody{number}@x.cn", "password": "x" * 12},
        )
        assert answer.status == 401
    assert await log_in(client, "operator") == 429


async def test_logout_ends_the_session_on_the_server(
    client: TestClient[Any, Any], engine: Engine
) -> None:
    assert await log_in(client, "operator") == 302
    kept = client.session.cookie_jar.filter_cookies(client.make_url("/"))["ls_session"].value
    csrf = await page_csrf(client)
    assert (await client.post("/logout", data={"csrf": csrf}, allow_redirects=False)).status == 302
    again = await client.get("/fleet", cookies={"ls_session": kept}, allow_redirects=False)
    assert again.status == 302 and again.headers["Location"].startswith("/login")
    with Session(engine) as session:
        assert session.scalars(select(WebSession.ended_at)).all()[0] is not None


async def test_every_form_post_needs_the_session_csrf_token(client: TestClient[Any, Any]) -> None:
    assert await log_in(client, "operator") == 302
    posts = [
        route.resource.canonical
        for route in client.app.router.routes()
        if route.method == "POST"
        and route.resource is not None
        and not route.resource.canonical.startswith("/api/")
    ]
    assert "/logout" in posts and "/fleet/{router_id}/retire" in posts
    for path in posts:
        url = path.replace("{router_id}", "ra-1")
        for data in ({}, {"csrf": "forged"}):
            answer = await client.post(url, data=data, allow_redirects=False)
            assert answer.status == 403, (path, data, answer.status)
    # And the router is still there: nothing was done.
    page = await client.get("/fleet/ra-1")
    assert "retired" not in await page.text()


async def test_staff_cannot_reach_owner_or_fleet_pages(
    client: TestClient[Any, Any], world: World
) -> None:
    assert await log_in(client, "staff_a") == 302
    assert (await client.get("/counter")).status == 200
    for path in ("/fleet", "/fleet/ra-1", "/fleet.csv", "/fleet/events"):
        assert (await client.get(path)).status == 403, path
    for path in ("/api/v1/users", "/api/v1/routers", "/api/v1/merchants"):
        answer = await client.get(path, headers=bearer(world.tokens["staff_a"]))
        assert answer.status == 403 and (await answer.json())["error"]["field"] == "role"


async def test_a_channel_agent_sees_only_their_merchants_routers(
    client: TestClient[Any, Any], world: World
) -> None:
    answer = await client.get("/api/v1/routers", headers=bearer(world.tokens["agent_a"]))
    assert [row["router_id"] for row in (await answer.json())["routers"]] == ["ra-1"]
    everyone = await client.get("/api/v1/routers", headers=bearer(world.tokens["operator"]))
    assert [row["router_id"] for row in (await everyone.json())["routers"]] == ["ra-1", "rb-1"]
    assert await log_in(client, "agent_a") == 302
    page = await (await client.get("/fleet")).text()
    assert "ra-1" in page and "rb-1" not in page and "merchant-b" not in page


async def test_changing_the_password_ends_sessions_and_the_old_one_stops_working(
    client: TestClient[Any, Any],
) -> None:
    assert await log_in(client, "owner_a") == 302
    csrf = await page_csrf(client)
    done = await client.post(
        "/password",
        data={"csrf": csrf, "old_password": PASSWORD, "new_password": "a-brand-new-one"},
    )
    assert done.status == 200 and 'id="done"' in await done.text()
    assert (await client.get("/fleet", allow_redirects=False)).status == 302
    assert await log_in(client, "owner_a") == 401
    assert await log_in(client, "owner_a", "a-brand-new-one") == 302


async def test_api_tokens_and_the_operator_token_authenticate_scripts(
    client: TestClient[Any, Any], world: World
) -> None:
    me = await client.get("/api/v1/me", headers=bearer(world.tokens["owner_b"]))
    assert (await me.json())["merchants"] == [world.merchant_ids["b"]]
    operator = await client.get("/api/v1/me", headers=bearer("operator-secret-token"))
    assert (await operator.json())["role"] == "operator"
    for headers in ({}, bearer("lsk_made-up"), bearer("wrong")):
        refused = await client.get("/api/v1/me", headers=headers)
        assert refused.status == 401 and (await refused.json())["error"]["field"] == "authorization"


async def test_the_language_switch_shows_english_and_chinese(client: TestClient[Any, Any]) -> None:
    assert "登录" in await (await client.get("/login")).text()
    english = await client.get("/lang/en?next=/login")
    assert "Log in" in await english.text()
    elsewhere = await client.get("/lang/zh?next=//evil.example", allow_redirects=False)
    assert elsewhere.headers["Location"] == "/"


def test_a_route_that_says_nothing_is_for_operators_only() -> None:
    async def handler() -> None: ...

    assert roles_of(handler) == frozenset({"operator"})


async def test_logging_out_ends_an_open_fleet_stream(
    client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from cloud.web import live

    monkeypatch.setattr(live, "KEEPALIVE", 0.3)
    assert await log_in(client, "operator") == 302
    stream = await client.get("/fleet/events")
    await stream.content.readline()
    csrf = await page_csrf(client)
    assert (await client.post("/logout", data={"csrf": csrf}, allow_redirects=False)).status == 302
    rest = await asyncio.wait_for(stream.content.read(), 3.0)  # the server closes it
    assert b"event: router" not in rest


async def test_pages_forbid_framing_and_sniffing(client: TestClient[Any, Any]) -> None:
    answer = await client.get("/login")
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]


async def test_an_owner_adds_staff_to_their_own_merchant_only(
    client: TestClient[Any, Any], engine: Engine
) -> None:
    from cloud.account_models import User

    assert await log_in(client, "owner_a") == 302
    csrf = await page_csrf(client, "/users")
    listing = await (await client.get("/users")).text()
    assert "staff_a@example.com" in listing and "owner_b@example.com" not in listing
    form = {"csrf": csrf, "email": "new@example.com", "password": "long-enough-1"}
    # Whatever merchant the form names, the staff member joins the owner's merchant.
    added = await client.post(
        "/users", data={**form, "role": "merchant_staff", "merchant": "merchant-b"}
    )
    assert added.status == 200 and 'id="added"' in await added.text()
    owner = await client.post("/users", data={**form, "role": "merchant_owner"})
    assert owner.status == 403
    with Session(engine) as session:
        new = session.scalars(select(User).where(User.email == "new@example.com")).one()
        owner_a = session.scalars(select(User).where(User.email == "owner_a@example.com")).one()
        assert (new.role, new.merchant_id) == ("merchant_staff", owner_a.merchant_id)
    again = await client.post("/users", data={**form, "role": "merchant_staff"})
    assert again.status == 400 and "already has an account" in await again.text()


async def test_two_serve_processes_on_one_database_accept_each_others_sessions(
    database_url: str, engine: Engine, world: World, client: TestClient[Any, Any]
) -> None:
    assert await log_in(client, "operator") == 302
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))["ls_session"].value
    async with TestClient(TestServer(dashboard_app(database_url, engine))) as other:
        answer = await other.get("/fleet", cookies={"ls_session": cookie}, allow_redirects=False)
        assert answer.status == 200
    keyed = dashboard_app(database_url, engine, web_secret="another-key")
    async with TestClient(TestServer(keyed)) as stranger:
        refused = await stranger.get(
            "/fleet", cookies={"ls_session": cookie}, allow_redirects=False
        )
        assert refused.status == 302  # signed with another key: not a session here
