"""Real browsers on the coupon pages: the shopper's wallet without JavaScript, the staff page.

The router runs with its cloud section on but no broker to reach: the link keeps retrying,
and the coupon desk works from what is on flash (its issuer key and the last plan), which
is what a shop with its internet down has.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.coupons.shortcode import pretty
from agent.coupons.store import DB_NAME
from agent.portal.wallet import qr_svg
from agent.wire import Campaign, Reach, Trigger
from lab import addresses as A
from lab.coupon_shop import MERCHANT_ID, STAFF_PIN, set_up_coupons
from lab.pytest_plugin import LabFactory
from lab.router import RouterAgent, cloud_section
from lab.topology import Lab
from tests.lab.portal_steps import PORTAL, accept_terms
from tests.lab.test_browser import CHROMIUM_ARGS, chromium_in

pytestmark = [pytest.mark.lab, pytest.mark.browser]

DAY = 86400
_PATH = re.compile(r'<path stroke="#000" d="([^"]+)"')


def foot_massage(now: int) -> Campaign:
    """The spa's own campaign, handed out at its own site at every first login."""
    return Campaign(
        id=1,
        merchant_id=MERCHANT_ID,
        merchant_name="Lotus Spa",
        title_en="Free foot massage",
        title_zh="免费足疗一次",
        terms_en="One per visit, weekdays.",
        terms_zh="每次到店限用一张 工作日有效",
        starts_at=now - DAY,
        ends_at=now + 30 * DAY,
        budget=100,
        per_device=1,
        trigger=Trigger.LOGIN,
        reach=Reach.OWN,
        issuers=(MERCHANT_ID,),
        allotted=10,
    )


@pytest.fixture
def spa(lab_factory: LabFactory) -> Iterator[tuple[Lab, RouterAgent]]:
    """The spa's router with coupons from flash and no cloud to reach; a shopper and a till."""
    lab = lab_factory(phones=2)
    workdir = lab.workdir / "agent"
    agent = RouterAgent(lab, sections={"cloud": cloud_section(workdir)})
    set_up_coupons(workdir / "flash", (foot_massage(int(time.time())),))
    agent.start()
    try:
        yield lab, agent
    finally:
        agent.stop()
        print(f"--- agent log ---\n{agent.logs()[-4000:]}")


def held_on_flash(agent: RouterAgent) -> list[tuple[str, str]]:
    """(code, token) of every coupon the router keeps, read from its store on flash."""
    db = sqlite3.connect(f"file:{agent.workdir / 'flash' / DB_NAME}?mode=ro", uri=True)
    try:
        return [(str(c), str(t)) for c, t in db.execute("SELECT code, token FROM coupons")]
    finally:
        db.close()


