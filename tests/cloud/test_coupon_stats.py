"""Coupon numbers on known data (real SQLite and PostgreSQL), and the replay of routers' issuing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from sqlalchemy import Engine

from agent import wire
from agent.coupons.campaigns import Place
from cloud import coupon_store as store
from cloud.coupon_stats import Mismatch, flows, funnel, replay, replay_router
from cloud.ingest_store import IngestStore
from tests.agent.coupons import helpers
from tests.cloud.coupon_fleet import DAY, NOW, OTHER_PHONE, PHONE, Fleet, make_fleet
from tests.cloud.test_coupon_ingest import issued, redeemed, send

PHONE_MAC = "02:00:00:00:00:01"


@pytest.fixture
def fleet(engine: Engine) -> Fleet:
    return make_fleet(engine)


def test_the_funnel_counts_issued_seen_redeemed_refusals_double_spends_and_overshoot(
    engine: Engine, fleet: Fleet
) -> None:
    offer = fleet.campaign("spa", reach="partners")
    mine = [fleet.coupon("r-restaurant", offer, "spa") for _ in range(2)]  # one too many
    theirs = fleet.coupon("r-restaurant", offer, "spa", device=OTHER_PHONE)
    ingest = IngestStore(engine)
    send(ingest, *(issued(fleet, "r-restaurant", c) for c in [*mine, theirs]))
    seen = [
        fleet.event("r-spa", wire.EventKind.COUPON_SEEN, coupon_id=c.coupon_id, campaign_id=offer)
        for c in [mine[0], mine[0], theirs]
    ]
    refused = [
        fleet.event("r-spa", wire.EventKind.COUPON_REFUSED, campaign_id=offer, reason=reason)
        for reason in ("expired", "spent", "spent")
    ]
    send(ingest, *seen, *refused)
    send(ingest, redeemed(fleet, "r-spa", mine[0], NOW + 10.0))
    send(ingest, redeemed(fleet, "r-spa-2", mine[0], NOW + 20.0))  # offline at the same time
    send(ingest, redeemed(fleet, "r-spa", theirs, NOW + 30.0))
    with engine.connect() as connection:
        numbers = funnel(connection, offer)
    assert numbers == {
        "campaign_id": offer,
        "issued": 3,
        "seen": 2,
        "redeemed": 2,
        "refused": {"expired": 1, "spent": 2},
        "double_spends": 1,
        "overshoot": 1,
    }


def test_flows_count_the_customers_each_merchant_sent_to_another(
    engine: Engine, fleet: Fleet
) -> None:
    spa_offer = fleet.campaign("spa", reach="partners")
    gym_offer = fleet.campaign("gym", reach="partners")
    a = fleet.coupon("r-restaurant", spa_offer, "spa")
    b = fleet.coupon("r-restaurant", spa_offer, "spa", device=OTHER_PHONE)
    c = fleet.coupon("r-spa", gym_offer, "gym")
    unused = fleet.coupon("r-spa", gym_offer, "gym", device=OTHER_PHONE)
    ingest = IngestStore(engine)
    send(ingest, *(issued(fleet, "r-restaurant", x) for x in (a, b)))
    send(ingest, *(issued(fleet, "r-spa", x) for x in (c, unused)))
    send(ingest, redeemed(fleet, "r-spa", a, NOW + 1.0), redeemed(fleet, "r-spa", b, NOW + 2.0))
    send(ingest, redeemed(fleet, "r-gym", c, NOW + 3.0))
    with engine.connect() as connection:
        found = flows(connection, fleet.alliance_id)
    assert found == [
        {"from_merchant": "restaurant", "to_merchant": "spa", "customers": 2, "redemptions": 2},
        {"from_merchant": "spa", "to_merchant": "gym", "customers": 1, "redemptions": 1},
    ]


FIRST_VISIT = wire.Campaign(
    id=5,
    merchant_id=2,
    budget=100,
    per_device=1,
    trigger=wire.Trigger.FIRST_VISIT,
    issuers=(1,),
    starts_at=0,
    ends_at=NOW + 30 * DAY,
    allotted=50,
)


def test_a_replay_of_the_routers_logins_matches_what_it_issued() -> None:
    place = Place(1, 1, 1)
    logins = [(NOW + 0.0, PHONE), (NOW + 60.0, PHONE), (NOW + DAY, PHONE), (NOW + 5.0, OTHER_PHONE)]
    issued_events = [(NOW + 1.0, PHONE, 5), (NOW + 6.0, OTHER_PHONE, 5)]
    assert replay([FIRST_VISIT], place, logins, issued_events) == []


def test_a_replay_reports_a_coupon_the_rules_did_not_give_and_one_missing() -> None:
    place = Place(1, 1, 1)
    logins = [(NOW + 0.0, PHONE), (NOW + DAY, PHONE), (NOW + 5.0, OTHER_PHONE)]
    issued_events = [(NOW + 1.0, PHONE, 5), (NOW + DAY + 1.0, PHONE, 5)]  # a second visit's
    day = NOW // DAY
    assert replay([FIRST_VISIT], place, logins, issued_events) == [
        Mismatch(PHONE, 5, day + 1, 0, 1),
        Mismatch(OTHER_PHONE, 5, day, 1, 0),
    ]


def test_a_coupon_another_router_gave_first_counts_as_held_in_the_replay() -> None:
    place = Place(1, 1, 1)
    logins = [(NOW + 100.0, PHONE)]
    elsewhere = [(NOW + 50.0, PHONE, 5)]  # the phone got it at another site of the loop
    assert replay([FIRST_VISIT], place, logins, [], elsewhere) == []
    assert replay([FIRST_VISIT], place, logins, []) == [Mismatch(PHONE, 5, NOW // DAY, 1, 0)]


def test_the_cloud_replays_a_routers_reported_logins_against_its_coupon_events(
    engine: Engine, fleet: Fleet
) -> None:
    offer = fleet.campaign("gym", trigger="first_visit")
    with engine.begin() as connection:
        store.top_up(connection, offer, "r-gym")
    login = fleet.event("r-gym", wire.EventKind.SESSION_STARTED, at=float(NOW + 10))
    again = fleet.event("r-gym", wire.EventKind.SESSION_STARTED, at=float(NOW + 20))
    other = fleet.event(
        "r-gym", wire.EventKind.SESSION_STARTED, at=float(NOW + 30), device_id=OTHER_PHONE
    )
    coupon = fleet.coupon("r-gym", offer, "gym")
    send(IngestStore(engine), login, again, other, issued(fleet, "r-gym", coupon, at=NOW + 10.5))
    with engine.connect() as connection:
        found = replay_router(connection, "r-gym")
    assert found == [Mismatch(OTHER_PHONE, offer, NOW // DAY, 1, 0)]  # the other phone's is missing


async def test_the_router_and_the_replay_count_visits_by_the_sites_days_alike(
    tmp_path: Path,
) -> None:
    shanghai = 8 * 3600
    second_visit = dataclasses.replace(
        FIRST_VISIT, trigger=wire.Trigger.NTH_VISIT, nth_visit=2, merchant_id=20, issuers=(10,)
    )
    clock = helpers.Clock(1_800_028_740.0)  # 23:59 in Shanghai, 15:59 UTC
    desk = helpers.desk_at(tmp_path, helpers.RESTAURANT, clock)
    assert desk.plan is not None
    desk.apply_plan(
        dataclasses.replace(desk.plan.plan, campaigns=(second_visit,), utc_offset=shanghai)
    )
    logins, issued_events = [], []
    for at in (clock.now, clock.now + 120):  # 00:01 the next day in Shanghai, the same UTC day
        clock.now = at
        device = desk.device(PHONE_MAC)
        logins.append((at, device))
        issued_events += [
            (at, device, h.coupon.campaign_id) for h in await desk.on_login(PHONE_MAC)
        ]
    assert len(issued_events) == 1  # the second login is the site's second visit
    place = Place(1, helpers.RESTAURANT, helpers.RESTAURANT + 1)
    assert replay([second_visit], place, logins, issued_events, utc_offset=shanghai) == []
    assert replay([second_visit], place, logins, issued_events) != []  # UTC days would differ
