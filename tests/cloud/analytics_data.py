"""Generated shop days for the analytics tests, and a direct count over the raw events.

The direct count is written apart from cloud.rollups on purpose: it samples every visit
minute by minute instead of walking hour boundaries, and decides new and returning from
all the events at once instead of batch by batch.
"""

from __future__ import annotations

import math
import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from agent import wire
from cloud.ingest_core import Inbound, read_message
from cloud.models import Event, Merchant, Router, Site, SiteAnalytics, SiteHour, SiteTerms

DAY0 = datetime(2026, 11, 2, tzinfo=UTC).timestamp()  # a Monday
BANDS = ((300, "dwell_under_5m"), (900, "dwell_5_15m"), (1800, "dwell_15_30m"))
BANDS += ((3600, "dwell_30_60m"), (math.inf, "dwell_over_60m"))


def device(number: int) -> str:
    """A made-up device_id (32 hex digits)."""
    return f"{number:032x}"


@dataclass
class Fleet:
    """Sites (with their rules) and routers in the database; events per router in seq order."""

    sites: dict[str, int] = field(default_factory=dict)  # name: id
    merchants: dict[str, int] = field(default_factory=dict)
    site_of: dict[str, int] = field(default_factory=dict)  # router_id: site id
    rules: dict[int, list[tuple[float, str, float]]] = field(default_factory=dict)
    events: dict[str, list[wire.Event]] = field(default_factory=lambda: defaultdict(list))

    def emit(self, router_id: str, kind: wire.EventKind, at: float, **details: Any) -> None:
        """Add one event from `router_id`, next in its seq."""
        seq = len(self.events[router_id])
        self.events[router_id].append(
            wire.Event(router_id=router_id, boot_id="boot-1", seq=seq, at=at, kind=kind, **details)
        )

    def visit(self, router_id: str, who: str, start: float, dwell: float, **more: Any) -> None:
        """A device arrives at `start` and leaves after `dwell` s; maybe a session in between."""
        self.emit(router_id, wire.EventKind.DEVICE_SEEN, start, device_id=who)
        if more.get("session_bytes") is not None:
            self.emit(router_id, wire.EventKind.PORTAL_VIEWED, start + 5, device_id=who)
            self.emit(
                router_id,
                wire.EventKind.TERMS_ACCEPTED,
                start + 9,
                device_id=who,
                terms_version=more.get("terms", "v1"),
            )
            self.emit(router_id, wire.EventKind.SESSION_STARTED, start + 10, device_id=who)
            self.emit(
                router_id,
                wire.EventKind.SESSION_ENDED,
                start + dwell - 1,
                device_id=who,
                session_bytes=more["session_bytes"],
                duration=dwell - 11,
            )
        self.emit(
            router_id, wire.EventKind.DEVICE_LEFT, start + dwell, device_id=who, duration=dwell
        )

    def messages(self, router_id: str, per_message: int = 40) -> list[Inbound]:
        """The router's events as EventBatch messages, as its spool would send them."""
        events = self.events[router_id]
        topic = str(wire.Topic(router_id, wire.Channel.EVENTS))
        return [
            read_message(
                topic,
                wire.EventBatch(
                    router_id=router_id, events=tuple(events[i : i + per_message])
                ).encode(),
            )
            for i in range(0, len(events), per_message)
        ]


def make_fleet(engine: Engine, layout: dict[str, tuple[str, str, list[str]]]) -> Fleet:
    """Sites by name: (merchant, time zone, routers); rules valid from before DAY0."""
    fleet = Fleet()
    tag = uuid.uuid4().hex[:6]
    with Session(engine) as session, session.begin():
        for name, (merchant_name, timezone, routers) in layout.items():
            if merchant_name not in fleet.merchants:
                merchant = Merchant(name=f"{merchant_name}-{tag}")
                session.add(merchant)
                session.flush()
                fleet.merchants[merchant_name] = merchant.id
            site = Site(name=name, merchant_id=fleet.merchants[merchant_name])
            session.add(site)
            session.flush()
            fleet.sites[name] = site.id
            session.add(
                SiteAnalytics(
                    site_id=site.id, valid_from=0.0, timezone=timezone, passer_by_seconds=300.0
                )
            )
            fleet.rules[site.id] = [(0.0, timezone, 300.0)]
            for router_id in routers:
                session.add(Router(id=router_id, site_id=site.id))
                fleet.site_of[router_id] = site.id
    return fleet


def shop_days(fleet: Fleet, seed: int, days: int = 3, devices: int = 30) -> None:
    """Visits over `days` days at every router: regulars who come back on later days,
    passers-by, long stays across hour boundaries, sessions with data."""
    chance = random.Random(seed)
    routers = sorted(fleet.site_of)
    regulars = {n: chance.choice(routers) for n in range(devices)}
    for day in range(days):
        for number in range(devices):
            if chance.random() < 0.35:
                continue
            visits = 2 if chance.random() < 0.3 else 1  # lunch and evening, maybe elsewhere
            for _ in range(visits):
                router_id = regulars[number] if chance.random() < 0.8 else chance.choice(routers)
                start = DAY0 + day * 86400 + chance.uniform(7 * 3600, 23.5 * 3600)
                dwell = chance.choice((40.0, 170.0, 299.0, 300.0, 610.0, 1500.0, 2900.0, 5400.0))
                logged_in = chance.random() < 0.5
                fleet.visit(
                    router_id,
                    device(number),
                    round(start, 3),
                    dwell,
                    session_bytes=chance.randrange(1, 10**8) if logged_in else None,
                    terms="v1" if day == 0 else chance.choice(("v1", "v2")),
                )


