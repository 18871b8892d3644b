"""Coupons around the loop: restaurant -> spa -> gym -> restaurant, across three real routers.

Each shop is its own router in its own lab, all of one alliance with one SSID, so the
shopper's phone keeps its MAC from shop to shop. A real Mosquitto, ingest worker and
database make the cloud. Staff use the staff page on a phone of the shop's LAN.
"""

from __future__ import annotations

import re
import time

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from lab.client import HttpResponse, http_post_form
from lab.polling import wait_until
from lab.topology import Phone
from tests.lab.alliance_fixtures import STAFF_PIN, Alliance, Shop
from tests.lab.coupon_steps import Counter, codes_on, online_page, wallet
from tests.lab.portal_steps import PORTAL, accept_terms, csrf_of

NEW_ADDRESS = "02:aa:bb:cc:dd:02"

pytestmark = pytest.mark.lab
# Three routers and a cloud take a while to set up: the SQLite cloud, but for the double spend,
# whose flag is decided by the database, on PostgreSQL too.
on_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def logs_in(shop: Shop) -> list[str]:
    """The shopper accepts the terms at `shop`; the codes of the coupons given there."""
    return logs_in_as(shop, shop.shopper)


def logs_in_as(shop: Shop, phone: Phone) -> list[str]:
    """`phone` accepts the terms at `shop`; the codes of the coupons given there."""
    assert accept_terms(phone).status == 303
    return codes_on(online_page(phone))


def wallet_shows(shop: Shop, code: str, within: float = 15.0) -> bool:
    """True once the shopper's wallet at `shop` lists `code` (synced through the cloud)."""
    return wait_until(lambda: code in codes_on(wallet(shop.shopper)), within, step=0.5)


def staff_at(shop: Shop) -> Counter:
    counter = Counter(shop.till)
    assert counter.log_in(STAFF_PIN).status in (200, 303)
    return counter


def the_loop(alliance: Alliance) -> tuple[Shop, Shop, Shop]:
    restaurant = alliance.open_shop("Restaurant")
    spa = alliance.open_shop("Spa")
    gym = alliance.open_shop("Gym")
    alliance.campaign("Spa", "Restaurant", "Spa 20% off")
    alliance.campaign("Gym", "Spa", "Free gym day")
    alliance.campaign("Restaurant", "Gym", "Free dessert")
    alliance.push_plans()
    return restaurant, spa, gym


def rows(alliance: Alliance, sql: str) -> list[tuple[object, ...]]:
    with Session(alliance.cloud.engine) as session:
        return [tuple(r) for r in session.execute(text(sql))]


@on_sqlite
def test_a_phone_walks_the_loop_and_each_shop_redeems_the_coupon_the_last_one_gave(
    alliance: Alliance,
) -> None:
    restaurant, spa, gym = the_loop(alliance)

    (spa_coupon,) = logs_in(restaurant)
    (gym_coupon,) = logs_in(spa)
    assert wallet_shows(spa, spa_coupon)  # issued at the restaurant, fetched from the cloud
    counter = staff_at(spa)
    verdict = counter.check(spa_coupon)
    assert verdict.valid and verdict.on_wifi, verdict.text[-1500:]
    assert counter.redeem(spa_coupon).redeemed
    assert counter.check(spa_coupon).refusal == "refusal_spent"

    (restaurant_coupon,) = logs_in(gym)
    assert wallet_shows(gym, gym_coupon)
    assert staff_at(gym).redeem(gym_coupon).redeemed
    # 4. a restaurant coupon shown at the gym is refused, and says why
    assert staff_at(gym).check(restaurant_coupon).refusal == "refusal_other_merchant"

    assert wallet_shows(restaurant, restaurant_coupon)
    assert staff_at(restaurant).redeem(restaurant_coupon).redeemed  # the loop is closed

    def flows() -> set[tuple[str, str, int]]:
        found = alliance.cloud.cli("flows", "--alliance", "Harbour Street")["flows"]
        return {(f["from_merchant"], f["to_merchant"], f["redemptions"]) for f in found}

    expected = {("Restaurant", "Spa", 1), ("Spa", "Gym", 1), ("Gym", "Restaurant", 1)}
    assert wait_until(lambda: flows() == expected, 15), flows()
    for shop in (restaurant, spa, gym):  # the cloud's replay of the rules agrees
        assert (
            alliance.cloud.cli("coupons", "check", "--router", shop.router_id)["mismatches"] == []
        )


@on_sqlite
def test_a_wallet_from_the_cloud_comes_within_a_second(alliance: Alliance) -> None:
    restaurant, spa, _ = the_loop(alliance)
    (spa_coupon,) = logs_in(restaurant)
    logs_in(spa)
    time.sleep(2)  # the issue event reaches the cloud
    started = time.monotonic()
    assert spa_coupon in codes_on(wallet(spa.shopper))
    assert time.monotonic() - started < 1.5  # the page, with the cloud's answer in it


