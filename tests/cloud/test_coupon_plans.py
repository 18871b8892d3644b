"""Coupon plans around the restaurant -> spa -> gym -> restaurant loop: pure, then from the DB."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agent import wire
from agent.coupons.campaigns import Place
from agent.coupons.pin import pin_matches
from agent.coupons.token import IssuerCertificate, Verifier
from cloud import coupon_store as store
from cloud.coupon_admin import answer, get_partnership, propose, set_staff_pin
from cloud.coupon_plans import compose_plan, plan_for, push_plan, router_campaigns
from tests.cloud.coupon_fleet import NOW, make_fleet

RESTAURANT, SPA, GYM = 1, 2, 3
WHEN = datetime.fromtimestamp(NOW, UTC)


def offer(campaign_id: int, merchant: int, reach: wire.Reach) -> wire.Campaign:
    return wire.Campaign(id=campaign_id, merchant_id=merchant, reach=reach, budget=100)


LOOP = [
    offer(10, SPA, wire.Reach.PARTNERS),  # the restaurant hands out spa coupons
    offer(20, GYM, wire.Reach.PARTNERS),  # the spa hands out gym coupons
    offer(30, RESTAURANT, wire.Reach.PARTNERS),  # the gym hands out restaurant coupons
    offer(40, RESTAURANT, wire.Reach.OWN),  # and the restaurant its own
]
ACCEPTED = {SPA: {RESTAURANT}, GYM: {SPA}, RESTAURANT: {GYM}}


def test_each_router_of_the_loop_issues_the_next_merchants_campaign_with_its_slice() -> None:
    restaurant = router_campaigns(RESTAURANT, LOOP, ACCEPTED, {10: 25, 40: 5})
    assert [(c.id, c.issuers, c.allotted) for c in restaurant] == [
        (10, (RESTAURANT,), 25),  # issues the spa's, within its slice
        (30, (GYM,), 0),  # honours its own partner campaign, issues none of it
        (40, (RESTAURANT,), 5),
    ]
    assert [c.id for c in router_campaigns(SPA, LOOP, ACCEPTED, {})] == [10, 20]
    assert [c.id for c in router_campaigns(GYM, LOOP, ACCEPTED, {})] == [20, 30]


def test_a_partner_that_has_not_accepted_hands_out_nothing() -> None:
    pending = {SPA: set(), GYM: {SPA}, RESTAURANT: {GYM}}
    restaurant = router_campaigns(RESTAURANT, LOOP, pending, {})
    assert 10 not in [c.id for c in restaurant]


def test_the_plan_names_the_router_its_root_key_and_certificate() -> None:
    plan = compose_plan(Place(7, RESTAURANT, 3), b"\x01" * 32, "CERT", LOOP, ACCEPTED, {}, "h")
    assert (plan.alliance_id, plan.merchant_id, plan.site_id) == (7, RESTAURANT, 3)
    assert (plan.root_key, plan.issuer_certificate, plan.staff_pin) == ("01" * 32, "CERT", "h")


def test_a_routers_plan_from_the_database_carries_the_loop_a_slice_and_a_valid_certificate(
    engine: Engine,
) -> None:
    fleet = make_fleet(engine)
    spa_offer = fleet.campaign("spa", reach="partners", slice_size=20)
    own = fleet.campaign("restaurant")
    with Session(engine) as session, session.begin():
        propose(session, "spa", "restaurant", WHEN)
        answer(session, get_partnership(session, "spa", "restaurant"), "accept", WHEN)
        propose(session, "gym", "restaurant", WHEN)  # proposed, never accepted
        set_staff_pin(session, "restaurant", "2468")
    gym_offer = fleet.campaign("gym", reach="partners")
    with engine.begin() as connection:
        plan = plan_for(connection, "r-restaurant", WHEN)
    assert plan is not None
    assert [(c.id, c.allotted) for c in plan.campaigns] == [(spa_offer, 20), (own, 10)]
    assert gym_offer not in [c.id for c in plan.campaigns]
    assert pin_matches(plan.staff_pin, "2468")
    certificate = IssuerCertificate.from_text(plan.issuer_certificate)
    verifier = Verifier(store.cloud_backend(), bytes.fromhex(plan.root_key), fleet.alliance_id)
    assert verifier.certificate(certificate).key_id == fleet.certificate("r-restaurant").key_id
    with engine.begin() as connection:  # planning again allots nothing more
        again = plan_for(connection, "r-restaurant", WHEN)
    assert again is not None and again.campaigns == plan.campaigns


def test_a_pushed_plan_is_the_routers_next_retained_config(engine: Engine) -> None:
    fleet = make_fleet(engine)
    fleet.campaign("gym")
    sent: list[tuple[str, bytes, bool]] = []
    config = push_plan(engine, lambda t, p, r: sent.append((t, p, r)), "r-gym", WHEN)
    assert config is not None and config.coupons is not None
    [(topic, payload, retain)] = sent
    assert topic == str(wire.Topic("r-gym", wire.Channel.CONFIG)) and retain
    decoded = wire.decode(payload, wire.RouterConfig)
    assert decoded.coupons == config.coupons
    assert json.loads(payload)["coupons"]["merchant_id"] == fleet.merchants["gym"]


def test_a_plan_push_keeps_the_other_settings_the_router_was_given(engine: Engine) -> None:
    from cloud.db import sessions
    from cloud.fleet_push import push_config

    fleet = make_fleet(engine)
    fleet.campaign("gym")
    sent: list[tuple[str, bytes, bool]] = []
    push_config(sessions(engine), lambda t, p, r: None, "r-gym", {"session_timeout": 1800})
    config = push_plan(engine, lambda t, p, r: sent.append((t, p, r)), "r-gym", WHEN)
    assert config is not None
    assert (config.version, config.session_timeout) == (2, 1800)
    assert config.coupons is not None
