"""The staff page: PIN login, the one-step check, one-tap redemption, and what outsiders learn."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from markupsafe import escape

from agent.coupons.desk import Held
from agent.coupons.pin import hash_pin
from agent.coupons.shortcode import code_of, pretty
from agent.coupons.token import NONCE_BYTES, Coupon, certify, sign_coupon
from agent.portal.ratelimit import RateLimiter
from agent.portal.staff import COUNTER, REFUSAL_KEYS
from agent.portal.staff_auth import COOKIE
from tests.agent.coupons.helpers import (
    ALLIANCE,
    BACKEND,
    DAY0,
    RESTAURANT,
    ROOT_SEED,
    SPA,
    seed,
)
from tests.agent.portal.shop import NEW_ADDRESS, PHONE, Cloud, Shop, csrf_of, open_shop
from tests.agent.portal.test_templates import MESSAGES

EN = MESSAGES["en"]


@asynccontextmanager
async def spa_with_a_coupon(tmp: Path, **options: object) -> AsyncIterator[tuple[Shop, Held]]:
    """The spa's router, and the spa coupon the phone got at the restaurant (via the cloud)."""
    cloud = Cloud()
    async with open_shop(tmp, RESTAURANT) as restaurant:
        await restaurant.go_online()
        (held,) = await restaurant.desk.wallet(PHONE)
    cloud.tokens.append(held.text)
    async with open_shop(tmp, SPA, cloud=cloud, **options) as spa:  # type: ignore[arg-type]
        await spa.desk.wallet(PHONE)  # the spa's portal showed the wallet: it knows the code
        yield spa, held


async def test_staff_log_in_check_a_typed_code_and_redeem_it_once(tmp_path: Path) -> None:
    async with spa_with_a_coupon(tmp_path) as (spa, held):
        response, page = await spa.staff_login()
        assert response.status == 200 and 'id="check-form"' in page
        response, verdict = await spa.staff_check(pretty(held.code).lower())
        assert response.status == 200
        assert 'data-valid="yes"' in verdict and "Spa 20% off" in verdict
        assert 'data-on-wifi="no"' in verdict
        assert 'id="redeem"' in verdict
        response, done = await spa.staff_check(held.code, "redeem")
        assert response.status == 200 and 'data-redeemed="yes"' in done
        assert EN["verdict_redeemed"] in done
        response, again = await spa.staff_check(held.code, "redeem")  # a second tap, or till
        assert response.status == 409
        assert 'data-refusal="refusal_spent"' in again and EN["refusal_spent"] in again


async def test_a_scanned_token_from_another_router_is_checked_and_redeemed(tmp_path: Path) -> None:
    async with open_shop(tmp_path, RESTAURANT) as restaurant:
        await restaurant.go_online()
        (held,) = await restaurant.desk.wallet(PHONE)
    async with open_shop(tmp_path, SPA) as spa:  # offline, and it never saw this coupon
        await spa.staff_login()
        _, verdict = await spa.staff_check(held.text)
        assert 'data-valid="yes"' in verdict and pretty(held.code) in verdict
        _, done = await spa.staff_check(held.text, "redeem")
        assert 'data-redeemed="yes"' in done


async def test_the_verdict_says_whether_the_phone_is_on_the_wifi_now(tmp_path: Path) -> None:
    async with spa_with_a_coupon(tmp_path) as (spa, held):
        await spa.go_online()  # the shopper is at the spa, on its WiFi
        await spa.staff_login()
        _, verdict = await spa.staff_check(held.code)
        assert 'data-on-wifi="yes"' in verdict and escape(EN["verdict_on_wifi"]) in verdict


def _forged(text: str) -> str:
    middle = len(text) // 2
    return text[:middle] + ("B" if text[middle] != "B" else "C") + text[middle + 1 :]


def _issued_after_its_certificate(merchant: int) -> str:
    router = "router-old"
    cert = certify(BACKEND, ROOT_SEED, 7, ALLIANCE, DAY0 - 10, BACKEND.public_key(seed(router)))
    unsigned = Coupon(cert, 1, merchant, "ab" * 16, DAY0, DAY0 + 86400, b"\0" * NONCE_BYTES)
    return sign_coupon(BACKEND, seed(router), unsigned).to_text()


