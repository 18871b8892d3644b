"""The desk at three routers of one alliance: issue, wallet, counter, spent list, wallet move."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agent.coupons.campaigns import Place
from agent.coupons.counter import Refusal
from agent.coupons.desk import CouponDesk, MoveError
from agent.coupons.plan import PlanError
from agent.wire import WalletReply
from tests.agent.coupons.helpers import (
    GYM,
    RESTAURANT,
    SPA,
    Clock,
    Recorder,
    desk_at,
    loop_campaigns,
    plan_for,
)

PHONE = "02:00:00:00:00:01"
NEW_ADDRESS = "02:00:00:00:00:99"


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_a_login_at_the_restaurant_earns_a_spa_coupon_once(
    tmp_path: Path, clock: Clock
) -> None:
    restaurant = desk_at(tmp_path, RESTAURANT, clock)
    (coupon,) = await restaurant.on_login(PHONE)
    assert coupon.campaign is not None and coupon.campaign.merchant_id == SPA
    assert coupon.state is None and coupon.issued_here
    assert await restaurant.on_login(PHONE) == ()  # one per device
    assert await restaurant.new_since(PHONE, clock.now) == (coupon,)


async def test_the_spa_redeems_the_restaurants_coupon_once(tmp_path: Path, clock: Clock) -> None:
    events = Recorder()
    restaurant, spa = desk_at(tmp_path, RESTAURANT, clock), desk_at(tmp_path, SPA, clock, events)
    (coupon,) = await restaurant.on_login(PHONE)
    check = await spa.check(coupon.text)
    assert check.verdict.valid and check.code == coupon.code
    assert (await spa.redeem(coupon.text)).verdict.valid
    assert (await spa.redeem(coupon.text)).verdict.refusal is Refusal.SPENT
    assert (await spa.check(coupon.code)).verdict.refusal is Refusal.SPENT  # known here now
    assert [kind for kind, _ in events.seen] == ["redeemed", "refused"]


async def test_a_restaurant_coupon_at_the_gym_is_for_another_merchant(
    tmp_path: Path, clock: Clock
) -> None:
    restaurant, gym = desk_at(tmp_path, RESTAURANT, clock), desk_at(tmp_path, GYM, clock)
    (coupon,) = await restaurant.on_login(PHONE)
    assert (await gym.check(coupon.text)).verdict.refusal is Refusal.OTHER_MERCHANT


async def test_an_altered_token_is_forged_and_an_unknown_code_is_no_coupon(
    tmp_path: Path, clock: Clock
) -> None:
    restaurant, spa = desk_at(tmp_path, RESTAURANT, clock), desk_at(tmp_path, SPA, clock)
    (coupon,) = await restaurant.on_login(PHONE)
    text = coupon.text
    altered = text[:200] + ("B" if text[200] != "B" else "C") + text[201:]
    assert (await spa.check(altered)).verdict.refusal is Refusal.FORGED
    unknown = await spa.check(coupon.code)  # never synced to the spa
    assert unknown.verdict.refusal is Refusal.NOT_A_COUPON and "no coupon" in unknown.hint
    typo = await spa.check(coupon.code[:-1] + ("2" if coupon.code[-1] != "2" else "3"))
    assert typo.verdict.refusal is Refusal.NOT_A_COUPON and "mistyped" in typo.hint


async def test_the_counter_says_whether_the_phone_is_on_the_wifi(
    tmp_path: Path, clock: Clock
) -> None:
    restaurant = desk_at(tmp_path, RESTAURANT, clock)
    spa = desk_at(tmp_path, SPA, clock)
    (coupon,) = await restaurant.on_login(PHONE)
    assert not (await spa.check(coupon.text)).on_wifi
    spa.online_macs = lambda: [PHONE]
    assert (await spa.check(coupon.text)).on_wifi


async def test_coupons_spent_elsewhere_are_refused(tmp_path: Path, clock: Clock) -> None:
    restaurant, spa = desk_at(tmp_path, RESTAURANT, clock), desk_at(tmp_path, SPA, clock)
    (coupon,) = await restaurant.on_login(PHONE)
    assert await spa.spent_elsewhere([coupon.coupon.coupon_id]) == 1
    assert (await spa.redeem(coupon.text)).verdict.refusal is Refusal.SPENT


class CloudWallet:
    def __init__(self, reply: WalletReply | None) -> None:
        self.reply = reply

    async def wallet(self, device_id: str) -> WalletReply | None:
        return self.reply


async def test_the_wallet_at_another_router_comes_from_the_cloud_then_from_its_cache(
    tmp_path: Path, clock: Clock
) -> None:
    restaurant, spa = desk_at(tmp_path, RESTAURANT, clock), desk_at(tmp_path, SPA, clock)
    (coupon,) = await restaurant.on_login(PHONE)
    device = spa.device(PHONE)
    assert await spa.wallet(PHONE) == ()
    spa.cloud = CloudWallet(WalletReply(device_id=device, coupons=(coupon.text, "junk")))
    (held,) = await spa.wallet(PHONE)
    assert held.coupon == coupon.coupon and not held.issued_here
    spa.cloud = CloudWallet(None)  # the uplink is cut
    assert [h.coupon for h in await spa.wallet(PHONE)] == [coupon.coupon]
    assert (await spa.check(coupon.code)).verdict.valid  # the short code works offline now


async def test_a_wallet_moves_to_the_phones_new_address_once(tmp_path: Path, clock: Clock) -> None:
    events = Recorder()
    restaurant = desk_at(tmp_path, RESTAURANT, clock, events)
    (coupon,) = await restaurant.on_login(PHONE)
    code, _ = await restaurant.start_move(PHONE)
    (moved,) = await restaurant.finish_move(NEW_ADDRESS, code)
    assert moved.coupon.device_id == restaurant.device(NEW_ADDRESS)
    assert moved.campaign == coupon.campaign and moved.state is None
    (old,) = await restaurant.wallet(PHONE)
    assert old.state is Refusal.MOVED
    with pytest.raises(MoveError, match="used already"):
        await restaurant.finish_move("02:00:00:00:00:77", code)
    assert ("moved", 1) in events.seen


async def test_a_move_code_expires_and_is_useless_on_the_same_address(
    tmp_path: Path, clock: Clock
) -> None:
    restaurant = desk_at(tmp_path, RESTAURANT, clock)
    await restaurant.on_login(PHONE)
    code, expires = await restaurant.start_move(PHONE)
    with pytest.raises(MoveError, match="another phone"):
        await restaurant.finish_move(PHONE, code)
    code, expires = await restaurant.start_move(PHONE)
    clock.now = expires + 1
    with pytest.raises(MoveError, match="expired"):
        await restaurant.finish_move(NEW_ADDRESS, code)


async def test_a_plan_certifying_another_key_is_refused_and_the_old_plan_stays(
    tmp_path: Path, clock: Clock
) -> None:
    desk: CouponDesk = desk_at(tmp_path, RESTAURANT, clock)
    before = desk.plan
    wrong = plan_for(Place(1, RESTAURANT, 11), "some other router", loop_campaigns())
    with pytest.raises(PlanError, match="another key"):
        desk.apply_plan(wrong)
    assert desk.plan is before


class ThreadRecorder(Recorder):
    """Remembers the thread each event was told on."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()

    def coupon_issued(self, device_id: str, coupon: object, at: float, replaces: str = "") -> None:
        self.threads.add(threading.get_ident())
        super().coupon_issued(device_id, coupon, at, replaces)

    def coupon_redeemed(self, coupon: object, at: float) -> None:
        self.threads.add(threading.get_ident())
        super().coupon_redeemed(coupon, at)

    def wallet_moved(self, device_id: str, to_device: str, count: int, at: float) -> None:
        self.threads.add(threading.get_ident())
        super().wallet_moved(device_id, to_device, count, at)


async def test_events_are_told_on_the_event_loops_thread_whose_spool_takes_them(
    tmp_path: Path, clock: Clock
) -> None:
    events = ThreadRecorder()
    restaurant = desk_at(tmp_path, RESTAURANT, clock, events)
    spa = desk_at(tmp_path, SPA, clock, events)
    (coupon,) = await restaurant.on_login(PHONE)
    await spa.redeem(coupon.text)
    code, _ = await restaurant.start_move(PHONE)
    await restaurant.finish_move(NEW_ADDRESS, code)
    assert events.threads == {threading.get_ident()}
    assert [kind for kind, _ in events.seen] == ["issued", "redeemed", "issued", "moved"]