def test_an_offline_spa_redeems_and_a_second_offline_spa_is_flagged_as_a_double_spend(
    alliance: Alliance,
) -> None:
    restaurant = alliance.open_shop("Restaurant")
    spa = alliance.open_shop("Spa", site="Spa West")
    spa_east = alliance.open_shop("Spa", site="Spa East")
    campaign = alliance.campaign("Spa", "Restaurant", "Spa 20% off")
    alliance.push_plans()
    (coupon,) = logs_in(restaurant)
    assert logs_in(spa) == []  # the spa hands out no coupons of its own here
    assert wallet_shows(spa, coupon)  # the spa's router now knows it
    token = str(rows(alliance, "SELECT token FROM coupons")[0][0])  # scanning its QR code

    spa.cut_uplink()
    spa_east.cut_uplink()
    assert staff_at(spa).redeem(coupon).redeemed  # the internet is down: still works
    time.sleep(1.1)  # the second redemption is the later one
    assert staff_at(spa_east).redeem(token).redeemed  # it cannot know yet
    spa.restore_uplink()
    spa_east.restore_uplink()

    def redemptions() -> list[tuple[object, ...]]:
        return rows(alliance, "SELECT router_id, double_spend FROM redemptions ORDER BY at")

    assert wait_until(lambda: len(redemptions()) == 2, 30), redemptions()
    (first, first_flag), (second, second_flag) = redemptions()
    assert (first, second) == (spa.router_id, spa_east.router_id)
    assert not first_flag and second_flag
    stats = alliance.cloud.cli("campaign", "stats", str(campaign))
    assert stats["double_spends"] == 1 and stats["redeemed"] >= 1


@on_sqlite
def test_a_coupon_redeemed_at_one_spa_is_refused_at_the_merchants_other_spa(
    alliance: Alliance,
) -> None:
    restaurant = alliance.open_shop("Restaurant")
    spa = alliance.open_shop("Spa", site="Spa West")
    spa_east = alliance.open_shop("Spa", site="Spa East")
    alliance.campaign("Spa", "Restaurant", "Spa 20% off")
    alliance.push_plans()
    (coupon,) = logs_in(restaurant)
    assert logs_in(spa) == []
    assert wallet_shows(spa, coupon)
    token = str(rows(alliance, "SELECT token FROM coupons")[0][0])
    assert staff_at(spa).redeem(coupon).redeemed
    counter = staff_at(spa_east)
    assert wait_until(lambda: counter.check(token).refusal == "refusal_spent", 20)


@on_sqlite
def test_a_moved_wallet_shows_up_under_the_new_mac_and_its_code_works_once(
    alliance: Alliance,
) -> None:
    restaurant = alliance.open_shop("Restaurant")
    spa = alliance.open_shop("Spa")
    alliance.campaign("Spa", "Restaurant", "Spa 20% off")
    alliance.push_plans()
    (coupon,) = logs_in(restaurant)
    old = restaurant.shopper
    shown = http_post_form(
        old.ns, f"{PORTAL}/portal/wallet/move-code?lang=en", {"csrf": csrf_of(wallet(old))}
    )
    move_code = move_code_on(shown)
    new = restaurant.lab.change_mac(old, NEW_ADDRESS)  # the phone took a new private address
    (fresh,) = logs_in_as(restaurant, new)  # to the router, a new phone: it gets its own coupon
    assert http_post_form(
        new.ns,
        f"{PORTAL}/portal/wallet/move?lang=en",
        {"csrf": csrf_of(wallet(new)), "code": move_code},
    ).status in (200, 303)
    (moved,) = set(codes_on(wallet(new))) - {fresh}
    assert moved != coupon  # the same offer, issued again for the new address
    again = http_post_form(
        new.ns,
        f"{PORTAL}/portal/wallet/move?lang=en",
        {"csrf": csrf_of(wallet(new)), "code": move_code},
    )
    assert "used already" in again.text

    walked = spa.lab.change_mac(spa.shopper, NEW_ADDRESS)  # the phone walks to the spa
    logs_in_as(spa, walked)
    assert wait_until(lambda: moved in codes_on(wallet(walked)), 15)
    assert staff_at(spa).redeem(moved).redeemed

    def states() -> list[tuple[object, ...]]:
        return rows(
            alliance,
            "SELECT old.state FROM coupons AS new JOIN coupons AS old "
            "ON old.coupon_id = new.replaces WHERE new.replaces != ''",
        )

    assert wait_until(lambda: states() == [("moved",)], 15), states()


def move_code_on(page: HttpResponse) -> str:
    """The one-time code the old wallet shows."""
    found = re.search(
        r'id="move-code-value"[^>]*>([2-9A-HJKMNP-Z]{5}-[2-9A-HJKMNP-Z]{5})<', page.text
    )
    assert found, page.text[-2000:]
    return found.group(1)


@on_sqlite
def test_an_offline_router_stops_issuing_when_its_slice_is_spent(alliance: Alliance) -> None:
    restaurant = alliance.open_shop("Restaurant")
    alliance.open_shop("Spa")
    alliance.campaign("Spa", "Restaurant", "Spa 20% off", **{"slice-size": "2"})
    alliance.push_plans()
    restaurant.cut_uplink()
    phones = restaurant.lab.add_phones(2)
    given = [logs_in(restaurant)]
    for phone in phones:
        assert accept_terms(phone).status == 303
        given.append(codes_on(online_page(phone)))
    assert [len(codes) for codes in given] == [1, 1, 0]
