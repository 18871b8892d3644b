"""Counter latency on the router: from the staff page's submit to the verdict page.

    sudo .venv/bin/python -m bench.counter_latency [--spent 100000] [--bursts 20]

The real agent runs in the lab's router namespace with coupons from flash (its issuer key,
a plan with a staff PIN) and `--spent` coupons on its spent list, its cloud unreachable,
as in a shop whose internet is down. A shopper's phone logs in and gets a coupon; a till
phone logs in to the staff page and posts the check form, each time on a new connection,
with the short code typed or the whole token scanned. The staff page allows 10 checks in
a burst and one a second after that, so the checks come in bursts of 10 with pauses.
Goal: p99 at most 50 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlencode

from agent.coupons.ed25519 import backend
from agent.coupons.pin import hash_pin
from agent.coupons.shortcode import pretty
from agent.coupons.store import DB_NAME, CouponStore
from agent.coupons.token import certify
from agent.link.local import APPLIED_FILE
from agent.wire import Campaign, CouponPlan, Reach, RouterConfig, Trigger
from bench import common as C
from bench.coupon_check import fill_spent
from lab.client import HttpResponse, http_get, request
from lab.router import RouterAgent, cloud_section
from lab.topology import Lab, Phone

GOAL = 0.050  # p99, submit -> verdict page
BURST = 10  # agent.portal.staff.CHECK_BURST
PIN = "2468"
ALLIANCE, MERCHANT, DAY = 1, 20, 86400
_CSRF = re.compile(rb'name="csrf" value="([^"]+)"')
_COOKIE = re.compile(r"(loopspot_staff=[^;]+)")


def prepare_flash(flash: Path, spent: int) -> None:
    """The router's issuer key, a coupon plan from a made-up root, a long spent list."""
    ed = backend()
    root = hashlib.sha256(b"bench root").digest()
    issuer = hashlib.sha256(b"bench issuer").digest()
    now = int(time.time())
    cert = certify(ed, root, 1, ALLIANCE, now + 365 * DAY, ed.public_key(issuer))
    campaign = Campaign(
        id=1,
        merchant_id=MERCHANT,
        merchant_name="Lotus Spa",
        title_en="Free foot massage",
        title_zh="免费足疗一次",
        starts_at=now - DAY,
        ends_at=now + 30 * DAY,
        budget=1000,
        per_device=1,
        trigger=Trigger.LOGIN,
        reach=Reach.OWN,
        issuers=(MERCHANT,),
        allotted=1000,
    )
    plan = CouponPlan(
        alliance_id=ALLIANCE,
        merchant_id=MERCHANT,
        site_id=MERCHANT + 1,
        root_key=ed.public_key(root).hex(),
        issuer_certificate=cert.to_text(),
        campaigns=(campaign,),
        staff_pin=hash_pin(PIN),
    )
    flash.mkdir(parents=True, exist_ok=True)
    (flash / "issuer.key").write_bytes(issuer)
    (flash / APPLIED_FILE).write_bytes(RouterConfig(version=1, coupons=plan).encode())
    store = CouponStore(flash)
    try:
        fill_spent(store, spent)
    finally:
        store.close()


