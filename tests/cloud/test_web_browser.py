"""Headless Chromium: an operator logs in, watches the fleet page, and sees a router go
offline without reloading the page."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import update

from cloud.db import make_engine, migrate
from cloud.models import Router
from tests.cloud.dashboard_world import PASSWORD, dashboard_app, email, make_world
from tests.lab.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.browser


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


async def test_an_operator_sees_a_router_go_offline_without_a_reload(
    chromium: str, shots: Path, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    url = f"sqlite:///{tmp_path}/cloud.db"
    migrate(url)
    engine = make_engine(url)
    make_world(engine)
    server = TestServer(dashboard_app(url, engine), host="127.0.0.1")
    await server.start_server()
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
                state = page.locator('tr[data-router="ra-1"] td[data-col="state"]')
                assert await state.text_content() == "online"
                await page.evaluate("window.notReloaded = true")
                await page.wait_for_timeout(800)  # the stream is open and has its snapshot
                with engine.begin() as connection:
                    connection.execute(
                        update(Router).where(Router.id == "ra-1").values(state="offline")
                    )
                await page.wait_for_function(
                    """() => document.querySelector(
                        'tr[data-router="ra-1"] td[data-col="state"]').textContent === 'offline'""",
                    timeout=3000,
                )
                assert await page.evaluate("window.notReloaded") is True
                await page.screenshot(path=str(shots / "fleet.png"), full_page=True)
            finally:
                await browser.close()
    finally:
        await server.close()
        engine.dispose()
    assert os.path.getsize(shots / "fleet.png") > 5_000  # noqa: ASYNC240 (after the browser)
