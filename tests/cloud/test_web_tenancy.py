"""For every route of the app's own router, a user of tenant A asking for tenant B's objects
gets 403 or 404, never B's data. A new route is covered without editing this test."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import Engine, update

from cloud.models import Router
from cloud.web.auth import roles_of
from tests.cloud.dashboard_world import (
    B_MARKERS,
    World,
    bearer,
    log_in,
    page_csrf,
)

PUBLIC = {
    "/login",
    "/lang/{lang}",
    "/healthz",
    "/metrics",
    "/static/fleet.js",
    "/api/v1/openapi.json",
}
READ_FOR = 1.5  # seconds a streaming answer is read (while B's router changes)


def _b_object(canonical: str, world: World) -> str:
    """The route's path with every placeholder naming one of tenant B's objects."""
    return (
        canonical.replace("{router_id}", "rb-1")
        .replace("{id}", str(world.merchant_ids["b"]))
        .replace("{action}", "accept")
    )


async def _body(answer: Any) -> str:
    """The answer's body, or what arrived of it within READ_FOR seconds (streams)."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + READ_FOR
    while (left := deadline - time.monotonic()) > 0:
        try:
            chunk = await asyncio.wait_for(answer.content.readany(), left)
        except TimeoutError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    answer.close()
    return b"".join(chunks).decode(errors="replace")


def _routes(client: TestClient[Any, Any]) -> list[tuple[str, str]]:
    found = []
    for route in client.app.router.routes():
        canonical = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD" or roles_of(route.handler) is None:
            assert route.method == "HEAD" or canonical in PUBLIC, f"{canonical} is public"
            continue
        found.append((route.method, canonical))
    return sorted(found, key=lambda route: route[1] == "/logout")  # logging out comes last


@pytest.mark.parametrize("who", ["owner_a", "staff_a", "agent_a"])
async def test_no_route_gives_tenant_a_anything_of_tenant_b(
    client: TestClient[Any, Any], world: World, engine: Engine, who: str
) -> None:
    assert await log_in(client, who) == 302
    csrf = await page_csrf(client)
    routes = _routes(client)
    assert len(routes) >= 20  # the coupon routes and the dashboard's
    for method, canonical in routes:
        path = _b_object(canonical, world)
        with engine.begin() as connection:  # B's router changes while we look
            connection.execute(
                update(Router).where(Router.id == "rb-1").values(clients=Router.clients + 1)
            )
        if canonical.startswith("/api/"):
            kwargs: dict[str, Any] = {"headers": bearer(world.tokens[who])}
            if method not in ("GET", "DELETE"):
                kwargs["json"] = {"merchant": "merchant-b", "partner": "merchant-a"}
        else:
            kwargs = {"data": {"csrf": csrf}} if method == "POST" else {}
        answer = await client.request(method, path, allow_redirects=False, **kwargs)
        body = await _body(answer)
        leaked = [marker for marker in B_MARKERS if marker in body]
        assert not leaked, f"{method} {canonical} showed {who} {leaked}"
        if "{" in canonical:
            assert answer.status in (403, 404), f"{method} {canonical}: {answer.status}"
        else:
            # Lists answer with the caller's own rows; a bad form is refused (400).
            assert answer.status in (200, 302, 400, 403, 404), f"{method} {canonical}"
    assert routes[-1] == ("POST", "/logout")
