"""Headless Chromium: an operator logs in and watches the fleet page while a router vanishes;
its Last Will goes through a real Mosquitto and the ingest worker, and the row turns offline
without a reload."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from aiohttp.test_utils import TestServer
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine

from agent import wire
from lab.broker import Broker
from tests.cloud.conftest import WorkerFactory
from tests.cloud.dashboard_world import PASSWORD, dashboard_app, email, make_world
from tests.lab.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.browser
STATE = 'tr[data-router="ra-1"] td[data-col="state"]'


@pytest.fixture
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: apt-get install chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: $LOOPSPOT_SCREENSHOTS (docs/screenshots for the README)."""
    folder = Path(os.environ.get("LOOPSPOT_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _status(state: wire.RouterState, at: float) -> tuple[str, bytes]:
    body = wire.Status(router_id="ra-1", state=state, at=at, boot_id="boot-a", clients=5)
    return str(wire.Topic("ra-1", wire.Channel.STATUS)), body.encode()


def _router_link(broker: Broker) -> paho.Client:
    """Router ra-1's MQTT link with its Last Will, online."""
    topic, will = _status(wire.RouterState.OFFLINE, 0.0)  # no time, as agent.link does
    link = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"ra-1-{uuid.uuid4().hex[:6]}")
    link.will_set(topic, will, qos=1, retain=True)
    connected = threading.Event()
    link.on_connect = lambda *_: connected.set()
    link.connect(broker.host, broker.port)
    link.loop_start()
    assert connected.wait(10)
    link.publish(*_status(wire.RouterState.ONLINE, 3000.0), qos=1, retain=True).wait_for_publish(10)
    return link


async def test_an_operator_sees_a_vanished_router_go_offline_without_a_reload(
    chromium: str,
    shots: Path,
    database_url: str,
    engine: Engine,
    broker: Broker,
    make_worker: WorkerFactory,
) -> None:
    from playwright.async_api import async_playwright

    make_world(engine)
    await make_worker()
    server = TestServer(dashboard_app(database_url, engine), host="127.0.0.1")
    await server.start_server()
    link = await asyncio.to_thread(_router_link, broker)
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page: Any = await (await browser.new_context(locale="en-US")).new_page()
                await page.goto(str(server.make_url("/lang/en?next=/login")))
                await page.fill("input[name=email]", email("operator"))
                await page.fill("input[name=password]", PASSWORD)
                await page.click("button[type=submit]")
                await page.wait_for_url("**/fleet")
                await page.wait_for_function(
                    f"() => document.querySelector('{STATE}').textContent === 'online'",
                    timeout=5000,
                )
                await page.evaluate("window.notReloaded = true")
                await page.wait_for_timeout(800)  # the stream is open and has its snapshot
                sock = link.socket()
                assert isinstance(sock, socket.socket)
                sock.shutdown(socket.SHUT_RDWR)  # the router vanishes without saying goodbye
                await page.wait_for_function(
                    f"() => document.querySelector('{STATE}').textContent === 'offline'",
                    timeout=3000,
                )
                assert await page.evaluate("window.notReloaded") is True
                await page.screenshot(path=str(shots / "fleet.png"), full_page=True)
            finally:
                await browser.close()
    finally:
        link.loop_stop()
        await server.close()
    assert os.path.getsize(shots / "fleet.png") > 5_000  # noqa: ASYNC240 (after the browser)