def screenshots(tmp_path: Path) -> Path:
    shots = Path(os.environ.get("LOOPSPOT_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    return shots


def test_wallet_shows_the_coupon_and_its_qr_code_with_javascript_off(
    spa: tuple[Lab, RouterAgent], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    lab, agent = spa
    shopper = lab.phones[0]
    shots = screenshots(tmp_path)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium_in(shopper.ns, tmp_path)), args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_context(
                viewport={"width": 390, "height": 844}, java_script_enabled=False, locale="en-US"
            ).new_page()
            page.goto(f"http://{A.WEB_HOST}/", timeout=15_000)
            page.click("#accept")
            page.wait_for_selector("#new-coupons", timeout=10_000)
            assert "Free foot massage" in page.inner_text("#new-coupons")
            page.click("#wallet-link")
            page.wait_for_selector("#wallet", timeout=10_000)
            ((code, token),) = held_on_flash(agent)
            wallet = page.inner_text("#wallet")
            assert pretty(code) in wallet and "Lotus Spa" in wallet and "Valid" in wallet
            page.screenshot(path=str(shots / "wallet.png"), full_page=True)
            page.click("#wallet a[href^='/portal/wallet/']")
            page.wait_for_selector("#qr svg", timeout=10_000)
            assert page.inner_text("#coupon-code") == pretty(code)
            drawn = _PATH.search(page.inner_html("#qr"))
            expected = _PATH.search(str(qr_svg(token)))
            assert drawn and expected and drawn.group(1) == expected.group(1)  # the whole token
            page.screenshot(path=str(shots / "coupon.png"), full_page=True)
            page.goto(f"{PORTAL}/portal/wallet?lang=zh", timeout=10_000)
            assert "免费足疗一次" in page.inner_text("#wallet")
        finally:
            browser.close()
    assert (shots / "wallet.png").stat().st_size > 5_000


def test_staff_log_in_with_the_pin_type_the_code_and_redeem_it(
    spa: tuple[Lab, RouterAgent], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    lab, agent = spa
    shopper, till = lab.phones
    assert accept_terms(shopper).status == 303  # the shopper is online, with a coupon
    ((code, _),) = held_on_flash(agent)
    shots = screenshots(tmp_path)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium_in(till.ns, tmp_path)), args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_context(
                viewport={"width": 390, "height": 844}, locale="en-US"
            ).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{PORTAL}/staff", timeout=15_000)
            page.fill("#pin", "1357")
            page.click("#login")
            assert "Wrong PIN" in page.inner_text("#staff-notice")
            page.fill("#pin", STAFF_PIN)
            page.click("#login")
            page.wait_for_selector("#check-form", timeout=10_000)
            page.fill("#code", pretty(code).lower())
            page.click("#check")
            page.wait_for_selector("#verdict", timeout=10_000)
            assert page.get_attribute("#verdict", "data-valid") == "yes"
            assert "Free foot massage" in page.inner_text("#offer")
            assert page.get_attribute("#on-wifi", "data-on-wifi") == "yes"
            page.screenshot(path=str(shots / "staff.png"), full_page=True)
            page.click("#redeem")
            page.wait_for_selector("#verdict[data-redeemed='yes']", timeout=10_000)
            assert "Redeemed" in page.inner_text("h1")
            page.fill("#code", code)  # the next customer shows the same coupon again
            page.click("#check")
            page.wait_for_selector("#verdict", timeout=10_000)
            assert page.get_attribute("#verdict", "data-refusal") == "refusal_spent"
            detector = page.evaluate("'BarcodeDetector' in window")  # not on Linux
            assert (page.query_selector("#scan") is not None) == detector
            assert errors == []
        finally:
            browser.close()
    assert (shots / "staff.png").stat().st_size > 5_000


# Chromium on Linux has no BarcodeDetector: this stand-in "reads" the token from any image,
# so the test shows the script's part (the button, the photo, the submit), not the decoding.
STAND_IN_DETECTOR = """
window.BarcodeDetector = class {
  constructor(options) { this.formats = options.formats; }
  detect(image) { return Promise.resolve([{ rawValue: %s }]); }
};
"""


def test_the_scan_button_takes_a_photo_of_the_qr_code_and_checks_it(
    spa: tuple[Lab, RouterAgent], tmp_path: Path
) -> None:
    import json

    import segno
    from playwright.sync_api import sync_playwright

    lab, agent = spa
    shopper, till = lab.phones
    assert accept_terms(shopper).status == 303
    ((code, token),) = held_on_flash(agent)
    photo = tmp_path / "qr.png"
    segno.make(token, error="l").save(str(photo), scale=6)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium_in(till.ns, tmp_path)), args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 390, "height": 844})
            context.add_init_script(STAND_IN_DETECTOR % json.dumps(token))
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{PORTAL}/staff?lang=en", timeout=15_000)
            page.fill("#pin", STAFF_PIN)
            page.click("#login")
            page.wait_for_selector("#scan", timeout=10_000)  # over plain HTTP: the photo way
            with page.expect_file_chooser() as chosen:
                page.click("#scan")
            chosen.value.set_files(str(photo))
            page.wait_for_selector("#verdict", timeout=10_000)
            assert page.get_attribute("#verdict", "data-valid") == "yes"
            assert pretty(code) in page.inner_text("#verdict-code")
            assert errors == []
        finally:
            browser.close()


def test_where_the_page_may_use_the_camera_the_scan_button_reads_it_live(
    spa: tuple[Lab, RouterAgent], tmp_path: Path
) -> None:
    import json

    from playwright.sync_api import sync_playwright

    lab, agent = spa
    shopper, till = lab.phones
    assert accept_terms(shopper).status == 303
    ((code, token),) = held_on_flash(agent)
    camera = [  # a fake camera, and this origin treated as secure, as HTTPS would make it
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--unsafely-treat-insecure-origin-as-secure={PORTAL}",
    ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium_in(till.ns, tmp_path)), args=CHROMIUM_ARGS + camera
        )
        try:
            context = browser.new_context(viewport={"width": 390, "height": 844})
            context.add_init_script(STAND_IN_DETECTOR % json.dumps(token))
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{PORTAL}/staff?lang=en", timeout=15_000)
            page.fill("#pin", STAFF_PIN)
            page.click("#login")
            page.wait_for_selector("#scan", timeout=10_000)
            assert page.evaluate("window.isSecureContext && !!navigator.mediaDevices")
            page.click("#scan")
            page.wait_for_selector("#verdict", timeout=10_000)
            assert page.get_attribute("#verdict", "data-valid") == "yes"
            assert pretty(code) in page.inner_text("#verdict-code")
            assert errors == []
        finally:
            browser.close()