Setup = Callable[[Shop, Held], Awaitable[str]]


async def _unknown(spa: Shop, held: Held) -> str:
    return pretty(code_of("0" * 32))


async def _mistyped(spa: Shop, held: Held) -> str:
    return held.code[:-1] + ("2" if held.code[-1] != "2" else "3")


async def _forged_token(spa: Shop, held: Held) -> str:
    return _forged(held.text)


async def _other_merchant(spa: Shop, held: Held) -> str:
    await spa.go_online()  # the spa hands out the gym's coupon
    gym = [h for h in await spa.desk.wallet(PHONE) if h.issued_here]
    return gym[0].code


async def _spent(spa: Shop, held: Held) -> str:
    await spa.desk.redeem(held.code)
    return held.code


async def _moved(spa: Shop, held: Held) -> str:
    code, _ = await spa.desk.start_move(PHONE)
    await spa.desk.finish_move(NEW_ADDRESS, code)
    return held.code


async def _expired(spa: Shop, held: Held) -> str:
    spa.clock.now = held.coupon.not_after + 1
    return held.code


async def _not_yet_valid(spa: Shop, held: Held) -> str:
    spa.clock.now = held.coupon.not_before - 60
    return held.code


async def _issuer_expired(spa: Shop, held: Held) -> str:
    return _issued_after_its_certificate(SPA)


REASONS: dict[str, tuple[Setup, str]] = {
    "unknown code": (_unknown, "refusal_not_a_coupon"),
    "mistyped code": (_mistyped, "refusal_not_a_coupon"),
    "forged or altered": (_forged_token, "refusal_forged"),
    "for another merchant": (_other_merchant, "refusal_other_merchant"),
    "spent": (_spent, "refusal_spent"),
    "moved to the new address": (_moved, "refusal_moved"),
    "expired": (_expired, "refusal_expired"),
    "not yet valid": (_not_yet_valid, "refusal_not_yet_valid"),
    "issuer expired": (_issuer_expired, "refusal_issuer_expired"),
}


@pytest.mark.parametrize("reason", REASONS)
async def test_staff_see_why_a_code_is_refused_in_their_language(
    tmp_path: Path, reason: str
) -> None:
    setup, key = REASONS[reason]
    async with spa_with_a_coupon(tmp_path) as (spa, held):
        typed = await setup(spa, held)
        await spa.staff_login()
        _, verdict = await spa.staff_check(typed)
        assert 'data-valid="no"' in verdict and f'data-refusal="{key}"' in verdict
        assert escape(EN[key]) in verdict
        assert 'id="redeem"' not in verdict
        _, form = await spa.page("/staff?lang=zh")
        response = await spa.http.post(
            "/staff/check?lang=zh", data={"csrf": csrf_of(form), "code": typed}
        )
        assert escape(MESSAGES["zh"][key]) in await response.text()


async def test_a_typo_gets_the_desks_hint(tmp_path: Path) -> None:
    async with spa_with_a_coupon(tmp_path) as (spa, _held):
        await spa.staff_login()
        _, verdict = await spa.staff_check("ABCDE-FGHJ0")
        assert 'id="hint"' in verdict and "codes never use 0" in verdict


def test_every_refusal_has_staff_words_in_both_languages() -> None:
    from agent.coupons.counter import Refusal

    assert set(REFUSAL_KEYS) == set(Refusal)
    for key in REFUSAL_KEYS.values():
        assert MESSAGES["en"][key] and MESSAGES["zh"][key]


async def test_wrong_pins_are_refused_and_five_lock_the_client_out(tmp_path: Path) -> None:
    async with spa_with_a_coupon(tmp_path) as (spa, _):
        for _ in range(4):
            response, page = await spa.staff_login("1111")
            assert response.status == 403 and EN["staff_wrong_pin"] in page
        response, page = await spa.staff_login("1111")
        assert response.status == 429 and response.headers["Retry-After"] == "300"
        response, _ = await spa.staff_login()  # the right PIN waits too
        assert response.status == 429
        assert COOKIE not in {c.key for c in spa.http.session.cookie_jar}
        spa.clock.now += 301
        response, page = await spa.staff_login()
        assert response.status == 200 and 'id="check-form"' in page


