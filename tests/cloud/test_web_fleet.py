"""The fleet page: live rows by server-sent events, filters and pages, CSV, one router's
history, retiring; health and metrics. Real HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from cloud.models import Router, Site
from cloud.web.fleet_view import COLUMNS
from cloud.web.live import changed
from tests.cloud.dashboard_world import (
    World,
    bearer,
    dashboard_app,
    log_in,
    page_csrf,
)


def _more_routers(engine: Engine, count: int) -> list[str]:
    with Session(engine) as session, session.begin():
        site = session.scalars(select(Site).where(Site.name == "shop-a")).one()
        ids = [f"ra-{n:02d}" for n in range(2, 2 + count)]
        session.add_all(Router(id=i, site_id=site.id, state="offline") for i in ids)
    return ids


async def _next_router_event(stream: Any, router_id: str, deadline: float) -> dict[str, Any]:
    buffer = b""
    while time.monotonic() < deadline:
        chunk = await asyncio.wait_for(stream.content.readany(), deadline - time.monotonic())
        buffer += chunk
        while b"\n\n" in buffer:
            message, buffer = buffer.split(b"\n\n", 1)
            lines = dict(
                line.split(": ", 1) for line in message.decode().splitlines() if ": " in line
            )
            if lines.get("event") == "router":
                row: dict[str, Any] = json.loads(lines["data"])
                if row["router_id"] == router_id:
                    return row
    raise TimeoutError(f"no event for {router_id}")


def test_a_change_is_any_differing_column_or_a_new_router() -> None:
    before = {"r1": ("online", 1), "r2": ("online", 2)}
    after = {"r1": ("offline", 1), "r2": ("online", 2), "r3": ("unknown", 0)}
    assert changed(before, after) == ["r1", "r3"]
    assert changed(after, after) == []


async def test_the_fleet_stream_delivers_a_router_going_offline_within_two_seconds(
    client: TestClient[Any, Any], engine: Engine
) -> None:
    assert await log_in(client, "operator") == 302
    stream = await client.get("/fleet/events")
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    assert (await stream.content.readline()).startswith(b": connected")
    await asyncio.sleep(0.7)  # the poller has its first snapshot
    changed_at = time.monotonic()
    with engine.begin() as connection:
        connection.execute(update(Router).where(Router.id == "ra-1").values(state="offline"))
    row = await _next_router_event(stream, "ra-1", changed_at + 2.0)
    assert row["state"] == "offline" and time.monotonic() - changed_at < 2.0
    stream.close()


async def test_the_csv_export_has_the_filtered_rows_of_the_table(
    client: TestClient[Any, Any], engine: Engine
) -> None:
    extra = _more_routers(engine, 3)
    assert await log_in(client, "operator") == 302
    answer = await client.get("/fleet.csv?merchant=merchant-a")
    assert answer.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in answer.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(await answer.text())))
    assert [r["router_id"] for r in rows] == sorted(["ra-1", *extra])
    first = next(r for r in rows if r["router_id"] == "ra-1")
    assert list(first) == list(COLUMNS)
    assert (first["merchant"], first["city"], first["channel_agent"]) == (
        "merchant-a",
        "guangzhou",
        "agent-a",
    )
    assert (first["config_wanted"], first["config_applied"], first["clients"]) == ("2", "0", "3")
    by_city = await client.get("/fleet.csv?city=shenzhen")
    assert [r["router_id"] for r in csv.DictReader(io.StringIO(await by_city.text()))] == ["rb-1"]


async def test_the_fleet_table_pages_through_every_router_once(
    client: TestClient[Any, Any], engine: Engine, world: World
) -> None:
    extra = _more_routers(engine, 5)
    seen: list[str] = []
    after = ""
    while True:
        answer = await client.get(
            f"/api/v1/routers?limit=2&after={after}", headers=bearer(world.tokens["operator"])
        )
        page = await answer.json()
        assert len(page["routers"]) <= 2
        seen += [row["router_id"] for row in page["routers"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert seen == sorted(["ra-1", "rb-1", *extra])
    by_agent = await client.get(
        "/api/v1/routers?channel_agent=agent-a&limit=500", headers=bearer(world.tokens["operator"])
    )
    assert len((await by_agent.json())["routers"]) == 6
    bad = await client.get("/api/v1/routers?limit=0", headers=bearer(world.tokens["operator"]))
    assert bad.status == 400 and (await bad.json())["error"]["field"] == "limit"
    assert await log_in(client, "operator") == 302
    html = await (await client.get("/fleet?limit=2")).text()
    assert 'id="next"' in html and html.count("<tr data-router=") == 2


async def test_a_routers_page_shows_its_events_configs_and_commands(
    client: TestClient[Any, Any], world: World
) -> None:
    answer = await client.get("/api/v1/routers/ra-1", headers=bearer(world.tokens["owner_a"]))
    found = await answer.json()
    assert found["router"]["config_wanted"] == 2
    assert [e["kind"] for e in found["events"]] == ["login"]
    assert [c["version"] for c in found["configs"]] == [2]
    assert [c["action"] for c in found["commands"]] == ["send_status"]
    assert await log_in(client, "owner_a") == 302
    page = await (await client.get("/fleet/ra-1")).text()
    assert "send_status" in page and "login" in page
    assert "/retire" not in page  # only operators retire


async def test_an_operator_retires_a_router_from_its_page(
    client: TestClient[Any, Any], engine: Engine
) -> None:
    assert await log_in(client, "operator") == 302
    csrf = await page_csrf(client, "/fleet/ra-1")
    answer = await client.post("/fleet/ra-1/retire", data={"csrf": csrf}, allow_redirects=False)
    assert answer.status == 302
    with Session(engine) as session:
        assert session.get(Router, "ra-1").state == "retired"  # type: ignore[union-attr]
        assert session.get(Router, "rb-1").state == "online"  # type: ignore[union-attr]
    missing = await client.post("/fleet/nope/retire", data={"csrf": csrf})
    assert missing.status == 404


async def test_health_and_metrics_answer_without_login(
    client: TestClient[Any, Any], engine: Engine, world: World
) -> None:
    health = await client.get("/healthz")
    assert health.status == 200 and (await health.json()) == {"database": "ok"}
    with engine.begin() as connection:
        connection.execute(update(Router).where(Router.id == "rb-1").values(state="offline"))
    await client.get("/api/v1/routers", headers=bearer(world.tokens["operator"]))
    text = await (await client.get("/metrics")).text()
    assert 'loopspot_routers{state="online"} 1.0' in text
    assert 'loopspot_routers{state="offline"} 1.0' in text
    assert 'route="/api/v1/routers"' in text and "loopspot_http_request_seconds_bucket" in text


async def test_health_says_503_when_the_database_is_gone(tmp_path: Any) -> None:
    from cloud.db import make_engine

    url = f"sqlite:///{tmp_path}/missing/cloud.db"
    broken = make_engine(url)
    (tmp_path / "missing").rmdir()  # make_engine created it; the database cannot be opened now
    async with TestClient(TestServer(dashboard_app(url, broken, web_secret="k"))) as client:
        answer = await client.get("/healthz")
        assert answer.status == 503 and (await answer.json())["database"] == "unreachable"


def test_json_log_lines_are_one_object_each() -> None:
    import logging

    from cloud.web.ops import JsonLines

    record = logging.LogRecord("cloud.web", logging.INFO, "x", 1, "served %s", ("/fleet",), None)
    line = json.loads(JsonLines().format(record))
    assert line["message"] == "served /fleet" and line["level"] == "info"
    assert datetime.fromisoformat(line["at"]).tzinfo == UTC


async def test_a_new_config_version_reaches_the_stream_as_config_wanted(
    client: TestClient[Any, Any], engine: Engine
) -> None:
    from cloud.models import RouterConfig

    assert await log_in(client, "operator") == 302
    stream = await client.get("/fleet/events")
    await stream.content.readline()
    await asyncio.sleep(0.7)
    with Session(engine) as session, session.begin():
        session.add(RouterConfig(router_id="ra-1", version=3, body="{}"))
    row = await _next_router_event(stream, "ra-1", time.monotonic() + 2.0)
    assert (row["config_wanted"], row["config_applied"]) == (3, 0)
    stream.close()
