"""A real browser on a phone: headless Chromium lands on the portal, accepts, and is online."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lab import addresses as A
from lab.router import RouterAgent
from lab.topology import Lab

pytestmark = [pytest.mark.lab, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_in(ns: str, folder: Path) -> Path:
    """A launcher that starts Debian's Chromium inside the phone's namespace."""
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: apt-get install chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    launcher = folder / "chromium-in-phone"
    launcher.write_text(f'#!/bin/sh\nexec ip netns exec {ns} {CHROMIUM} "$@"\n')
    launcher.chmod(0o755)
    return launcher


def test_shopper_opens_any_site_lands_on_the_portal_accepts_and_browses(
    lab: Lab, agent: RouterAgent, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    phone = lab.phones[0]
    shots = Path(os.environ.get("LOOPSPOT_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium_in(phone.ns, tmp_path)), args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_context(
                viewport={"width": 390, "height": 844},
                java_script_enabled=False,
                locale="en-US",
            ).new_page()
            page.goto(f"http://{A.WEB_HOST}/", timeout=15_000)
            assert page.url.startswith(f"http://{A.ROUTER_LAN_IP}:2050/portal")
            page.screenshot(path=str(shots / "portal.png"), full_page=True)
            page.click("#accept")
            page.wait_for_selector("#online", timeout=10_000)
            page.screenshot(path=str(shots / "online.png"), full_page=True)
            page.goto(f"http://{A.WEB_HOST}/", timeout=15_000)
            assert "WAN OK" in page.content()
        finally:
            browser.close()
    assert (shots / "portal.png").stat().st_size > 5_000