async def test_wrong_pins_sent_side_by_side_meet_the_lockout_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.coupons.pin import pin_matches
    from agent.portal import staff

    checked: list[str] = []

    def counted(stored: str, typed: str) -> bool:
        checked.append(typed)
        return pin_matches(stored, typed)

    monkeypatch.setattr(staff, "pin_matches", counted)
    async with spa_with_a_coupon(tmp_path) as (spa, _held):
        _, login = await spa.page("/staff")
        token = csrf_of(login)
        answers = await asyncio.gather(
            *(spa.post("/staff/login", {"csrf": token, "pin": f"{1000 + n}"}) for n in range(12))
        )
        statuses = sorted(response.status for response, _ in answers)
        assert statuses == [403] * 4 + [429] * 8
        assert len(checked) == 5  # the sixth and later were never checked


async def test_the_staff_cookie_is_signed_httponly_strict_and_only_for_the_staff_page(
    tmp_path: Path,
) -> None:
    async with spa_with_a_coupon(tmp_path) as (spa, _):
        _, login = await spa.page("/staff")
        response = await spa.http.post(
            "/staff/login", data={"csrf": csrf_of(login), "pin": "2468"}, allow_redirects=False
        )
        assert response.status == 303
        cookie = response.cookies[COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        assert cookie["path"] == "/staff" and not cookie["secure"]
        assert int(cookie["max-age"]) == 12 * 3600
        _, page = await spa.page("/staff")
        assert 'id="check-form"' in page
        sid, expires, signature = cookie.value.split(".")
        spa.http.session.cookie_jar.clear()
        spa.http.session.cookie_jar.update_cookies({COOKIE: cookie.value})
        _, page = await spa.page("/staff")
        assert 'id="check-form"' in page  # the cookie, set by hand, is the session
        spa.http.session.cookie_jar.clear()
        spa.http.session.cookie_jar.update_cookies(
            {COOKIE: f"{sid}.{int(expires) - 60}.{signature}"}
        )
        _, page = await spa.page("/staff")
        assert 'id="staff-login"' in page  # a cookie with a changed expiry is no session


async def test_a_new_pin_from_the_cloud_logs_every_till_out(tmp_path: Path) -> None:
    async with spa_with_a_coupon(tmp_path) as (spa, held):
        await spa.staff_login()
        _, page = await spa.page("/staff")
        token = csrf_of(page)
        plan = spa.desk.plan
        assert plan is not None
        spa.desk.apply_plan(
            dataclasses.replace(plan.plan, staff_pin=hash_pin("9753", iterations=1000))
        )
        response, page = await spa.post("/staff/check", {"csrf": token, "code": held.code})
        assert response.status == 403 and 'id="staff-login"' in page
        response, page = await spa.staff_login("9753")
        assert response.status == 200 and 'id="check-form"' in page


async def test_logging_out_ends_the_session(tmp_path: Path) -> None:
    async with spa_with_a_coupon(tmp_path) as (spa, held):
        await spa.staff_login()
        cookie = next(c.value for c in spa.http.session.cookie_jar if c.key == COOKIE)
        _, page = await spa.page("/staff")
        response, page = await spa.post("/staff/logout", {"csrf": csrf_of(page)})
        assert 'id="staff-login"' in page
        spa.http.session.cookie_jar.clear()
        spa.http.session.cookie_jar.update_cookies({COOKIE: cookie})  # a copy kept
        response, page = await spa.post("/staff/check", {"csrf": "x", "code": held.code})
        assert response.status == 403 and held.code not in page


async def test_without_a_staff_session_every_code_gets_the_same_answer(tmp_path: Path) -> None:
    async with spa_with_a_coupon(tmp_path) as (spa, held):
        answers = set()
        for typed in (held.code, held.text, pretty(code_of("0" * 32)), "ABCDE-FGHJ0", ""):
            for action in ("check", "redeem"):
                response, page = await spa.post(f"/staff/{action}", {"csrf": "", "code": typed})
                answers.add((response.status, page))
        assert len(answers) == 1
        ((status, page),) = answers
        assert status == 403 and 'id="staff-login"' in page and "verdict" not in page
        assert (await spa.desk.check(held.code)).verdict.valid  # nothing was redeemed


async def test_staff_forms_need_the_sessions_own_csrf_token(tmp_path: Path) -> None:
    async with spa_with_a_coupon(tmp_path) as (spa, held):
        _, login = await spa.page("/staff")
        response, _ = await spa.post("/staff/login", {"csrf": "1.forged", "pin": "2468"})
        assert response.status == 403
        await spa.staff_login()
        _, page = await spa.page("/staff")
        first_sessions_token = csrf_of(page)
        response, _ = await spa.post("/staff/redeem", {"csrf": csrf_of(login), "code": held.code})
        assert response.status == 403  # the login form's token is not this session's
        spa.http.session.cookie_jar.clear()
        await spa.staff_login()
        response, _ = await spa.post(
            "/staff/redeem", {"csrf": first_sessions_token, "code": held.code}
        )
        assert response.status == 403
        assert (await spa.desk.check(held.code)).verdict.valid


async def test_checks_are_rate_limited_per_client(tmp_path: Path) -> None:
    async with spa_with_a_coupon(tmp_path) as (spa, held):
        await spa.staff_login()
        for _ in range(10):
            response, _ = await spa.staff_check(held.code)
            assert response.status == 200
        response, page = await spa.staff_check(held.code)
        assert response.status == 429 and 1 <= int(response.headers["Retry-After"]) <= 2
        assert EN["staff_slow_down"] in page
        spa.http.session.cookie_jar.clear()
        await spa.staff_login()  # a new session from the same client is still limited
        response, _ = await spa.staff_check(held.code)
        assert response.status == 429
        spa.clock.now += 1
        response, _ = await spa.staff_check(held.code)
        assert response.status == 200


async def test_checks_are_rate_limited_per_staff_session(tmp_path: Path) -> None:
    async with spa_with_a_coupon(tmp_path) as (spa, held):
        spa.http.app[COUNTER].by_client = RateLimiter(1000, 1000)  # the client: unlimited
        await spa.staff_login()
        for _ in range(10):
            await spa.staff_check(held.code)
        response, _ = await spa.staff_check(held.code, "redeem")
        assert response.status == 429
        assert (await spa.desk.check(held.code)).verdict.valid
        spa.http.session.cookie_jar.clear()
        await spa.staff_login()
        response, _ = await spa.staff_check(held.code)
        assert response.status == 200


async def test_without_a_pin_the_page_says_it_is_set_from_the_cloud(tmp_path: Path) -> None:
    async with spa_with_a_coupon(tmp_path, pin=None) as (spa, _held):
        _, page = await spa.page("/staff")
        assert EN["staff_no_pin"] in page and 'id="staff-login"' not in page
        response, _ = await spa.post("/staff/login", {"csrf": "", "pin": ""})
        assert response.status == 403


async def test_staff_pages_load_only_their_own_script_and_refuse_framing(tmp_path: Path) -> None:
    async with spa_with_a_coupon(tmp_path) as (spa, _held):
        response, page = await spa.page("/staff")
        assert "<script" not in page  # no script before login
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        await spa.staff_login()
        _, page = await spa.page("/staff")
        assert '<script src="/static/staff.js" defer></script>' in page
        response, script = await spa.page("/static/staff.js")
        assert response.status == 200 and "BarcodeDetector" in script


async def test_the_pin_is_checked_on_a_thread_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.coupons.pin import pin_matches
    from agent.portal import staff

    threads: list[str] = []

    def watched(stored: str, typed: str) -> bool:
        threads.append(threading.current_thread().name)
        return pin_matches(stored, typed)

    monkeypatch.setattr(staff, "pin_matches", watched)
    async with spa_with_a_coupon(tmp_path) as (spa, _held):
        response, _ = await spa.staff_login("1111")
        assert response.status == 403
        response, _ = await spa.staff_login()
        assert response.status == 200
    assert len(threads) == 2 and all(name.startswith("staff-pin") for name in threads)
