"""The staff page on the shop LAN: log in with the staff PIN, check a code, redeem it.

Server-rendered and usable on a phone; a small script adds a camera scan where the
browser can (static/staff.js), and every step works without it. Whoever has no staff
session gets one answer for any check or redemption, so nothing tells them which codes
exist; staff see why a code is refused.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from agent.coupons.counter import Refusal
from agent.coupons.desk import Check, CouponDesk
from agent.coupons.pin import pin_matches
from agent.coupons.shortcode import pretty
from agent.portal.app import DESK, PORTAL, Portal
from agent.portal.csrf import check_token, issue_token
from agent.portal.i18n import other_language
from agent.portal.offers import Offer
from agent.portal.ratelimit import RateLimiter
from agent.portal.staff_auth import COOKIE, PinLockout, StaffSessions

STAFF = "/staff"
CHECK_RATE = 1.0  # checks and redemptions a second, per client and per staff session
CHECK_BURST = 10
MAX_TYPED = 400  # a pasted token is 341 characters
STAFF_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; media-src 'self' blob: mediastream:; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",  # no page of another site may frame the redeem button
}
REFUSAL_KEYS = {
    Refusal.NOT_A_COUPON: "refusal_not_a_coupon",
    Refusal.FORGED: "refusal_forged",
    Refusal.OTHER_MERCHANT: "refusal_other_merchant",
    Refusal.SPENT: "refusal_spent",
    Refusal.MOVED: "refusal_moved",
    Refusal.EXPIRED: "refusal_expired",
    Refusal.NOT_YET_VALID: "refusal_not_yet_valid",
    Refusal.OTHER_DEVICE: "refusal_other_device",
    Refusal.ISSUER_EXPIRED: "refusal_issuer_expired",
}


@dataclass
class Counter:
    """The staff page's state: sessions, the PIN lockout, the limits on checks."""

    sessions: StaffSessions
    lockout: PinLockout = field(default_factory=PinLockout)
    by_client: RateLimiter = field(default_factory=lambda: RateLimiter(CHECK_RATE, CHECK_BURST))
    by_session: RateLimiter = field(default_factory=lambda: RateLimiter(CHECK_RATE, CHECK_BURST))
    _pins: ThreadPoolExecutor | None = None

    async def pin_matches(self, stored: str, typed: str) -> bool:
        """Check a typed PIN on a thread of its own, started at the first login.

        PBKDF2 takes a router's CPU a second or more: not on the loop, and not on the
        daemon's one "io" thread, which presence and flash writes share.
        """
        if self._pins is None:
            self._pins = ThreadPoolExecutor(1, thread_name_prefix="staff-pin")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pins, pin_matches, stored, typed)


COUNTER: web.AppKey[Counter] = web.AppKey("staff-counter", Counter)


def _mode(desk: CouponDesk | None, sid: str | None) -> str:
    """What the staff page offers: off (no coupons), no_pin, login, or check."""
    if desk is None or desk.plan is None:
        return "off"
    if not desk.staff_pin:
        return "no_pin"
    return "login" if sid is None else "check"


def _login_subject(request: web.Request) -> str:
    return f"staff-login|{request.remote or '?'}"


def _session_subject(sid: str) -> str:
    return f"staff|{sid}"


def _render(request: web.Request, name: str, status: int = 200, **extra: Any) -> web.Response:
    portal = request.app[PORTAL]
    lang = portal.language(request)
    response = portal.render(
        request,
        name,
        status=status,
        staff_path=STAFF,
        lang_switch_url=f"{STAFF}?lang={other_language(lang)}",
        **extra,
    )
    response.headers.update(STAFF_HEADERS)
    return response


def _page(
    request: web.Request, sid: str | None, status: int = 200, notice: str = "", **extra: Any
) -> web.Response:
    """The staff page as it stands for this request: the login, or the check form."""
    portal = request.app[PORTAL]
    mode = _mode(request.app.get(DESK), sid)
    subject = _login_subject(request) if sid is None else _session_subject(sid)
    return _render(
        request,
        "staff.html",
        status,
        mode=mode,
        notice=notice,
        csrf_token=issue_token(portal.csrf_key, subject, portal.service.clock()),
        **extra,
    )


def _sid(request: web.Request) -> str | None:
    portal = request.app[PORTAL]
    desk = request.app.get(DESK)
    return request.app[COUNTER].sessions.sid_of(
        request.cookies.get(COOKIE), portal.service.clock(), desk.staff_pin if desk else ""
    )


async def _fields(request: web.Request, portal: Portal, subject: str) -> dict[str, str] | None:
    """The posted form, or None when its CSRF token was not issued to `subject`."""
    form = await request.post()
    token = form.get("csrf")
    if not check_token(
        portal.csrf_key,
        subject,
        str(token) if isinstance(token, str) else None,
        portal.service.clock(),
    ):
        return None
    return {key: value for key, value in form.items() if isinstance(value, str)}


def _text(portal: Portal, request: web.Request, key: str) -> str:
    return portal.messages[portal.language(request)][key]


async def show(request: web.Request) -> web.StreamResponse:
    """The staff page: the PIN form, or the check form once logged in."""
    return _page(request, _sid(request))


