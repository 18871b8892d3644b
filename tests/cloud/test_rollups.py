"""The rollups ingest keeps equal a direct count over the raw events, on both databases."""

from __future__ import annotations

import random
import threading
from datetime import UTC, date, datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from agent import wire
from cloud import rollup_store, visitor_stats
from cloud.ingest_store import IngestStore
from cloud.models import SiteAnalytics, SiteDay, SiteDevice
from tests.cloud.analytics_data import (
    DAY0,
    Fleet,
    device,
    direct_count,
    make_fleet,
    rolled_up,
    shop_days,
    terms_direct,
    terms_rolled_up,
    write_all,
)

LAYOUT = {
    "noodles": ("chen", "UTC", ["r-noodles-1", "r-noodles-2"]),
    "tea": ("chen", "Asia/Shanghai", ["r-tea"]),
    "spa": ("lin", "Asia/Kolkata", ["r-spa"]),  # +05:30: local hours start at half past
}
OFFLINE = "r-noodles-2"  # its events arrive last, hours and days late


def _deliveries(fleet: Fleet, seed: int) -> list[list]:  # type: ignore[type-arg]
    """Every router's messages in groups, routers interleaved; OFFLINE's come last."""
    chance = random.Random(seed)
    online = [m for r in sorted(fleet.events) if r != OFFLINE for m in fleet.messages(r)]
    chance.shuffle(online)
    late = fleet.messages(OFFLINE)
    ordered = online + late
    return [ordered[i : i + 3] for i in range(0, len(ordered), 3)]


def test_rollups_equal_a_direct_count_with_a_late_router_and_redelivery(engine: Engine) -> None:
    fleet = make_fleet(engine, LAYOUT)
    shop_days(fleet, seed=7)
    deliveries = _deliveries(fleet, seed=7)
    store = IngestStore(engine)
    write_all(store, iter(deliveries))
    expected = direct_count(engine, fleet)
    assert rolled_up(engine) == expected
    assert terms_rolled_up(engine) == terms_direct(engine)
    # Every batch again (QoS 1 redelivers): nothing more is counted.
    write_all(store, iter(deliveries[::2]))
    assert rolled_up(engine) == expected
    # The late router's visits had earlier days than some of its regulars' first days
    # elsewhere in the run: some of them were counted new first and returning after.
    assert any(v.get("returning_visitors") for v in expected.values())
    assert any(v.get("passers_by") for v in expected.values())


def test_two_workers_at_once_stay_exact(engine: Engine) -> None:
    fleet = make_fleet(engine, LAYOUT)
    shop_days(fleet, seed=11, days=2, devices=12)  # few devices: the workers meet often
    deliveries = _deliveries(fleet, seed=11)
    halves = [deliveries[0::2], deliveries[1::2]]
    errors: list[BaseException] = []

    def run(batches: list) -> None:  # type: ignore[type-arg]
        try:
            write_all(IngestStore(engine), iter(batches))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(half,)) for half in halves]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert rolled_up(engine) == direct_count(engine, fleet)


def test_a_late_first_visit_turns_the_later_day_into_a_returning_one(engine: Engine) -> None:
    fleet = make_fleet(engine, {"cafe": ("wu", "UTC", ["r-cafe-1", "r-cafe-2"])})
    site = fleet.sites["cafe"]
    shopper = device(1)
    fleet.visit("r-cafe-1", shopper, DAY0 + 86400 + 10 * 3600, 900.0)  # Tuesday 10:00
    fleet.visit("r-cafe-2", shopper, DAY0 + 9 * 3600 + 1800, 600.0)  # Monday 09:30, sent late
    store = IngestStore(engine)
    write_all(store, iter([fleet.messages("r-cafe-1")]))
    with engine.connect() as connection:
        tuesday = visitor_stats.new_and_returning(
            connection, [site], date(2026, 11, 3), date(2026, 11, 3), exact=True
        )
    assert tuesday == [{"day": "2026-11-03", "new_visitors": 1, "returning_visitors": 0}]
    write_all(store, iter([fleet.messages("r-cafe-2")]))
    with engine.connect() as connection:
        both = visitor_stats.new_and_returning(
            connection, [site], date(2026, 11, 2), date(2026, 11, 3), exact=True
        )
        hours = visitor_stats.visitors_by_hour(
            connection, [site], date(2026, 11, 2), date(2026, 11, 2), exact=True
        )
        device_row = connection.execute(select(SiteDevice.first_day, SiteDevice.last_day)).one()
    assert both == [
        {"day": "2026-11-02", "new_visitors": 1, "returning_visitors": 0},
        {"day": "2026-11-03", "new_visitors": 0, "returning_visitors": 1},
    ]
    assert hours == [
        {"day": "2026-11-02", "hour": 9, "visitors": 1, "new_visitors": 1, "returning_visitors": 0}
    ]
    assert tuple(device_row) == (date(2026, 11, 2), date(2026, 11, 3))
    assert rolled_up(engine) == direct_count(engine, fleet)


