"""The JSON API over real HTTP (aiohttp's test server) on real SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import Engine

from agent import wire
from cloud.db import migrate
from cloud.ingest_store import IngestStore
from cloud.settings import CloudSettings
from cloud.web.app import make_app
from lab.freeport import free_port, wait_for_port
from tests.cloud.coupon_fleet import Fleet, make_fleet
from tests.cloud.test_coupon_ingest import issued, send

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Sent = list[tuple[str, bytes, bool]]


@pytest.fixture
def fleet(engine: Engine) -> Fleet:
    return make_fleet(engine)


@pytest.fixture
def sent() -> Sent:
    return []


@pytest.fixture
async def api(
    database_url: str, engine: Engine, fleet: Fleet, sent: Sent
) -> AsyncIterator[TestClient[Any, Any]]:
    settings = CloudSettings(database_url=database_url, api_token=TOKEN)
    app = make_app(settings, engine, lambda t, p, r: sent.append((t, p, r)))
    async with TestClient(TestServer(app)) as client:
        yield client


CAMPAIGN = {
    "merchant": "gym",
    "title_en": "Free day pass",
    "title_zh": "免费日票",
    "starts_at": "2027-01-01",
    "ends_at": "2027-03-01",
    "budget": 200,
    "reach": "partners",
}


async def test_a_script_creates_changes_and_reads_a_campaign(
    api: TestClient[Any, Any], sent: Sent
) -> None:
    made = await api.post("/api/v1/campaigns", json=CAMPAIGN, headers=AUTH)
    assert made.status == 201
    body = await made.json()
    configs = {topic for topic, _, retain in sent if retain}  # the alliance's routers' plans
    assert configs == {
        str(wire.Topic(r, wire.Channel.CONFIG))
        for r in ("r-restaurant", "r-spa", "r-spa-2", "r-gym")
    }
    gym = [wire.decode(p, wire.RouterConfig) for t, p, _ in sent if "r-gym/" in t]
    assert gym[0].coupons is not None
    assert [c.id for c in gym[0].coupons.campaigns] == [body["id"]]
    changed = await api.patch(f"/api/v1/campaigns/{body['id']}", json={"budget": 300}, headers=AUTH)
    assert (await changed.json())["budget"] == 300
    listed = await (await api.get("/api/v1/campaigns?merchant=gym", headers=AUTH)).json()
    assert [c["title_en"] for c in listed["campaigns"]] == ["Free day pass"]
    stats = await (await api.get(f"/api/v1/campaigns/{body['id']}/stats", headers=AUTH)).json()
    assert stats["issued"] == 0
    again = await (await api.get(f"/api/v1/stats/campaigns/{body['id']}", headers=AUTH)).json()
    assert again == stats
    flows = await (await api.get("/api/v1/stats/flows?alliance=loop", headers=AUTH)).json()
    assert flows == {"flows": []}
    checked = await (await api.get("/api/v1/stats/replay?router=r-gym", headers=AUTH)).json()
    assert checked == {"router_id": "r-gym", "mismatches": []}


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/api/v1/campaigns", {**CAMPAIGN, "ends_at": "2026-01-01"}, 400, "ends_at"),
        ("/api/v1/campaigns", {**CAMPAIGN, "trigger": "birthday"}, 400, "trigger"),
        ("/api/v1/campaigns", {**CAMPAIGN, "merchant": "bakery"}, 404, "merchant"),
        ("/api/v1/campaigns", {**CAMPAIGN, "colour": "red"}, 400, "colour"),
        ("/api/v1/partnerships", {"merchant": "gym", "partner": "gym"}, 400, "partner"),
        ("/api/v1/redemptions", {"code": "AAAAA-AAAAA", "router_id": "r-gym"}, 409, "code"),
        ("/api/v1/redemptions", {"code": "23456-78923"}, 400, "router_id"),
    ],
)
async def test_bad_input_gets_one_error_shape_naming_the_field(
    api: TestClient[Any, Any], path: str, body: dict[str, Any], status: int, field: str
) -> None:
    answer = await api.post(path, json=body, headers=AUTH)
    assert answer.status == status
    error = (await answer.json())["error"]
    assert error["field"] == field and error["message"]


async def test_requests_without_the_token_are_refused(api: TestClient[Any, Any]) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        answer = await api.get("/api/v1/campaigns", headers=headers)
        assert answer.status == 401
        assert (await answer.json())["error"]["field"] == "authorization"


async def test_a_missing_campaign_and_a_conflicting_answer(api: TestClient[Any, Any]) -> None:
    missing = await api.get("/api/v1/campaigns/999", headers=AUTH)
    assert missing.status == 404 and (await missing.json())["error"]["field"] == "campaign"
    made = await api.post(
        "/api/v1/partnerships", json={"merchant": "gym", "partner": "spa"}, headers=AUTH
    )
    number = (await made.json())["id"]
    assert (await api.post(f"/api/v1/partnerships/{number}/decline", headers=AUTH)).status == 200
    again = await api.post(f"/api/v1/partnerships/{number}/accept", headers=AUTH)
    assert again.status == 409 and (await again.json())["error"]["field"] == "state"


async def test_a_redemption_through_the_api_wins_once_and_tells_the_other_routers(
    api: TestClient[Any, Any], engine: Engine, fleet: Fleet, sent: Sent
) -> None:
    now = int(time.time())  # the API redeems at the real time
    offer = fleet.campaign("spa", reach="partners")
    coupon = fleet.coupon("r-restaurant", offer, "spa", not_before=now - 60, not_after=now + 3600)
    send(IngestStore(engine), issued(fleet, "r-restaurant", coupon))
    body = {"code": coupon.to_text(), "router_id": "r-spa"}
    first = await api.post("/api/v1/redemptions", json=body, headers=AUTH)
    assert first.status == 200 and (await first.json())["told"] == ["r-spa-2"]
    second = await api.post("/api/v1/redemptions", json=body, headers=AUTH)
    assert second.status == 409 and "spent" in (await second.json())["error"]["message"]
    [(topic, payload, _)] = [m for m in sent if m[0].endswith("/down/cmd")]
    assert topic == str(wire.Topic("r-spa-2", wire.Channel.COMMAND))
    assert wire.decode(payload, wire.Command).coupons == (coupon.coupon_id,)


def test_loopspot_cloud_serve_answers_on_the_web_port(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cloud.db"
    migrate(url)
    port = free_port()
    env = {
        **os.environ,
        "LOOPSPOT_DATABASE_URL": url,
        "LOOPSPOT_DATA_DIR": str(tmp_path / "data"),
        "LOOPSPOT_WEB_PORT": str(port),
        "LOOPSPOT_API_TOKEN": TOKEN,
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "cloud.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_for_port("127.0.0.1", port, 20), server.stderr
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/campaigns", headers=AUTH)
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.loads(answer.read()) == {"campaigns": []}
    finally:
        server.terminate()
        server.wait(15)
