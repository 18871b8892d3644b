"""Visitor rollups, the pure core: which site, local hour and counts newly stored events add.

Time comes from the events (`at`, the router's clock), so a late event from a router that
was offline lands in the hour it happened. A site's rules (time zone, passer-by threshold)
come from its history: the entry in force at the moment counted, so a new threshold
applies from then on and what was counted before stays. cloud.rollup_store does the SQL.

Definitions, per site (a merchant's figures are its sites' sums):
- visitors of an hour: distinct devices present in it (a device_seen, or within the span
  [at - dwell, at] of a device_left);
- new or returning: once per device and local day, in the hour it was first present
  that day; returning when it was present at the site on an earlier day still held
  (cloud.privacy prunes device days after `retention_visits_days`);
- stays and passers-by, dwell bands: per visit (device_left), in the hour it began; a
  passer-by stayed under the threshold in force then;
- sessions in the hour they started; their bytes and seconds in the hour they ended;
- terms acceptances and portal views in their hour.
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.wire import EventKind

DEFAULT_TIMEZONE = "UTC"
DEFAULT_PASSER_BY_SECONDS = 300.0  # Meraki's and Purple's usual 5 minutes
MAX_PRESENCE_SECONDS = 7 * 86400  # presence counts a longer stay's last week only
LATEST_AT = 253_400_000_000.0  # the end of year 9999 (datetime's limit), give or take a day
DWELL_BANDS: tuple[tuple[float, str], ...] = (
    (5 * 60, "dwell_under_5m"),
    (15 * 60, "dwell_5_15m"),
    (30 * 60, "dwell_15_30m"),
    (60 * 60, "dwell_30_60m"),
    (float("inf"), "dwell_over_60m"),
)
COUNTS = (  # the site_hours columns, in the order pages show them
    "visitors",
    "new_visitors",
    "returning_visitors",
    "stays",
    "passers_by",
    *(name for _, name in DWELL_BANDS),
    "dwell_seconds",
    "sessions",
    "sessions_ended",
    "session_bytes",
    "session_seconds",
    "terms_accepted",
    "portal_views",
)
FEWER_THAN = 5  # merchants see counts under this as MASKED
MASKED = "<5"
# Sums that describe the devices behind a count: masked when that count is.
BEHIND = {
    "dwell_seconds": ("stays", "passers_by"),
    "session_bytes": ("sessions_ended",),
    "session_seconds": ("sessions_ended",),
}

HourKey = tuple[int, date, int]  # site_id, local day, local hour
DayKey = tuple[int, date, str]  # site_id, local day, device_id
DeviceKey = tuple[int, str]  # site_id, device_id


class RulesError(ValueError):
    """A site's analytics rule is not valid; the message names it and the fix."""


@dataclass(frozen=True, slots=True)
class Rules:
    """A site's analytics rules from `valid_from` (Unix s) on."""

    valid_from: float = 0.0
    timezone: str = DEFAULT_TIMEZONE
    passer_by_seconds: float = DEFAULT_PASSER_BY_SECONDS


DEFAULT_RULES = Rules()


@dataclass(frozen=True, slots=True)
class SiteRules:
    """A site's rules over time, oldest first; before the first, the defaults."""

    entries: tuple[Rules, ...] = ()

    def at(self, moment: float) -> Rules:
        """The rules in force at `moment`."""
        found = DEFAULT_RULES
        for entry in self.entries:
            if entry.valid_from > moment:
                break
            found = entry
        return found


NO_RULES = SiteRules()


def check_rules(timezone: str, passer_by_seconds: float) -> None:
    """Raise RulesError unless `timezone` is an IANA zone and the threshold is positive."""
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise RulesError(
            f"timezone: {timezone!r} is not an IANA time zone; write e.g. Asia/Shanghai or UTC"
        ) from None
    if not 0 < passer_by_seconds <= 86400:
        raise RulesError("passer_by: must be more than 0 s and at most a day, e.g. 5m")


