"""The simulator's day, as pure data: peaks, returning phones, passers-by, sessions."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from datetime import UTC, datetime

from agent.wire import EventKind
from lab.sim_day import HOUR, IDLE_TIMEOUT, SESSION_TIMEOUT, Happening, demand, plan
from lab.simulator import QUIET_GAP, schedule

MIDNIGHT = datetime(2026, 6, 1, tzinfo=UTC).timestamp()


def arrivals_by_hour(happenings: list[Happening]) -> Counter[int]:
    """device_seen events per hour of the day (UTC)."""
    return Counter(
        datetime.fromtimestamp(h.at, UTC).hour
        for h in happenings
        if h.kind is EventKind.DEVICE_SEEN
    )


def has_three_peaks(hours: Counter[int]) -> bool:
    """Morning, lunch and evening each busier than the lulls between them, twice over."""
    morning = max(hours[h] for h in (7, 8, 9))
    lunch = max(hours[h] for h in (12, 13))
    evening = max(hours[h] for h in (18, 19, 20))
    late_morning = min(hours[h] for h in (10, 11))
    afternoon = min(hours[h] for h in (15, 16))
    return min(morning, lunch) > 2 * late_morning and min(lunch, evening) > 2 * afternoon


def test_demand_peaks_in_the_morning_at_lunch_and_in_the_evening() -> None:
    assert demand(8.5) > 3 * demand(10.5) < demand(12.75)
    assert demand(12.75) > 3 * demand(16.0) < demand(19.0)
    assert demand(3.0) == 0.0 == demand(23.5)


def test_a_day_has_three_peaks_of_arrivals() -> None:
    assert has_three_peaks(arrivals_by_hour(plan(1, 20, 1, MIDNIGHT)))


def test_the_same_seed_plays_the_same_days_and_another_seed_others() -> None:
    assert plan(7, 3, 2, MIDNIGHT) == plan(7, 3, 2, MIDNIGHT)
    assert plan(7, 3, 2, MIDNIGHT) != plan(8, 3, 2, MIDNIGHT)


def test_phones_return_on_later_days_and_to_other_shops_of_the_alliance() -> None:
    days_at: defaultdict[tuple[int, str], set[int]] = defaultdict(set)
    shops_of: defaultdict[str, set[int]] = defaultdict(set)
    for h in plan(1, 5, 3, MIDNIGHT):
        if h.kind is EventKind.DEVICE_SEEN:
            days_at[(h.shop, h.mac)].add(int((h.at - MIDNIGHT) // (24 * HOUR)))
            shops_of[h.mac].add(h.shop)

    returning = [key for key, days in days_at.items() if len(days) >= 2]
    assert len(returning) >= 5 * 10
    assert sum(1 for shops in shops_of.values() if len(shops) >= 2) >= 20


def test_each_visit_is_seen_then_left_and_a_session_ends_after_it_started() -> None:
    happenings = plan(3, 4, 1, MIDNIGHT)
    open_visits: dict[tuple[int, str], float] = {}
    for h in happenings:
        key = (h.shop, h.mac)
        if h.kind is EventKind.DEVICE_SEEN:
            assert key not in open_visits, "two visits of one phone overlap"
            open_visits[key] = h.at
        elif h.kind is EventKind.DEVICE_LEFT:
            assert h.at - open_visits.pop(key) >= h.dwell > 0
        elif h.kind is EventKind.SESSION_ENDED:
            assert 0 < h.at - h.started_at <= SESSION_TIMEOUT
            assert h.session_bytes > 0
    assert not open_visits
    ended = [h for h in happenings if h.kind is EventKind.SESSION_ENDED]
    kinds = Counter(h.kind for h in happenings)
    assert kinds[EventKind.SESSION_STARTED] == kinds[EventKind.TERMS_ACCEPTED] == len(ended)
    assert kinds[EventKind.PORTAL_VIEWED] > len(ended)


def test_passers_by_stay_minutes_and_never_open_the_portal() -> None:
    happenings = plan(5, 3, 1, MIDNIGHT)
    portal = {(h.shop, h.mac) for h in happenings if h.kind is EventKind.PORTAL_VIEWED}
    short = [h for h in happenings if h.kind is EventKind.DEVICE_LEFT and h.dwell < 5 * 60]
    assert len(short) > 20
    assert sum(1 for h in short if (h.shop, h.mac) in portal) < len(short) / 4
    assert IDLE_TIMEOUT < SESSION_TIMEOUT


def test_nights_are_played_as_a_quiet_hour() -> None:
    happenings = plan(1, 2, 2, MIDNIGHT)
    offsets = schedule(happenings, speed=100.0)

    assert offsets == sorted(offsets)
    longest = max(b - a for a, b in itertools.pairwise(offsets))
    assert longest <= QUIET_GAP / 100.0 + 1e-9
    night = max(b.at - a.at for a, b in itertools.pairwise(happenings))
    assert night > 3 * HOUR
    span = happenings[-1].at - happenings[0].at
    assert offsets[-1] <= (span - night + QUIET_GAP) / 100.0 + 1e-6