def write_all(store: Any, batches: Iterator[list[Inbound]]) -> None:
    """Write each batch through an IngestStore."""
    for batch in batches:
        store.write(batch, datetime.now(UTC))


# --- the direct count ---------------------------------------------------------------------


def _rules_at(history: list[tuple[float, str, float]], moment: float) -> tuple[str, float]:
    chosen = ("UTC", 300.0)
    for valid_from, timezone, threshold in sorted(history):
        if valid_from <= moment:
            chosen = (timezone, threshold)
    return chosen


def _where(history: list[tuple[float, str, float]], moment: float) -> tuple[date, int]:
    local = datetime.fromtimestamp(moment, ZoneInfo(_rules_at(history, moment)[0]))
    return local.date(), local.hour


def _moments(start: float, end: float) -> list[float]:
    """start, end and every whole minute between: every local hour a visit touches."""
    minute = math.ceil(start / 60) * 60
    return [start, end, *range(minute, math.floor(end) + 1, 60)]


def direct_count(engine: Engine, fleet: Fleet) -> dict[tuple[int, date, int], dict[str, float]]:
    """The site_hours rows the raw events call for (only hours and counts not zero)."""
    with Session(engine) as session:
        events = session.scalars(select(Event)).all()
        routers = {r[0]: r[1] for r in session.execute(select(Router.id, Router.site_id))}
        rules: dict[int, list[tuple[float, str, float]]] = defaultdict(list)
        for row in session.scalars(select(SiteAnalytics)):
            rules[row.site_id].append((row.valid_from, row.timezone, row.passer_by_seconds))
    counts: defaultdict[tuple[int, date, int], defaultdict[str, float]] = defaultdict(
        lambda: defaultdict(float)
    )
    present: defaultdict[tuple[int, date, int], set[str]] = defaultdict(set)
    first_moment: dict[tuple[int, date, str], float] = {}
    for event in events:
        site = routers[event.router_id]
        history = rules[site]
        if event.kind in ("device_seen", "device_left"):
            start = event.at - event.duration if event.kind == "device_left" else event.at
            for moment in _moments(start, event.at):
                day, hour = _where(history, moment)
                present[(site, day, hour)].add(event.device_id)
                key = (site, day, event.device_id)
                first_moment[key] = min(first_moment.get(key, moment), moment)
        if event.kind == "device_left":
            start = event.at - event.duration
            threshold = _rules_at(history, start)[1]
            bucket = counts[(site, *_where(history, start))]
            bucket["stays" if event.duration >= threshold else "passers_by"] += 1
            bucket[next(name for limit, name in BANDS if event.duration < limit)] += 1
            bucket["dwell_seconds"] += event.duration
        bucket = counts[(site, *_where(history, event.at))]
        if event.kind == "session_started":
            bucket["sessions"] += 1
        elif event.kind == "session_ended":
            bucket["sessions_ended"] += 1
            bucket["session_bytes"] += event.session_bytes
            bucket["session_seconds"] += event.duration
        elif event.kind == "terms_accepted":
            bucket["terms_accepted"] += 1
        elif event.kind == "portal_viewed":
            bucket["portal_views"] += 1
    for key, devices in present.items():
        counts[key]["visitors"] = len(devices)
    first_day: dict[tuple[int, str], date] = {}
    for site, day, who in first_moment:
        first_day[(site, who)] = min(first_day.get((site, who), day), day)
    for (site, day, who), moment in first_moment.items():
        name = "new_visitors" if day == first_day[(site, who)] else "returning_visitors"
        counts[(site, *_where(rules[site], moment))][name] += 1
    return {
        key: {name: round(value, 3) for name, value in values.items() if value}
        for key, values in counts.items()
        if any(values.values())
    }


def rolled_up(engine: Engine) -> dict[tuple[int, date, int], dict[str, float]]:
    """The site_hours rows as stored (only hours and counts not zero)."""
    with Session(engine) as session:
        rows = session.scalars(select(SiteHour)).all()
    from cloud.rollups import COUNTS

    found = {}
    for row in rows:
        values = {name: round(float(getattr(row, name)), 3) for name in COUNTS}
        values = {name: value for name, value in values.items() if value}
        if values:
            found[(row.site_id, row.day, row.hour)] = values
    return found


def terms_direct(engine: Engine) -> dict[tuple[int, str], tuple[float, float, int]]:
    """Per site and terms version: first and last acceptance and their number, from events."""
    with Session(engine) as session:
        routers = {r[0]: r[1] for r in session.execute(select(Router.id, Router.site_id))}
        found: dict[tuple[int, str], tuple[float, float, int]] = {}
        for event in session.scalars(select(Event).where(Event.kind == "terms_accepted")):
            key = (routers[event.router_id], event.terms_version)
            first, last, times = found.get(key, (event.at, event.at, 0))
            found[key] = (min(first, event.at), max(last, event.at), times + 1)
    return found


def terms_rolled_up(engine: Engine) -> dict[tuple[int, str], tuple[float, float, int]]:
    """site_terms as stored."""
    with Session(engine) as session:
        return {
            (row.site_id, row.terms_version): (row.first_at, row.last_at, row.acceptances)
            for row in session.scalars(select(SiteTerms))
        }