@functools.lru_cache(maxsize=512)
def zone(name: str) -> tzinfo:
    """The time zone `name`; UTC for a name this machine does not know."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


QUARTER = 900  # every zone's offset and DST change falls on a quarter hour (since 1972)


@functools.lru_cache(maxsize=65536)
def _slot(timezone: str, quarter: int) -> tuple[date, int, float]:
    """The local day and hour of a quarter hour (Unix s // QUARTER), and when the next
    local hour begins (wall-clock arithmetic: after a DST gap, the hour after it)."""
    local = datetime.fromtimestamp(quarter * QUARTER, zone(timezone))
    boundary = (local.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)).timestamp()
    return local.date(), local.hour, boundary


def local_hour(moment: float, rules: Rules) -> tuple[date, int]:
    """The site's local day and hour of `moment`."""
    day, hour, _ = _slot(rules.timezone, int(moment // QUARTER))
    return day, hour


def presence(start: float, end: float, history: SiteRules) -> dict[date, tuple[float, int]]:
    """Each local day of [start, end]: the first moment present, and the hours as bits."""
    found: dict[date, tuple[float, int]] = {}
    moment = start
    while True:
        day, hour, boundary = _slot(history.at(moment).timezone, int(moment // QUARTER))
        first, hours = found.get(day, (moment, 0))
        found[day] = (min(first, moment), hours | 1 << hour)
        if boundary > end:
            return found
        moment = boundary if boundary > moment else moment + 3600


def dwell_band(seconds: float) -> str:
    """The dwell band column of a visit of `seconds`."""
    for limit, name in DWELL_BANDS:
        if seconds < limit:
            return name
    return DWELL_BANDS[-1][1]  # NaN: never sent (agent.wire refuses it)


@dataclass(frozen=True, slots=True)
class Day:
    """A device's presence at a site on one local day."""

    first_seen: float
    hours: int

    def joined(self, first_seen: float, hours: int) -> Day:
        """This day with more presence."""
        return Day(min(self.first_seen, first_seen), self.hours | hours)


@dataclass(slots=True)
class TermsUse:
    """A terms version's acceptances at a site in one batch."""

    first_at: float
    last_at: float
    acceptances: int = 0


@dataclass(slots=True)
class Tally:
    """What a batch of newly stored events adds: counts per hour, presence, terms used."""

    hours: defaultdict[HourKey, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    presence: dict[DayKey, Day] = field(default_factory=dict)
    terms: dict[tuple[int, str], TermsUse] = field(default_factory=dict)

    def present(
        self, site_id: int, device_id: str, start: float, end: float, rules: SiteRules
    ) -> None:
        """The device was at the site from `start` to `end`."""
        for day, (first, hours) in presence(start, end, rules).items():
            key = (site_id, day, device_id)
            held = self.presence.get(key)
            self.presence[key] = Day(first, hours) if held is None else held.joined(first, hours)

    def hour(self, site_id: int, moment: float, rules: Rules) -> Counter[str]:
        """The counts of the site's hour of `moment`, to add to."""
        day, hour, _ = _slot(rules.timezone, int(moment // QUARTER))
        return self.hours[(site_id, day, hour)]


_SEEN, _LEFT = EventKind.DEVICE_SEEN.value, EventKind.DEVICE_LEFT.value
_STARTED, _ENDED = EventKind.SESSION_STARTED.value, EventKind.SESSION_ENDED.value
_TERMS, _VIEWED = EventKind.TERMS_ACCEPTED.value, EventKind.PORTAL_VIEWED.value


def tally(
    events: Iterable[Mapping[str, Any]],
    site_of: Mapping[str, int],
    rules: Mapping[int, SiteRules],
) -> Tally:
    """The counts `events` (events rows, each stored for the first time) add, per site."""
    made = Tally()
    for row in events:
        site_id = site_of.get(row["router_id"])
        at = float(row["at"])
        if site_id is None or not 0 <= at <= LATEST_AT:
            continue
        history = rules.get(site_id, NO_RULES)
        kind, device = row["kind"], row["device_id"]
        if kind == _SEEN:
            if device:
                made.present(site_id, device, at, at, history)
        elif kind == _LEFT:
            dwell = min(max(0.0, float(row["duration"])), at)
            start = at - dwell
            if device:
                made.present(site_id, device, max(start, at - MAX_PRESENCE_SECONDS), at, history)
            then = history.at(start)
            counts = made.hour(site_id, start, then)
            counts["stays" if dwell >= then.passer_by_seconds else "passers_by"] += 1
            counts[dwell_band(dwell)] += 1
            counts["dwell_seconds"] += dwell  # type: ignore[assignment]
        elif kind == _STARTED:
            made.hour(site_id, at, history.at(at))["sessions"] += 1
        elif kind == _ENDED:
            counts = made.hour(site_id, at, history.at(at))
            counts["sessions_ended"] += 1
            counts["session_bytes"] += int(row["session_bytes"])
            counts["session_seconds"] += max(0.0, float(row["duration"]))  # type: ignore[assignment]
        elif kind == _TERMS:
            made.hour(site_id, at, history.at(at))["terms_accepted"] += 1
            use = made.terms.setdefault((site_id, row["terms_version"]), TermsUse(at, at))
            use.first_at, use.last_at = min(use.first_at, at), max(use.last_at, at)
            use.acceptances += 1
        elif kind == _VIEWED:
            made.hour(site_id, at, history.at(at))["portal_views"] += 1
    return made


@dataclass(frozen=True, slots=True)
class Known:
    """A device at a site as stored: its first and last local day there."""

    first_day: date
    last_day: date


@dataclass(slots=True)
class Settled:
    """What to write after merging a batch's presence with what is stored."""

    days: dict[DayKey, Day] = field(default_factory=dict)
    devices: dict[DeviceKey, Known] = field(default_factory=dict)
    hours: defaultdict[HourKey, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))


def flipped_days(touched: Mapping[DayKey, Day], known: Mapping[DeviceKey, Known]) -> set[DayKey]:
    """Stored first days that stop being first (a late event found an earlier day)."""
    earliest: dict[DeviceKey, date] = {}
    for site_id, day, device in touched:
        held = earliest.get((site_id, device))
        earliest[(site_id, device)] = day if held is None else min(held, day)
    return {
        (site_id, was.first_day, device)
        for (site_id, device), day in earliest.items()
        if (was := known.get((site_id, device))) is not None and day < was.first_day
    }


def settle(
    touched: Mapping[DayKey, Day],
    stored: Mapping[DayKey, Day],
    known: Mapping[DeviceKey, Known],
    rules: Mapping[int, SiteRules],
) -> Settled:
    """Merge a batch's presence into the stored device days; the rows and hour counts that change.

    `stored` holds every stored day of `touched` and of flipped_days(); `known` every
    device's stored first and last day. Each day's contribution (visitors per hour bit;
    new or returning in the hour first present) is taken back as stored and added as
    merged, so counts stay exact whatever order the events arrive in.
    """
    made = Settled()
    by_device: defaultdict[DeviceKey, list[date]] = defaultdict(list)
    for site_id, day, device in touched:
        by_device[(site_id, device)].append(day)
    for (site_id, device), days in by_device.items():
        history = rules.get(site_id, NO_RULES)
        was = known.get((site_id, device))
        first = min(days) if was is None else min(was.first_day, *days)
        last = max(days) if was is None else max(was.last_day, *days)
        now = Known(first, last)
        if now != was:
            made.devices[(site_id, device)] = now
        again = set(days)
        if was is not None and first < was.first_day:
            again.add(was.first_day)
        for day in sorted(again):
            key = (site_id, day, device)
            before = stored.get(key)
            after = before
            if key in touched:
                fresh = touched[key]
                after = fresh if before is None else before.joined(fresh.first_seen, fresh.hours)
            assert after is not None  # a flipped day is stored
            if after != before:
                made.days[key] = after
            if before is not None:
                was_first = was is not None and day == was.first_day
                _visit(made, site_id, before, history, was_first, -1)
            _visit(made, site_id, after, history, day == first, +1)
            added = after.hours & ~(before.hours if before is not None else 0)
            for hour in range(24):
                if added >> hour & 1:
                    made.hours[(site_id, day, hour)]["visitors"] += 1
    return made


def _visit(
    made: Settled, site_id: int, day: Day, history: SiteRules, first: bool, sign: int
) -> None:
    """Count (or take back) one device day as new or returning, in its first hour."""
    local = local_hour(day.first_seen, history.at(day.first_seen))
    made.hours[(site_id, *local)]["new_visitors" if first else "returning_visitors"] += sign


def merged_hours(*parts: Mapping[HourKey, Counter[str]]) -> dict[HourKey, dict[str, float]]:
    """Hour counts added up, without the hours whose every count nets to zero."""
    total: defaultdict[HourKey, Counter[str]] = defaultdict(Counter)
    for part in parts:
        for key, counts in part.items():
            total[key].update(counts)
    return {
        key: {name: counts.get(name, 0) for name in COUNTS}
        for key, counts in sorted(total.items())
        if any(counts.values())
    }


def mask(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as merchants see it: counts under FEWER_THAN (and sums behind them) as MASKED."""
    shown = dict(row)
    for name, value in row.items():
        if name in BEHIND:
            behind = sum(int(row.get(count, 0)) for count in BEHIND[name])
            if 0 < behind < FEWER_THAN or (behind == 0 and value):
                shown[name] = MASKED
        elif name in COUNTS and isinstance(value, int | float) and 0 < value < FEWER_THAN:
            shown[name] = MASKED
    return shown
