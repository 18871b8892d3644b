"""Coupon events through the ingest's store, on real SQLite and PostgreSQL: exactly once."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select

from agent import wire
from agent.coupons.token import Coupon
from cloud import coupon_store as store
from cloud.ingest_core import read_message
from cloud.ingest_store import IngestStore, Written
from cloud.models import Command, CouponRow, CouponSlice, DeadLetter, Event, IssuerKey, Redemption
from cloud.wallets import wallet_reply
from tests.cloud.coupon_fleet import DAY, NOW, OTHER_PHONE, PHONE, Fleet, make_fleet

WHEN = datetime.fromtimestamp(NOW, UTC)


@pytest.fixture
def fleet(engine: Engine) -> Fleet:
    return make_fleet(engine)


def send(ingest: IngestStore, *events: wire.Event) -> Written:
    """The events as one batch per router, written in one go, as the worker would."""
    routers = sorted({e.router_id for e in events})
    items = [
        read_message(
            str(wire.Topic(r, wire.Channel.EVENTS)),
            wire.EventBatch(
                router_id=r, events=tuple(e for e in events if e.router_id == r)
            ).encode(),
        )
        for r in routers
    ]
    return ingest.write(items, WHEN)


def issued(fleet: Fleet, router_id: str, coupon: Coupon, **values: object) -> wire.Event:
    return fleet.event(
        router_id,
        wire.EventKind.COUPON_ISSUED,
        coupon=coupon.to_text(),
        coupon_id=coupon.coupon_id,
        campaign_id=coupon.campaign_id,
        device_id=coupon.device_id,
        **values,
    )


def redeemed(fleet: Fleet, router_id: str, coupon: Coupon, at: float) -> wire.Event:
    return fleet.event(
        router_id,
        wire.EventKind.COUPON_REDEEMED,
        coupon=coupon.to_text(),
        coupon_id=coupon.coupon_id,
        at=at,
    )


def count(engine: Engine, table: type, *where: object) -> int:
    with engine.connect() as connection:
        query = select(func.count()).select_from(table).where(*where)  # type: ignore[arg-type]
        return int(connection.scalar(query) or 0)


def test_issued_coupons_enter_the_ledger_once_when_the_batch_is_delivered_again(
    engine: Engine, fleet: Fleet
) -> None:
    spa_offer = fleet.campaign("spa", reach="partners")
    coupons = [fleet.coupon("r-restaurant", spa_offer, "spa") for _ in range(3)]
    events = [issued(fleet, "r-restaurant", c) for c in coupons]
    ingest = IngestStore(engine)
    send(ingest, *events)
    send(ingest, *events)  # the broker redelivers the batch
    assert count(engine, CouponRow) == 3
    assert count(engine, Event, Event.kind == "coupon_issued") == 3
    with engine.connect() as connection:
        row = connection.execute(
            select(CouponRow).where(CouponRow.coupon_id == coupons[0].coupon_id)
        ).one()
        issued_count = connection.scalar(
            select(CouponSlice.issued).where(CouponSlice.router_id == "r-restaurant")
        )
        event_campaigns = set(connection.scalars(select(Event.campaign_id)))
    assert (row.issuer_router_id, row.merchant_id, row.state) == (
        "r-restaurant",
        fleet.merchants["spa"],
        "held",
    )
    assert row.issuer_merchant_id == fleet.merchants["restaurant"]
    assert issued_count == 3  # recounted from the ledger, not incremented twice
    assert event_campaigns == {spa_offer}


def test_a_coupon_whose_token_does_not_verify_is_dead_lettered_with_the_reason(
    engine: Engine, fleet: Fleet
) -> None:
    good = fleet.coupon("r-gym", fleet.campaign("gym"), "gym")
    forged_text = good.to_text()
    forged_text = forged_text[:-3] + ("A" if forged_text[-3] != "A" else "B") + forged_text[-2:]
    forged = fleet.event(
        "r-gym", wire.EventKind.COUPON_ISSUED, coupon=forged_text, device_id=good.device_id
    )
    written = send(IngestStore(engine), forged, issued(fleet, "r-gym", good))
    assert count(engine, CouponRow) == 1
    with engine.connect() as connection:
        reasons = list(connection.scalars(select(DeadLetter.reason)))
    assert len(reasons) == 1 and "coupon:" in reasons[0]
    assert [origin for origin, _ in written.refused] == [("r-gym", "boot-1", forged.seq)]


@pytest.mark.parametrize("arrival", ["earlier first", "later first"])
def test_the_later_of_two_offline_redemptions_is_flagged_as_double_spend_in_any_order(
    engine: Engine, fleet: Fleet, arrival: str
) -> None:
    coupon = fleet.coupon("r-restaurant", fleet.campaign("spa", reach="partners"), "spa")
    ingest = IngestStore(engine)
    send(ingest, issued(fleet, "r-restaurant", coupon))
    first = redeemed(fleet, "r-spa-2", coupon, at=NOW + 100.0)
    second = redeemed(fleet, "r-spa", coupon, at=NOW + 200.0)
    for event in [first, second] if arrival == "earlier first" else [second, first]:
        send(ingest, event)
    send(ingest, first, second)  # and both again: no second rows
    with engine.connect() as connection:
        rows = connection.execute(
            select(Redemption.router_id, Redemption.double_spend).order_by(Redemption.at)
        ).all()
        state = connection.scalar(select(CouponRow.state))
    assert [tuple(r) for r in rows] == [("r-spa-2", False), ("r-spa", True)]
    assert state == "redeemed"


def test_redemptions_at_the_same_second_go_by_router_id(engine: Engine, fleet: Fleet) -> None:
    coupon = fleet.coupon("r-spa", fleet.campaign("spa"), "spa")
    ingest = IngestStore(engine)
    send(ingest, redeemed(fleet, "r-spa-2", coupon, at=NOW + 5.0))
    send(ingest, redeemed(fleet, "r-spa", coupon, at=NOW + 5.0))
    with engine.connect() as connection:
        flags = dict(
            connection.execute(select(Redemption.router_id, Redemption.double_spend)).all()
        )
    assert flags == {"r-spa": False, "r-spa-2": True}


def test_a_redemption_tells_only_the_merchants_other_routers_the_coupon_is_spent(
    engine: Engine, fleet: Fleet
) -> None:
    coupon = fleet.coupon("r-restaurant", fleet.campaign("spa", reach="partners"), "spa")
    ingest = IngestStore(engine)
    send(ingest, issued(fleet, "r-restaurant", coupon))
    event = redeemed(fleet, "r-spa", coupon, at=NOW + 10.0)
    written = send(ingest, event)
    again = send(ingest, event)  # a redelivery announces nothing new
    commands = [(topic, json.loads(payload)) for topic, payload, _ in written.outbox]
    assert commands == [
        (
            str(wire.Topic("r-spa-2", wire.Channel.COMMAND)),
            {**commands[0][1], "action": "coupons_spent", "coupons": [coupon.coupon_id]},
        )
    ]
    assert again.outbox == ()
    with engine.connect() as connection:
        stored = connection.execute(
            select(Command.router_id, Command.action, Command.coupons)
        ).all()
    assert [tuple(s) for s in stored] == [("r-spa-2", "coupons_spent", coupon.coupon_id)]


def test_a_router_past_half_its_slice_gets_another_slice_in_a_new_plan(
    engine: Engine, fleet: Fleet
) -> None:
    offer = fleet.campaign("gym", slice_size=4, budget=6)
    ingest = IngestStore(engine)
    with engine.begin() as connection:
        store.top_up(connection, offer, "r-gym")  # the first slice: 4
    written = send(
        ingest, *(issued(fleet, "r-gym", fleet.coupon("r-gym", offer, "gym")) for _ in range(2))
    )
    with engine.connect() as connection:
        allotted = connection.scalar(select(CouponSlice.allotted))
    assert allotted == 6  # 4 + what is left of the budget (2), never more
    configs = [json.loads(p) for t, p, retain in written.outbox if t.endswith("down/config")]
    assert len(configs) == 1
    plan = wire.decode(json.dumps(configs[0]).encode(), wire.RouterConfig).coupons
    assert plan is not None
    assert [(c.id, c.allotted) for c in plan.campaigns] == [(offer, 6)]


def test_a_new_issuing_key_in_a_status_is_certified_and_replaces_the_old(
    engine: Engine, fleet: Fleet
) -> None:
    old = fleet.certificate("r-gym")
    key = store.cloud_backend().public_key(b"\x07" * 32).hex()
    status = wire.Status(router_id="r-gym", state=wire.RouterState.ONLINE, at=NOW, issuer_key=key)
    item = read_message(str(wire.Topic("r-gym", wire.Channel.STATUS)), status.encode())
    written = IngestStore(engine).write([item], WHEN)
    again = IngestStore(engine).write([item], WHEN)
    new = fleet.certificate("r-gym")
    assert new.public_key.hex() == key and new.key_id != old.key_id
    assert count(engine, IssuerKey, IssuerKey.router_id == "r-gym") == 2
    assert any(t.endswith("r-gym/down/config") and retain for t, _, retain in written.outbox)
    assert again.outbox == ()  # the same key again: nothing to certify or push


def test_the_wallet_spans_the_alliance_leaves_out_expired_and_marks_spent(
    engine: Engine, fleet: Fleet
) -> None:
    spa = fleet.coupon("r-restaurant", fleet.campaign("spa", reach="partners"), "spa")
    gym = fleet.coupon("r-spa", fleet.campaign("gym", reach="partners"), "gym")
    old = fleet.coupon("r-gym", fleet.campaign("gym"), "gym", not_after=NOW - DAY)
    someone_else = fleet.coupon("r-gym", fleet.campaign("gym"), "gym", device=OTHER_PHONE)
    ingest = IngestStore(engine)
    send(
        ingest,
        *(issued(fleet, r, c) for r, c in [("r-restaurant", spa), ("r-spa", gym), ("r-gym", old)]),
        issued(fleet, "r-gym", someone_else),
    )
    send(ingest, redeemed(fleet, "r-spa", spa, at=NOW + 5.0))
    request = wire.WalletRequest(router_id="r-gym", id="q1", device_id=PHONE)
    reply = wallet_reply(engine, "r-gym", request, float(NOW))
    assert reply.id == "q1" and reply.device_id == PHONE
    assert sorted(reply.coupons) == sorted([spa.to_text(), gym.to_text()])
    assert reply.spent == (spa.coupon_id,)


def test_a_retired_router_gets_an_empty_wallet(engine: Engine, fleet: Fleet) -> None:
    from sqlalchemy.orm import Session

    from cloud.enrol_fleet import retire_router

    gym = fleet.coupon("r-gym", fleet.campaign("gym"), "gym")
    send(IngestStore(engine), issued(fleet, "r-gym", gym))
    request = wire.WalletRequest(router_id="r-spa", id="q", device_id=PHONE)
    assert wallet_reply(engine, "r-spa", request, float(NOW)).coupons == (gym.to_text(),)
    with Session(engine) as session, session.begin():
        retire_router(session, "r-spa")
    assert wallet_reply(engine, "r-spa", request, float(NOW)).coupons == ()


def test_a_router_that_issues_without_a_slice_is_counted_but_gets_none(
    engine: Engine, fleet: Fleet
) -> None:
    offer = fleet.campaign("gym", slice_size=4)
    written = send(IngestStore(engine), issued(fleet, "r-gym", fleet.coupon("r-gym", offer, "gym")))
    with engine.connect() as connection:
        row = connection.execute(select(CouponSlice.allotted, CouponSlice.issued)).one()
    assert tuple(row) == (0, 1)
    assert written.outbox == ()
