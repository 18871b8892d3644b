"""The shopper's coupon pages: new coupons when online, the wallet, a coupon's QR, the move."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from agent.coupons.shortcode import pretty
from tests.agent.coupons.helpers import RESTAURANT, SPA
from tests.agent.portal.shop import NEW_ADDRESS, PHONE, Cloud, csrf_of, open_shop

MOVE_CODE = re.compile(r'id="move-code-value">([2-9A-Z]{5}-[2-9A-Z]{5})<')


async def test_online_page_lists_the_coupons_this_login_gave(tmp_path: Path) -> None:
    async with open_shop(tmp_path, RESTAURANT) as shop:
        online = await shop.go_online()
        (held,) = await shop.desk.wallet(PHONE)
        assert 'id="new-coupons"' in online
        assert "Spa 20% off" in online  # the restaurant hands out the spa's coupon
        assert pretty(held.code) in online
        assert 'href="/portal/wallet?lang=en"' in online
        _, again = await shop.page("/portal/online?lang=zh")
        assert "优惠 1" in again and "您刚获得的优惠券" in again


async def test_a_portal_without_coupons_shows_no_wallet_and_no_staff_page(
    tmp_path: Path,
) -> None:
    async with open_shop(tmp_path, RESTAURANT, coupons=False) as shop:
        online = await shop.go_online()
        assert 'id="online"' in online
        assert "new-coupons" not in online and "wallet-link" not in online
        for path in ("/portal/wallet", "/staff"):
            response = await shop.http.get(path, allow_redirects=False)
            assert response.status == 302  # the captive handler: back to the portal
            assert response.headers["Location"].startswith("http://192.168.1.1:2050/portal")


async def test_a_coupon_failure_never_keeps_a_phone_offline(tmp_path: Path) -> None:
    async with open_shop(tmp_path, RESTAURANT) as shop:

        async def broken(mac: str) -> tuple[()]:
            raise OSError("flash is full")

        shop.desk.on_login = broken  # type: ignore[method-assign]
        online = await shop.go_online()
        assert 'id="online"' in online
        assert 'id="new-coupons"' not in online
        assert shop.service.book.of_mac(PHONE) is not None


async def test_wallet_shows_every_coupon_with_its_code_and_a_qr_page(tmp_path: Path) -> None:
    async with open_shop(tmp_path, RESTAURANT) as shop:
        await shop.go_online()
        (held,) = await shop.desk.wallet(PHONE)
        response, wallet = await shop.page("/portal/wallet?lang=en")
        assert response.status == 200
        assert pretty(held.code) in wallet and "Spa 20% off" in wallet
        assert "<script" not in wallet and len(wallet.encode()) < 20 * 1024
        link = f"/portal/wallet/{held.coupon.coupon_id}?lang=en"
        assert f'href="{link}"' in wallet
        response, page = await shop.page(link)
        assert response.status == 200
        drawn = re.search(r'<svg viewBox="0 0 (\d+) \1" class="qr">', page)
        assert drawn and "<path" in page
        assert int(drawn.group(1)) <= 57 + 8  # QR version 10 at most, with its quiet zone
        assert pretty(held.code) in page
        assert len(page.encode()) < 20 * 1024


def test_the_qr_code_carries_the_whole_token_in_version_10_at_most() -> None:
    import segno

    from agent.portal.wallet import qr_svg

    token = "A2" * 170 + "Q"  # 341 base32 characters, as a token's text
    code = segno.make(token, error="l", mode="alphanumeric")
    assert isinstance(code.version, int) and code.version <= 10
    svg = str(qr_svg(token, "7KQ2M-X9D4R"))
    assert svg.startswith("<svg viewBox=") and "<title>7KQ2M-X9D4R</title>" in svg


def test_the_daemon_does_not_load_segno_until_a_qr_code_is_drawn() -> None:
    script = (
        "import sys, agent.daemon\n"
        "assert not [m for m in sys.modules if m.startswith('agent.coupons')], 'no desk yet'\n"
        "import agent.portal.wallet, agent.portal.staff\n"
        "assert 'segno' not in sys.modules, 'segno was imported at start'\n"
        "agent.portal.wallet.qr_svg('ABC')\n"
        "assert 'segno' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


async def test_another_phones_coupon_page_shows_nothing_of_it(tmp_path: Path) -> None:
    async with open_shop(tmp_path, RESTAURANT) as shop:
        await shop.go_online()
        (held,) = await shop.desk.wallet(PHONE)
        shop.phone_is(NEW_ADDRESS)
        await shop.go_online()
        response = await shop.http.get(
            f"/portal/wallet/{held.coupon.coupon_id}", allow_redirects=False
        )
        assert response.status == 303
        assert response.headers["Location"].startswith("/portal/wallet")


async def test_a_phone_not_online_is_sent_to_the_portal_first(tmp_path: Path) -> None:
    async with open_shop(tmp_path, RESTAURANT) as shop:
        response = await shop.http.get("/portal/wallet", allow_redirects=False)
        assert response.status == 303
        assert response.headers["Location"].startswith("/portal?")


async def test_the_wallet_at_another_router_comes_from_the_cloud(tmp_path: Path) -> None:
    cloud = Cloud()
    async with open_shop(tmp_path, RESTAURANT) as restaurant:
        await restaurant.go_online()
        (held,) = await restaurant.desk.wallet(PHONE)
        cloud.tokens.append(held.text)
    async with open_shop(tmp_path, SPA, cloud=cloud) as spa:
        await spa.go_online()  # the spa hands it a gym coupon on top
        _, wallet = await spa.page("/portal/wallet?lang=en")
        assert pretty(held.code) in wallet and "Spa 20% off" in wallet
        assert "Free gym day" in wallet


async def test_a_move_code_moves_the_wallet_once(tmp_path: Path) -> None:
    async with open_shop(tmp_path, RESTAURANT) as shop:
        await shop.go_online()
        (old,) = await shop.desk.wallet(PHONE)
        _, wallet = await shop.page("/portal/wallet?lang=en")
        _, shown = await shop.post("/portal/wallet/move-code?lang=en", {"csrf": csrf_of(wallet)})
        found = MOVE_CODE.search(shown)
        assert found, shown
        code = found.group(1)
        assert "It works once, until" in shown

        shop.phone_is(NEW_ADDRESS)  # the phone came back with a new private address
        await shop.go_online()
        _, wallet = await shop.page("/portal/wallet?lang=en")
        response, moved = await shop.post(
            "/portal/wallet/move?lang=en", {"csrf": csrf_of(wallet), "code": code}
        )
        assert response.status == 200
        assert "Done: the valid coupons of your old address are on this phone now." in moved
        held = await shop.desk.wallet(NEW_ADDRESS)  # its own new coupon, and the moved one
        moved_here = [h for h in held if not h.issued_here]
        assert len(held) == 2 and len(moved_here) == 1
        assert pretty(moved_here[0].code) in moved and moved_here[0].code != old.code

        response, again = await shop.post(
            "/portal/wallet/move?lang=zh", {"csrf": csrf_of(moved), "code": code}
        )
        assert response.status == 400
        assert "转移码无效、已使用或已过期" in again
        shop.phone_is(PHONE)
        _, old_wallet = await shop.page("/portal/wallet?lang=en")
        assert "Moved to your new address" in old_wallet


async def test_a_mistyped_move_code_is_explained(tmp_path: Path) -> None:
    async with open_shop(tmp_path, RESTAURANT) as shop:
        await shop.go_online()
        _, wallet = await shop.page("/portal/wallet?lang=en")
        response, page = await shop.post(
            "/portal/wallet/move?lang=en", {"csrf": csrf_of(wallet), "code": "ABCDE-FGHJ0"}
        )
        assert response.status == 400
        assert "A letter or digit of the code is wrong" in page


async def test_wallet_forms_need_the_phones_own_csrf_token(tmp_path: Path) -> None:
    async with open_shop(tmp_path, RESTAURANT) as shop:
        await shop.go_online()
        _, wallet = await shop.page("/portal/wallet?lang=en")
        token = csrf_of(wallet)
        response, _ = await shop.post("/portal/wallet/move-code", {"csrf": "1.forged"})
        assert response.status == 403
        shop.phone_is(NEW_ADDRESS)
        await shop.go_online()
        response, _ = await shop.post("/portal/wallet/move-code", {"csrf": token})
        assert response.status == 403  # bound to the other address