def test_a_new_threshold_applies_from_then_on(engine: Engine) -> None:
    fleet = make_fleet(engine, {"bakery": ("zhao", "UTC", ["r-bakery"])})
    site = fleet.sites["bakery"]
    change = DAY0 + 12 * 3600
    store = IngestStore(engine)
    fleet.visit("r-bakery", device(1), DAY0 + 9 * 3600, 400.0)  # 6m40s before the change
    write_all(store, iter([fleet.messages("r-bakery")]))
    with engine.begin() as connection:
        rollup_store.set_rules(connection, site, change, "UTC", 600.0)
    before = len(fleet.events["r-bakery"])
    fleet.visit("r-bakery", device(2), DAY0 + 13 * 3600, 400.0)  # after: a passer-by now
    fleet.visit("r-bakery", device(3), DAY0 + 10 * 3600, 400.0)  # late, from before: stays
    batch = fleet.messages("r-bakery", per_message=500)[0]
    assert isinstance(batch.message, wire.EventBatch)
    write_all(store, iter([[batch]]))
    assert len(fleet.events["r-bakery"]) == before + 4
    with engine.connect() as connection:
        shown = visitors_stats_hours(connection, site)
        rules = rollup_store.current_rules(connection, site, change + 1)
    assert shown == {9: (1, 0), 10: (1, 0), 13: (0, 1)}
    assert rules.passer_by_seconds == 600.0
    assert rolled_up(engine) == direct_count(engine, fleet)


def visitors_stats_hours(connection: object, site: int) -> dict[int, tuple[int, int]]:
    """Hour: (stays, passers_by) of 2 November."""
    rows = visitor_stats.visitors_and_passers_by(
        connection,  # type: ignore[arg-type]
        [site],
        date(2026, 11, 2),
        date(2026, 11, 2),
        exact=True,
        by_hour=True,
    )
    return {row["hour"]: (row["stays"], row["passers_by"]) for row in rows}


def test_merchants_see_counts_under_five_as_under_five(engine: Engine) -> None:
    fleet = make_fleet(engine, {"a": ("qian", "UTC", ["r-a"]), "b": ("qian", "UTC", ["r-b"])})
    for number in range(3):
        fleet.visit("r-a", device(number), DAY0 + 9 * 3600 + number, 1200.0, session_bytes=5)
    for number in range(3, 5):
        fleet.visit("r-b", device(number), DAY0 + 9 * 3600 + number, 1200.0)
    write_all(IngestStore(engine), iter([fleet.messages("r-a"), fleet.messages("r-b")]))
    monday = date(2026, 11, 2)
    with engine.connect() as connection:
        one_site = visitor_stats.visitors_by_day(connection, [fleet.sites["a"]], monday, monday)
        sites = visitor_stats.merchant_sites(connection, fleet.merchants["qian"])
        merchant = visitor_stats.visitors_by_day(connection, sites, monday, monday)
        operator = visitor_stats.visitors_by_day(
            connection, [fleet.sites["a"]], monday, monday, exact=True
        )
        data = visitor_stats.sessions_and_data(connection, sites, monday, monday)
        terms = visitor_stats.terms_history(connection, sites)
    assert one_site == [
        {"day": "2026-11-02", "visitors": "<5", "new_visitors": "<5", "returning_visitors": 0}
    ]
    assert merchant == [
        {"day": "2026-11-02", "visitors": 5, "new_visitors": 5, "returning_visitors": 0}
    ]
    assert operator[0]["visitors"] == 3
    assert data[0]["sessions"] == "<5" and data[0]["session_bytes"] == "<5"
    assert terms[0]["acceptances"] == "<5" and terms[0]["terms_version"] == "v1"


def test_device_days_hold_one_row_per_device_and_day(engine: Engine) -> None:
    fleet = make_fleet(engine, LAYOUT)
    shop_days(fleet, seed=3, days=2, devices=10)
    write_all(IngestStore(engine), iter(_deliveries(fleet, seed=3)))
    with Session(engine) as session:
        days = session.scalar(select(func.count()).select_from(SiteDay))
        devices = session.scalar(select(func.count()).select_from(SiteDevice))
        rules = session.scalar(select(func.count()).select_from(SiteAnalytics))
    with engine.connect() as connection:
        daily = sum(
            row["visitors"]
            for site in fleet.sites.values()
            for row in visitor_stats.visitors_by_day(
                connection, [site], date(2026, 11, 1), date(2026, 11, 5), exact=True
            )
        )
    assert days == daily  # the daily figure counts each device once a day, exactly
    assert devices is not None and devices <= 10 * len(fleet.sites)
    assert rules == len(LAYOUT)
    assert datetime.fromtimestamp(DAY0, UTC).date() == date(2026, 11, 2)