def post(ns: str, path: str, fields: dict[str, str], cookie: str = "") -> HttpResponse:
    """POST a form from namespace `ns` to the portal, as the browser submits it."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if cookie:
        headers["Cookie"] = cookie
    return request(ns, "POST", C.PORTAL + path, body=urlencode(fields).encode(), headers=headers)


def csrf_of(page: HttpResponse) -> str:
    found = _CSRF.search(page.body)
    if not found:
        raise C.BenchError(f"no form on the page ({page.status}):\n{page.text[:400]}")
    return found.group(1).decode()


def staff_login(till: Phone) -> tuple[str, str]:
    """Log in on the staff page: (the cookie header, the check form's CSRF token)."""
    login = http_get(till.ns, f"{C.PORTAL}/staff")
    done = post(till.ns, "/staff/login", {"csrf": csrf_of(login), "pin": PIN})
    found = _COOKIE.search(done.headers.get("Set-Cookie", ""))
    if done.status != 303 or not found:
        raise C.BenchError(f"staff login failed: {done.status} {done.text[:400]}")
    cookie = found.group(1)
    page = request(till.ns, "GET", f"{C.PORTAL}/staff", headers={"Cookie": cookie})
    return cookie, csrf_of(page)


def the_coupon(agent: RouterAgent) -> tuple[str, str]:
    """(short code, token) of the coupon the router issued the shopper."""
    db = sqlite3.connect(f"file:{agent.workdir / 'flash' / DB_NAME}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT code, token FROM coupons").fetchall()
    finally:
        db.close()
    if len(rows) != 1:
        raise C.BenchError(f"the shopper holds {len(rows)} coupons, not 1")
    return str(rows[0][0]), str(rows[0][1])


def measure(lab: Lab, agent: RouterAgent, bursts: int) -> dict[str, list[float]]:
    """Seconds from each check's submit to its whole verdict page, typed and scanned."""
    shopper, till = lab.phones
    page = http_get(shopper.ns, f"{C.PORTAL}/portal")
    accepted = post(
        shopper.ns,
        "/portal/accept",
        {"csrf": csrf_of(page), "terms_version": C.TERMS_VERSION, "lang": "en"},
    )
    if accepted.status != 303:
        raise C.BenchError(f"the shopper could not log in: {accepted.status}")
    code, token = the_coupon(agent)
    cookie, csrf = staff_login(till)
    for typed in (pretty(code), token):  # warm up: the issuer's certificate, verified once
        post(till.ns, "/staff/check", {"csrf": csrf, "code": typed}, cookie)
    time.sleep(2.5)
    took: dict[str, list[float]] = {"typed": [], "scanned": []}
    for burst in range(bursts):
        kind, typed = ("typed", pretty(code)) if burst % 2 == 0 else ("scanned", token)
        for _ in range(BURST):
            began = time.perf_counter()
            verdict = post(till.ns, "/staff/check", {"csrf": csrf, "code": typed}, cookie)
            took[kind].append(time.perf_counter() - began)
            if verdict.status != 200 or b'data-valid="yes"' not in verdict.body:
                raise C.BenchError(f"the check failed: {verdict.status} {verdict.text[:400]}")
        C.progress(f"burst {burst + 1}/{bursts} ({kind})")
        time.sleep(BURST + 0.5)  # the staff page's limit refills one check a second
    return took


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run the bursts and print the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.counter_latency", description=__doc__)
    parser.add_argument("--spent", type=int, default=100_000)
    parser.add_argument("--bursts", type=int, default=20)
    args = parser.parse_args(argv)
    C.check_root()
    C.compiled_as_packaged()
    with C.open_lab(phones=2) as lab:
        workdir = lab.workdir / "agent"
        agent = RouterAgent(lab, {"cloud": cloud_section(workdir)}, **C.SHIPPED_OPTIONS)
        prepare_flash(workdir / "flash", args.spent)
        agent.start(timeout=120.0)
        try:
            took = measure(lab, agent, args.bursts)
        finally:
            C.stop_agent(agent)
    figures: dict[str, object] = {"spent": args.spent}
    rows = []
    for kind, values in took.items():
        p50, p99 = C.percentile(values, 50), C.percentile(values, 99)
        figures[kind] = {"p50_ms": round(p50 * 1000, 1), "p99_ms": round(p99 * 1000, 1)}
        rows.append([kind, len(values), C.ms(p50), C.ms(p99), "yes" if p99 <= GOAL else "NO"])
    C.report(
        f"Staff page: submit to verdict page, {args.spent:,} coupons on the spent list",
        ["code", "checks", "p50 (ms)", "p99 (ms)", "p99 <= 50 ms"],
        rows,
    )
    return figures


if __name__ == "__main__":
    main()
