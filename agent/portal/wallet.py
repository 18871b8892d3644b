"""The shopper's wallet: every coupon the phone holds, one coupon's QR code, the wallet move.

Shopper pages: no JavaScript, no cookies; the forms carry a CSRF token bound to the MAC.
A QR code is about 5 KB of SVG, so the wallet lists the coupons and each one's own page
(/portal/wallet/<coupon_id>) draws its code: a wallet of any size stays under 20 KB.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from aiohttp import web
from markupsafe import Markup

from agent.clients import Client
from agent.coupons.desk import CouponDesk, Held, MoveError
from agent.coupons.shortcode import ShortCodeError, parse_code, pretty
from agent.portal.app import DESK, PORTAL, Portal, _client
from agent.portal.csrf import check_token, issue_token
from agent.portal.i18n import other_language
from agent.portal.offers import coupons_on, views_of

if TYPE_CHECKING:
    from agent.sessions import Session

WALLET = "/portal/wallet"
QR_BORDER = 4  # modules of quiet zone around the code, as the QR standard asks
# The desk's MoveError messages, as keys of messages.json (anything else is shown as is).
MOVE_ERRORS = {
    "this code is unknown, used already or expired: ask for a new one": "move_error_unknown",
    "this code is for another phone: open it on your new address": "move_error_same_phone",
    "coupons are not set up at this shop": "move_error_off",
}


def qr_svg(text: str, title: str = "") -> Markup:
    """`text` as a QR code in inline SVG (error correction L or better, sized by CSS)."""
    import segno  # only when a coupon is shown: the daemon does not carry it otherwise

    code = segno.make(text, error="l")  # segno picks alphanumeric mode for a token's text
    svg = code.svg_inline(
        scale=1,
        border=QR_BORDER,
        omitsize=True,
        svgclass="qr",
        lineclass=None,
        dark="#000",
        light="#fff",
        title=title or None,
    )
    return Markup(svg)  # segno's own output: path data and an escaped title


async def _shopper(request: web.Request) -> tuple[Portal, Client, Session]:
    """The portal, the phone and its session; a phone not online goes to the portal first."""
    portal = request.app[PORTAL]
    client = await _client(request)
    session = portal.service.session_of(client) if client else None
    if client is None or session is None:
        raise web.HTTPSeeOther(f"/portal?lang={portal.language(request)}")
    return portal, client, session


def _render_wallet(
    request: web.Request,
    portal: Portal,
    client: Client,
    held: Iterable[Held],
    *,
    notice: str = "",
    failed: bool = False,
) -> web.Response:
    lang = portal.language(request)
    return portal.render(
        request,
        "wallet.html",
        status=400 if failed else 200,
        coupons=views_of(held, lang),
        coupons_on=coupons_on(request.app.get(DESK)),
        csrf_token=issue_token(portal.csrf_key, client.mac, portal.service.clock()),
        notice=notice,
        notice_failed=failed,
        lang_switch_url=f"{WALLET}?lang={other_language(lang)}",
    )


async def show_wallet(request: web.Request) -> web.StreamResponse:
    """Every coupon the phone holds, with its code, state and a link to its QR code."""
    portal, client, _ = await _shopper(request)
    desk = request.app.get(DESK)
    held = await desk.wallet(client.mac) if desk is not None else ()
    return _render_wallet(request, portal, client, held)


async def show_coupon(request: web.Request) -> web.StreamResponse:
    """One coupon of this phone's wallet, with the QR code of its whole token."""
    portal, client, _ = await _shopper(request)
    desk = request.app.get(DESK)
    wanted = request.match_info["coupon_id"]
    lang = portal.language(request)
    held = await desk.wallet(client.mac) if desk is not None else ()
    found = next((h for h in views_of(held, lang) if h.coupon_id == wanted), None)
    if found is None:  # another phone's coupon, or one that moved: the same answer
        raise web.HTTPSeeOther(f"{WALLET}?lang={lang}")
    return portal.render(
        request,
        "wallet_coupon.html",
        coupon=found,
        qr=qr_svg(found.token, found.code) if found.valid else Markup(""),
    )


async def _form(request: web.Request, portal: Portal, client: Client) -> dict[str, str] | None:
    """The posted form's fields, or None when its CSRF token is not this phone's."""
    form = await request.post()
    token = form.get("csrf")
    if not check_token(
        portal.csrf_key, client.mac, str(token) if token else None, portal.service.clock()
    ):
        return None
    return {key: str(value) for key, value in form.items() if isinstance(value, str)}


def _expired_form(request: web.Request, portal: Portal) -> web.Response:
    t = portal.messages[portal.language(request)]
    return portal.render(
        request, "error.html", status=403, title=t["error_title"], message=t["error_expired_form"]
    )


async def start_move(request: web.Request) -> web.StreamResponse:
    """The old address asks for a one-time code that moves its wallet; show it and its expiry."""
    portal, client, _ = await _shopper(request)
    if await _form(request, portal, client) is None:
        return _expired_form(request, portal)
    desk = request.app.get(DESK)
    if desk is None:
        raise web.HTTPSeeOther(f"{WALLET}?lang={portal.language(request)}")
    code, expires = await desk.start_move(client.mac)
    lang = portal.language(request)
    return portal.render(
        request,
        "wallet_move.html",
        move_code=pretty(code),
        move_expires=int(expires),
        lang_switch_url=f"{WALLET}?lang={other_language(lang)}",
    )


async def finish_move(request: web.Request) -> web.StreamResponse:
    """The new address types the code: the wallet moves here, or the page says why not."""
    portal, client, _ = await _shopper(request)
    fields = await _form(request, portal, client)
    if fields is None:
        return _expired_form(request, portal)
    desk = request.app.get(DESK)
    t = portal.messages[portal.language(request)]
    typed = fields.get("code", "")[:64]
    try:
        parse_code(typed)
    except ShortCodeError:
        return await _refused_move(request, portal, client, desk, t["move_error_mistyped"])
    if desk is None:
        return await _refused_move(request, portal, client, desk, t["move_error_off"])
    try:
        moved = await desk.finish_move(client.mac, typed)
    except MoveError as error:
        key = MOVE_ERRORS.get(str(error))
        return await _refused_move(request, portal, client, desk, t[key] if key else str(error))
    return _render_wallet(request, portal, client, moved, notice=t["move_done"])


async def _refused_move(
    request: web.Request, portal: Portal, client: Client, desk: CouponDesk | None, why: str
) -> web.Response:
    held = await desk.wallet(client.mac) if desk is not None else ()
    return _render_wallet(request, portal, client, held, notice=why, failed=True)


def add_routes(app: web.Application) -> None:
    """The wallet's pages, on the portal `app`."""
    app.router.add_get(WALLET, show_wallet)
    app.router.add_get(WALLET + r"/{coupon_id:[0-9a-f]{32}}", show_coupon)
    app.router.add_post(WALLET + "/move-code", start_move)
    app.router.add_post(WALLET + "/move", finish_move)
