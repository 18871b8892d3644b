"""The cloud and the routers' own coupon desks, end to end without a network.

The plans come from cloud.coupon_plans, the desks are agent.coupons.desk as routers run
it, their events go through the ingest's store and the wallet comes from
cloud.wallets: what one side writes, the other reads (real SQLite and PostgreSQL).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from agent import wire
from agent.coupons.counter import Refusal
from agent.coupons.desk import CouponDesk
from agent.coupons.store import CouponStore
from agent.events import Emitter
from cloud import coupon_store as store
from cloud.coupon_admin import answer, get_partnership, propose
from cloud.coupon_plans import plan_for
from cloud.ingest_store import IngestStore, Written
from cloud.models import Alliance, CouponRow, Redemption
from cloud.wallets import wallet_reply
from tests.cloud.coupon_fleet import NOW, Fleet, make_fleet
from tests.cloud.test_coupon_ingest import send

PHONE_MAC = "02:00:00:00:00:01"
WHEN = datetime.fromtimestamp(NOW, UTC)


@dataclass
class Router:
    """One router's desk, its events (numbered as its spool would) and the cloud behind it."""

    router_id: str
    engine: Engine
    desk: CouponDesk = field(init=False)
    events: list[wire.Event] = field(default_factory=list)
    reported: int = 0

    async def wallet(self, device_id: str) -> wire.WalletReply | None:
        request = wire.WalletRequest(router_id=self.router_id, id="w", device_id=device_id)
        return wallet_reply(self.engine, self.router_id, request, float(NOW))

    def report(self, ingest: IngestStore) -> Written:
        """Send what happened since the last report, numbered as the spool would."""
        new = [
            replace(e, boot_id="boot-1", seq=i)
            for i, e in enumerate(self.events)
            if i >= self.reported
        ]
        self.reported = len(self.events)
        return send(ingest, *new)


@pytest.fixture
def fleet(engine: Engine) -> Fleet:
    return make_fleet(engine)


def router(fleet: Fleet, router_id: str, tmp_path: Path) -> Router:
    with Session(fleet.engine) as session:
        key = session.scalars(select(Alliance.device_key)).one()
    made = Router(router_id, fleet.engine)
    made.desk = CouponDesk(
        CouponStore(tmp_path / router_id),
        store.cloud_backend(),
        fleet.seeds[router_id],
        key,
        clock=lambda: float(NOW),
        events=Emitter(router_id, key, made.events.append),
        cloud=made,
    )
    with fleet.engine.begin() as connection:
        plan = plan_for(connection, router_id, WHEN)
    assert plan is not None
    made.desk.apply_plan(plan)  # the router's own checks of the cloud's plan
    return made


async def test_a_spa_coupon_issued_at_the_restaurant_is_in_the_spa_wallet_and_spent_fleet_wide(
    engine: Engine, fleet: Fleet, tmp_path: Path
) -> None:
    offer = fleet.campaign("spa", reach="partners")
    with Session(engine) as session, session.begin():
        propose(session, "spa", "restaurant", WHEN)
        answer(session, get_partnership(session, "spa", "restaurant"), "accept", WHEN)
    restaurant = router(fleet, "r-restaurant", tmp_path)
    spa, spa_2 = router(fleet, "r-spa", tmp_path), router(fleet, "r-spa-2", tmp_path)
    ingest = IngestStore(engine)

    (given,) = await restaurant.desk.on_login(PHONE_MAC)
    assert given.campaign is not None and given.campaign.id == offer
    restaurant.report(ingest)
    with engine.connect() as connection:
        ledger = connection.execute(select(CouponRow.coupon_id, CouponRow.state)).all()
    assert [tuple(r) for r in ledger] == [(given.coupon.coupon_id, "held")]

    shown = await spa.desk.wallet(PHONE_MAC)  # from the cloud: the spa never saw it issued
    assert [h.coupon.coupon_id for h in shown] == [given.coupon.coupon_id]
    assert (await spa.desk.redeem(shown[0].code)).verdict.valid
    written = spa.report(ingest)
    with engine.connect() as connection:
        assert connection.scalar(select(CouponRow.state)) == "redeemed"
        assert connection.scalar(select(Redemption.router_id)) == "r-spa"

    [(topic, payload, _)] = [m for m in written.outbox if m[0].endswith("/down/cmd")]
    assert topic == str(wire.Topic("r-spa-2", wire.Channel.COMMAND))
    command = wire.decode(payload, wire.Command)
    assert await spa_2.desk.spent_elsewhere(command.coupons) == 1
    again = await spa_2.desk.check(given.text)
    assert again.verdict.refusal is Refusal.SPENT
    reply = await spa_2.wallet(given.coupon.device_id)
    assert reply is not None and reply.spent == (given.coupon.coupon_id,)