async def login(request: web.Request) -> web.StreamResponse:
    """Check the PIN; the right one opens a staff session, wrong ones lock the client out."""
    portal = request.app[PORTAL]
    counter = request.app[COUNTER]
    desk = request.app.get(DESK)
    now = portal.service.clock()
    client = request.remote or "?"
    wait = counter.lockout.retry_after(client, now)
    if wait:
        return _locked(request, wait)
    fields = await _fields(request, portal, _login_subject(request))
    if fields is None:
        return _page(request, None, 403, _text(portal, request, "staff_form_expired"))
    if desk is None or not desk.staff_pin:
        return _page(request, None, 403)
    pin = fields.get("pin", "")[:64]
    # Counted as wrong before the check ends, so tries sent side by side meet the lockout too.
    locked_for = counter.lockout.wrong(client, now)
    if not await counter.pin_matches(desk.staff_pin, pin):
        if locked_for:
            return _locked(request, locked_for)
        return _page(request, None, 403, _text(portal, request, "staff_wrong_pin"))
    counter.lockout.right(client)
    _, cookie = counter.sessions.open(now, desk.staff_pin)
    response = web.HTTPSeeOther(f"{STAFF}?lang={portal.language(request)}")
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=counter.sessions.lifetime,
        path=STAFF,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    raise response


def _locked(request: web.Request, seconds: int) -> web.Response:
    portal = request.app[PORTAL]
    minutes = max(1, (seconds + 59) // 60)
    notice = _text(portal, request, "staff_locked").replace("{minutes}", str(minutes))
    response = _page(request, None, 429, notice)
    response.headers["Retry-After"] = str(seconds)
    return response


async def _counter_step(request: web.Request) -> tuple[CouponDesk, str, str] | web.Response:
    """(desk, session id, typed code) for a check or redemption, or the page refusing it."""
    portal = request.app[PORTAL]
    counter = request.app[COUNTER]
    sid = _sid(request)
    desk = request.app.get(DESK)
    if sid is None or desk is None:  # the same answer whatever the code: the form is unread
        return _page(request, None, 403, _text(portal, request, "staff_login_first"))
    now = portal.service.clock()
    client = request.remote or "?"
    for limiter, key in ((counter.by_client, client), (counter.by_session, sid)):
        if not limiter.allow(key, now):
            response = _page(request, sid, 429, _text(portal, request, "staff_slow_down"))
            response.headers["Retry-After"] = str(limiter.retry_after(key))
            return response
    fields = await _fields(request, portal, _session_subject(sid))
    if fields is None:
        return _page(request, sid, 403, _text(portal, request, "staff_form_expired"))
    return desk, sid, fields.get("code", "").strip()[:MAX_TYPED]


def _verdict(
    request: web.Request, sid: str, typed: str, check: Check, *, redeemed: bool = False
) -> web.Response:
    portal = request.app[PORTAL]
    coupon = check.verdict.coupon
    refusal = check.verdict.refusal
    return _render(
        request,
        "staff_verdict.html",
        409 if redeemed and not check.verdict.valid else 200,
        valid=check.verdict.valid,
        redeemed=redeemed and check.verdict.valid,
        tried_redeem=redeemed,
        refusal_key=REFUSAL_KEYS.get(refusal, "refusal_not_a_coupon") if refusal else "",
        hint=check.hint,
        known=coupon is not None,
        offer=Offer.of(check.campaign, portal.language(request)),
        code=pretty(check.code) if check.code else "",
        not_before=coupon.not_before if coupon else None,
        not_after=coupon.not_after if coupon else None,
        on_wifi=check.on_wifi,
        typed=typed,
        csrf_token=issue_token(portal.csrf_key, _session_subject(sid), portal.service.clock()),
    )


async def check(request: web.Request) -> web.StreamResponse:
    """One step: whether the typed code or scanned token is valid, why not, what it gives."""
    step = await _counter_step(request)
    if isinstance(step, web.Response):
        return step
    desk, sid, typed = step
    return _verdict(request, sid, typed, await desk.check(typed))


async def redeem(request: web.Request) -> web.StreamResponse:
    """Redeem it: 'redeemed', or the refusal (spent, when another till was first)."""
    step = await _counter_step(request)
    if isinstance(step, web.Response):
        return step
    desk, sid, typed = step
    return _verdict(request, sid, typed, await desk.redeem(typed), redeemed=True)


async def logout(request: web.Request) -> web.StreamResponse:
    """End the staff session."""
    portal = request.app[PORTAL]
    sid = _sid(request)
    if sid is not None:
        if await _fields(request, portal, _session_subject(sid)) is None:
            return _page(request, sid, 403, _text(portal, request, "staff_form_expired"))
        desk = request.app.get(DESK)
        request.app[COUNTER].sessions.end(
            request.cookies.get(COOKIE), portal.service.clock(), desk.staff_pin if desk else ""
        )
    response = web.HTTPSeeOther(f"{STAFF}?lang={portal.language(request)}")
    response.del_cookie(COOKIE, path=STAFF)
    raise response


def add_routes(app: web.Application) -> None:
    """The staff page's routes, on the portal `app`."""
    app[COUNTER] = Counter(StaffSessions(app[PORTAL].csrf_key))
    app.router.add_get(STAFF, show)
    app.router.add_post(STAFF + "/login", login)
    app.router.add_post(STAFF + "/check", check)
    app.router.add_post(STAFF + "/redeem", redeem)
    app.router.add_post(STAFF + "/logout", logout)
