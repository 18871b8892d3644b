"""The rollups' pure core: local hours, presence across hours and DST, masking, and counts
that do not depend on the order or batches events arrive in."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud import rollups
from cloud.models import SiteHour
from cloud.rollups import Day, DayKey, DeviceKey, Known, Rules, SiteRules

KOLKATA = SiteRules((Rules(0.0, "Asia/Kolkata", 300.0),))
BERLIN = SiteRules((Rules(0.0, "Europe/Berlin", 300.0),))


def _at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_the_rollup_columns_are_the_counts_the_core_makes() -> None:
    columns = {c.name for c in SiteHour.__table__.columns} - {"site_id", "day", "hour"}
    assert columns == set(rollups.COUNTS)


def test_a_visit_counts_in_every_local_hour_it_touches_even_at_half_past() -> None:
    # 04:20-05:40 UTC is 09:50-11:10 in Kolkata (+05:30): hours 9, 10 and 11.
    found = rollups.presence(_at("2026-11-02T04:20:00"), _at("2026-11-02T05:40:00"), KOLKATA)
    assert found == {date(2026, 11, 2): (_at("2026-11-02T04:20:00"), 1 << 9 | 1 << 10 | 1 << 11)}


def test_a_visit_across_midnight_is_present_on_both_days() -> None:
    found = rollups.presence(_at("2026-11-02T23:30:00"), _at("2026-11-03T00:10:00"), SiteRules())
    assert found == {
        date(2026, 11, 2): (_at("2026-11-02T23:30:00"), 1 << 23),
        date(2026, 11, 3): (_at("2026-11-03T00:00:00"), 1 << 0),
    }


def test_the_autumn_dst_change_merges_the_repeated_hour() -> None:
    # 25 Oct 2026, Berlin: 03:00 CEST becomes 02:00 CET. 00:30-01:30 UTC is local 02:30
    # (CEST), then 02:00-02:30 again (CET): one bucket, hour 2, and not hour 3.
    found = rollups.presence(_at("2026-10-25T00:30:00"), _at("2026-10-25T01:30:00"), BERLIN)
    assert found == {date(2026, 10, 25): (_at("2026-10-25T00:30:00"), 1 << 2)}


def test_rules_in_force_are_the_latest_that_started() -> None:
    history = SiteRules((Rules(100.0, "UTC", 300.0), Rules(200.0, "Asia/Shanghai", 600.0)))
    assert history.at(50.0) == rollups.DEFAULT_RULES
    assert history.at(150.0).passer_by_seconds == 300.0
    assert history.at(200.0).timezone == "Asia/Shanghai"


@pytest.mark.parametrize(
    ("timezone", "seconds", "field"),
    [("Mars/Olympus", 300.0, "timezone"), ("UTC", 0.0, "passer_by"), ("UTC", 1e6, "passer_by")],
)
def test_bad_rules_are_refused_by_name(timezone: str, seconds: float, field: str) -> None:
    with pytest.raises(rollups.RulesError, match=field):
        rollups.check_rules(timezone, seconds)


@pytest.mark.parametrize(
    ("seconds", "band"),
    [
        (0, "dwell_under_5m"),
        (299.9, "dwell_under_5m"),
        (300, "dwell_5_15m"),
        (3600, "dwell_over_60m"),
    ],
)
def test_dwell_bands(seconds: float, band: str) -> None:
    assert rollups.dwell_band(seconds) == band


def test_merchants_see_under_five_and_what_it_hides() -> None:
    row = {"day": "2026-11-02", "visitors": 4, "stays": 0, "passers_by": 12, "sessions_ended": 3}
    row |= {"session_bytes": 123456, "dwell_seconds": 9000.0, "new_visitors": 5}
    assert rollups.mask(row) == {
        "day": "2026-11-02",
        "visitors": "<5",
        "stays": 0,
        "passers_by": 12,
        "sessions_ended": "<5",
        "session_bytes": "<5",  # three sessions' bytes would single them out
        "dwell_seconds": 9000.0,  # twelve visits' total
        "new_visitors": 5,
    }


def test_events_of_unknown_routers_or_impossible_times_are_not_counted() -> None:
    events = [
        {"router_id": "stranger", "at": 1e9, "kind": "device_seen", "device_id": "a"},
        {"router_id": "r", "at": 1e12, "kind": "device_seen", "device_id": "a"},
    ]
    made = rollups.tally(events, {"r": 1}, {})
    assert not made.presence and not made.hours


# --- order independence -------------------------------------------------------------------

DEVICES = ["d0", "d1", "d2"]
BASE = _at("2026-11-02T00:00:00")
# Site 1 moves to Shanghai time and a 10-minute threshold on its third day; site 2 is in
# Kolkata (+05:30) throughout.
RULES = {
    1: SiteRules(
        (Rules(0.0, "UTC", 300.0), Rules(BASE + 2 * 86400 + 3600, "Asia/Shanghai", 600.0))
    ),
    2: KOLKATA,
}


def _events(draw_items: list[tuple[int, str, float, float]]) -> list[dict[str, Any]]:
    made = []
    for seq, (router, device, start, dwell) in enumerate(draw_items):
        made.append(
            {"router_id": f"r{router}", "seq": 2 * seq, "at": start, "kind": "device_seen"}
            | {"device_id": device, "duration": 0.0, "session_bytes": 0, "terms_version": ""}
        )
        made.append(
            {"router_id": f"r{router}", "seq": 2 * seq + 1, "at": start + dwell}
            | {"kind": "device_left", "device_id": device, "duration": dwell}
            | {"session_bytes": 0, "terms_version": ""}
        )
    return made


def _apply(batches: list[list[dict[str, Any]]]) -> dict[Any, dict[str, float]]:
    """The rollups after `batches` in turn, kept in memory as rollup_store keeps them."""
    site_of, rules = {"r0": 1, "r1": 1, "r2": 2}, RULES
    days: dict[DayKey, Day] = {}
    known: dict[DeviceKey, Known] = {}
    hours: defaultdict[Any, Counter[str]] = defaultdict(Counter)
    for batch in batches:
        made = rollups.tally(batch, site_of, rules)
        locked = dict(known)
        for site, day, device in made.presence:
            held = locked.get((site, device))
            if (site, device) not in known:  # a new row reads back as created
                locked[(site, device)] = (
                    Known(day, day)
                    if held is None
                    else Known(min(held.first_day, day), max(held.last_day, day))
                )
        wanted = set(made.presence) | rollups.flipped_days(made.presence, locked)
        stored = {key: days[key] for key in wanted if key in days}
        settled = rollups.settle(made.presence, stored, locked, rules)
        days |= settled.days
        known |= {k: v for k, v in locked.items() if k not in known} | settled.devices
        for key, counts in rollups.merged_hours(made.hours, settled.hours).items():
            hours[key].update(counts)
    return {k: {n: v for n, v in c.items() if v} for k, c in hours.items() if any(c.values())}


visits = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.sampled_from(DEVICES),
        st.floats(BASE, BASE + 4 * 86400).map(lambda t: round(t, 1)),
        st.sampled_from([30.0, 299.0, 300.0, 3000.0, 7200.0]),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(visits, st.randoms(use_true_random=False), st.integers(1, 5))
def test_counts_do_not_depend_on_order_or_batches(
    items: list[tuple[int, str, float, float]], chance: Any, size: int
) -> None:
    events = _events(items)
    at_once = _apply([events])
    shuffled = list(events)
    chance.shuffle(shuffled)
    in_pieces = _apply([shuffled[i : i + size] for i in range(0, len(shuffled), size)])
    assert in_pieces == at_once
    days = Counter((site, day) for site, day, _ in {k for k in _days_of(events)})
    per_day: Counter[Any] = Counter()
    for (site, day, _hour), counts in at_once.items():
        per_day[(site, day)] += counts.get("new_visitors", 0) + counts.get("returning_visitors", 0)
    assert per_day == days


def _days_of(events: list[dict[str, Any]]) -> set[DayKey]:
    return set(rollups.tally(events, {"r0": 1, "r1": 1, "r2": 2}, RULES).presence)
