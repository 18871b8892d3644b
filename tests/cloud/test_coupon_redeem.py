"""Cloud redemption on real SQLite and PostgreSQL: one winner, the counter's reasons."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select

from agent.coupons.counter import Refusal
from agent.coupons.shortcode import code_of, pretty
from cloud.coupon_redeem import RedeemError, RedeemRefused, redeem
from cloud.db import make_engine
from cloud.ingest_store import IngestStore
from cloud.models import CouponRow, Redemption
from tests.cloud.conftest import race
from tests.cloud.coupon_fleet import DAY, NOW, Fleet, make_fleet
from tests.cloud.test_coupon_ingest import issued, redeemed, send


@pytest.fixture
def fleet(engine: Engine) -> Fleet:
    return make_fleet(engine)


def test_fifty_concurrent_redemptions_of_one_coupon_make_exactly_one_winner(
    database_url: str, engine: Engine, fleet: Fleet
) -> None:
    coupon = fleet.coupon("r-restaurant", fleet.campaign("spa", reach="partners"), "spa")
    send(IngestStore(engine), issued(fleet, "r-restaurant", coupon))
    engines: list[Engine] = []

    def attempt() -> object:
        own = make_engine(database_url)  # each caller its own connection
        engines.append(own)
        return redeem(own, coupon.to_text(), "r-spa", float(NOW))

    try:
        outcomes = race(attempt, RedeemRefused, times=50)
    finally:
        for made in engines:
            made.dispose()
    winners = [o for o in outcomes if not isinstance(o, Refusal)]
    assert len(outcomes) == 50
    assert len(winners) == 1
    assert outcomes.count(Refusal.SPENT) == 49
    with engine.connect() as connection:
        assert len(connection.execute(select(Redemption.id)).all()) == 1
        assert connection.scalar(select(CouponRow.state)) == "redeemed"


def test_a_short_code_redeems_a_coupon_the_ledger_holds(engine: Engine, fleet: Fleet) -> None:
    coupon = fleet.coupon("r-spa", fleet.campaign("spa"), "spa")
    send(IngestStore(engine), issued(fleet, "r-spa", coupon))
    done = redeem(engine, pretty(code_of(coupon.coupon_id)).lower(), "r-spa-2", float(NOW))
    assert done.coupon.coupon_id == coupon.coupon_id


def test_a_token_the_ledger_never_heard_of_is_redeemed_once_and_entered(
    engine: Engine, fleet: Fleet
) -> None:
    coupon = fleet.coupon("r-gym", fleet.campaign("gym"), "gym")
    redeem(engine, coupon.to_text(), "r-gym", float(NOW))
    with pytest.raises(RedeemRefused) as refused:
        redeem(engine, coupon.to_text(), "r-gym", float(NOW) + 1)
    assert refused.value.reason is Refusal.SPENT
    send(IngestStore(engine), issued(fleet, "r-gym", coupon))  # its issue arrives late
    with engine.connect() as connection:
        row = connection.execute(select(CouponRow)).one()
    assert (row.state, row.issuer_router_id) == ("redeemed", "r-gym")


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("other merchant", Refusal.OTHER_MERCHANT),
        ("expired", Refusal.EXPIRED),
        ("altered", Refusal.FORGED),
        ("unknown code", Refusal.NOT_A_COUPON),
        ("mistyped code", Refusal.NOT_A_COUPON),
    ],
)
def test_the_cloud_refuses_with_the_counters_reason(
    engine: Engine, fleet: Fleet, case: str, reason: Refusal
) -> None:
    restaurant = fleet.campaign("restaurant", reach="partners")
    coupon = fleet.coupon("r-gym", restaurant, "restaurant", not_after=NOW + DAY)
    text = coupon.to_text()
    router, at = "r-restaurant", float(NOW)
    if case == "other merchant":
        router = "r-gym"  # a restaurant coupon shown at the gym
    elif case == "expired":
        at = float(NOW + 2 * DAY)
    elif case == "altered":
        text = text[:200] + ("B" if text[200] == "A" else "A") + text[201:]
    elif case == "unknown code":
        text = code_of(coupon.coupon_id)  # never reported issued: the cloud has no such code
    else:
        code = code_of(coupon.coupon_id)
        text = code[:-1] + ("3" if code[-1] == "2" else "2")  # the check symbol catches it
    with pytest.raises(RedeemRefused) as refused:
        redeem(engine, text, router, at)
    assert refused.value.reason is reason


def test_an_unknown_router_is_named(engine: Engine, fleet: Fleet) -> None:
    coupon = fleet.coupon("r-gym", fleet.campaign("gym"), "gym")
    with pytest.raises(RedeemError, match="router_id: no router 'r-nowhere'"):
        redeem(engine, coupon.to_text(), "r-nowhere", float(NOW))


def test_a_coupon_a_router_redeemed_before_its_issue_arrived_is_spent_for_the_cloud(
    engine: Engine, fleet: Fleet
) -> None:
    coupon = fleet.coupon("r-spa", fleet.campaign("spa"), "spa")
    send(IngestStore(engine), redeemed(fleet, "r-spa", coupon, float(NOW)))
    with pytest.raises(RedeemRefused) as refused:
        redeem(engine, coupon.to_text(), "r-spa-2", float(NOW) + 5)
    assert refused.value.reason is Refusal.SPENT


def test_an_expired_coupon_already_spent_is_refused_as_spent_as_the_counter_says(
    engine: Engine, fleet: Fleet
) -> None:
    coupon = fleet.coupon("r-spa", fleet.campaign("spa"), "spa", not_after=NOW + 60)
    redeem(engine, coupon.to_text(), "r-spa", float(NOW))
    with pytest.raises(RedeemRefused) as refused:
        redeem(engine, coupon.to_text(), "r-spa", float(NOW + DAY))
    assert refused.value.reason is Refusal.SPENT


def test_routers_reports_and_cloud_redemptions_racing_leave_one_first_redemption_each(
    database_url: str, engine: Engine, fleet: Fleet
) -> None:
    """Two routers' reports (two ingest writers) and two cloud callers, one coupon at a time:
    no deadlock, and each coupon keeps exactly its earliest redemption as the real one."""
    import contextlib
    import threading

    offer = fleet.campaign("spa")
    coupons = [fleet.coupon("r-spa", offer, "spa") for _ in range(12)]
    send(IngestStore(engine), *(issued(fleet, "r-spa", c) for c in coupons))
    reports = {
        router: [
            redeemed(fleet, router, c, float(NOW + 100 + i + shift)) for i, c in enumerate(coupons)
        ]
        for router, shift in (("r-spa", 0.5), ("r-spa-2", 0.0))
    }
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def report(router: str) -> None:
        own = make_engine(database_url)
        try:
            start.wait()
            ingest = IngestStore(own)
            for event in reports[router]:
                send(ingest, event)
        except BaseException as error:
            failures.append(error)
        finally:
            own.dispose()

    def at_the_cloud() -> None:
        own = make_engine(database_url)
        try:
            start.wait()
            for c in coupons:
                with contextlib.suppress(RedeemRefused):
                    redeem(own, c.to_text(), "r-spa", float(NOW + 100.2))
        except BaseException as error:
            failures.append(error)
        finally:
            own.dispose()

    threads = [threading.Thread(target=report, args=(r,)) for r in reports]
    threads += [threading.Thread(target=at_the_cloud) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                Redemption.coupon_id, Redemption.at, Redemption.router_id, Redemption.double_spend
            )
        ).all()
        states = set(connection.scalars(select(CouponRow.state)))
    assert states == {"redeemed"}
    for c in coupons:
        mine = sorted((at, router, flag) for cid, at, router, flag in rows if cid == c.coupon_id)
        assert [flag for _, _, flag in mine] == [False] + [True] * (len(mine) - 1)
        assert 2 <= len(mine) <= 3  # both routers' reports, and the cloud's if it came first