async def test_one_coupon_redeemed_at_two_offline_spa_routers_is_one_double_spend(
    engine: Engine, fleet: Fleet, tmp_path: Path
) -> None:
    fleet.campaign("spa")
    spa, spa_2 = router(fleet, "r-spa", tmp_path), router(fleet, "r-spa-2", tmp_path)
    ingest = IngestStore(engine)
    (given,) = await spa.desk.on_login(PHONE_MAC)
    spa.report(ingest)
    assert [h.code for h in await spa_2.desk.wallet(PHONE_MAC)] == [given.code]  # synced
    spa.desk.cloud = spa_2.desk.cloud = None  # both uplinks cut
    spa.desk.clock = lambda: float(NOW + 300)
    assert (await spa.desk.redeem(given.code)).verdict.valid
    assert (await spa_2.desk.redeem(given.code)).verdict.valid  # at NOW: the earlier one
    spa.report(ingest)  # the later redemption reaches the cloud first
    spa_2.report(ingest)
    with engine.connect() as connection:
        flags = dict(
            connection.execute(select(Redemption.router_id, Redemption.double_spend)).all()
        )
    assert flags == {"r-spa-2": False, "r-spa": True}


async def test_a_router_stops_at_its_slice_and_issues_again_once_the_cloud_refills_it(
    engine: Engine, fleet: Fleet, tmp_path: Path
) -> None:
    fleet.campaign("gym", slice_size=2, budget=3, per_device=9)
    gym = router(fleet, "r-gym", tmp_path)
    ingest = IngestStore(engine)
    given = [await gym.desk.on_login(PHONE_MAC) for _ in range(3)]
    assert [len(g) for g in given] == [1, 1, 0]  # the slice of 2 is spent
    written = gym.report(ingest)
    [config] = [wire.decode(p, wire.RouterConfig) for t, p, _ in written.outbox]
    assert config.coupons is not None
    gym.desk.apply_plan(config.coupons)
    more = [await gym.desk.on_login(PHONE_MAC) for _ in range(2)]
    assert [len(g) for g in more] == [1, 0]  # the budget of 3 holds fleet-wide


async def test_the_clouds_replay_of_a_routers_logins_matches_what_its_desk_issued(
    engine: Engine, fleet: Fleet, tmp_path: Path
) -> None:
    from cloud.coupon_stats import replay_router

    fleet.campaign("gym", trigger="first_visit")
    fleet.campaign("gym", trigger="nth_visit", nth_visit=3)
    gym = router(fleet, "r-gym", tmp_path)
    ingest = IngestStore(engine)
    for day, logins in ((0, 2), (1, 1), (2, 3), (5, 1)):
        for n in range(logins):
            at = float(NOW + day * 86400 + n * 60)
            gym.desk.clock = lambda at=at: at  # type: ignore[misc]
            emitter = gym.desk.events
            assert isinstance(emitter, Emitter)
            gym.events.append(
                wire.Event(
                    router_id="r-gym",
                    at=at,
                    kind=wire.EventKind.SESSION_STARTED,
                    device_id=emitter.device_id(PHONE_MAC),
                )
            )
            await gym.desk.on_login(PHONE_MAC)
    gym.report(ingest)
    with engine.connect() as connection:
        issued = connection.scalar(select(func.count()).select_from(CouponRow))
        assert replay_router(connection, "r-gym") == []
    assert issued == 2  # the first visit's and the third visit's
