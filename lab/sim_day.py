"""The simulator's pure core: who visits which shop when, and what each router sees.

Deterministic from a seed; no clock, no I/O. A day's demand has three peaks (morning
coffee, lunch, the evening); each shop has regulars who come back on later days, some of
them twice a day, and the alliance's phones wander into each other's shops (one shared
SSID, so one private MAC per phone across the alliance). Passers-by are seen for a few
minutes and never open the portal; visitors stay, most view the portal, and most of those
accept the terms and get a session that ends when they have been gone for the idle
timeout, or at the session limit. The raw MACs made here go only to agent.events.Emitter.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from agent.sessions import EndReason
from agent.wire import EventKind

HOUR = 3600.0
OPENS, CLOSES = 7.0, 23.0  # hours of the day a shop's Wi-Fi sees phones
PEAKS = ((8.5, 0.6, 1.0), (12.75, 0.7, 1.3), (19.0, 0.9, 1.1))  # (hour, spread h, height)
BASELINE = 0.12  # demand between the peaks, against a peak of about 1
REGULARS_PER_SHOP = 25
REGULAR_DAILY = 0.45  # chance a regular comes on a given day
REGULAR_TWICE = 0.15  # chance a regular who comes, comes back later that day
WANDERERS_PER_SHOP = 12  # visits a day by phones that are regulars elsewhere in the alliance
NEW_PER_SHOP = 40  # visits a day by phones never seen before (half of them passers-by)
PASSER_BY = 0.5  # share of the new phones that only pass by
PORTAL_VIEW = 0.75  # share of visitors who open the portal
ACCEPT = 0.8  # share of portal viewers who accept the terms
SESSION_TIMEOUT = 3600.0  # agent default (Limits.session_timeout)
IDLE_TIMEOUT = 900.0  # agent default (Limits.idle_timeout): a session outlives its visitor
LEFT_AFTER = 120.0  # seconds unseen before presence reports a device gone
TERMS_VERSION = "2026-01"
BYTES_PER_SECOND = 30_000  # median traffic of a phone online in the shop


@dataclass(frozen=True, slots=True)
class Phone:
    """One shopper's phone; `mac` never leaves the simulated router."""

    mac: str
    home: int  # the shop it is a regular of, or -1


@dataclass(frozen=True, slots=True)
class Happening:
    """One thing a router sees, at `at` (Unix seconds), about one phone."""

    at: float
    shop: int
    kind: EventKind
    mac: str
    ip: str = ""
    started_at: float = 0.0  # the session's start, for session events
    dwell: float = 0.0  # device_left: the visit's length
    session_bytes: int = 0
    reason: EndReason | None = None


def demand(hour: float) -> float:
    """Relative arrivals at `hour` of the day: three peaks over a low baseline."""
    if not OPENS <= hour < CLOSES:
        return 0.0
    peaks = sum(h * math.exp(-(((hour - at) / spread) ** 2) / 2) for at, spread, h in PEAKS)
    return BASELINE + peaks


_MINUTES = [OPENS + m / 60 for m in range(int((CLOSES - OPENS) * 60))]
_WEIGHTS = [demand(m + 1 / 120) for m in _MINUTES]


def _mac(rng: random.Random) -> str:
    first = rng.randrange(256) & 0xFC
    if rng.random() < 0.7:  # most phones use a private (locally administered) address
        first |= 0x02
    return ":".join(f"{b:02x}" for b in [first, *(rng.randrange(256) for _ in range(5))])


def population(seed: int, shops: int) -> list[Phone]:
    """The alliance's regulars: REGULARS_PER_SHOP phones for each shop."""
    rng = random.Random(f"{seed}:population")
    return [Phone(_mac(rng), shop) for shop in range(shops) for _ in range(REGULARS_PER_SHOP)]


def _arrival(rng: random.Random, day_start: float) -> float:
    hour = rng.choices(_MINUTES, _WEIGHTS)[0]
    return day_start + hour * HOUR + rng.random() * 60


def _visit(
    rng: random.Random, shop: int, mac: str, ip: str, arrive: float, passer_by: bool
) -> list[Happening]:
    """What the router sees of one visit, in time order."""
    if passer_by:
        stay = rng.uniform(60, 240)
        left = arrive + stay + LEFT_AFTER
        return [
            Happening(arrive, shop, EventKind.DEVICE_SEEN, mac),
            Happening(left, shop, EventKind.DEVICE_LEFT, mac, dwell=round(stay, 1)),
        ]
    stay = min(rng.lognormvariate(math.log(30 * 60), 0.6), 4 * HOUR)
    leave = arrive + stay
    seen = [Happening(arrive, shop, EventKind.DEVICE_SEEN, mac)]
    if rng.random() < PORTAL_VIEW:
        viewed = arrive + rng.uniform(10, 90)
        seen.append(Happening(viewed, shop, EventKind.PORTAL_VIEWED, mac))
        if rng.random() < ACCEPT:
            start = viewed + rng.uniform(5, 40)
            end, reason = leave + IDLE_TIMEOUT, EndReason.IDLE
            if end - start > SESSION_TIMEOUT:
                end, reason = start + SESSION_TIMEOUT, EndReason.TIMEOUT
            online = max(0.0, min(end, leave) - start)
            used = max(1000, int(rng.lognormvariate(math.log(BYTES_PER_SECOND), 1.0) * online))
            seen += [
                Happening(start, shop, EventKind.TERMS_ACCEPTED, mac, ip=ip, started_at=start),
                Happening(start, shop, EventKind.SESSION_STARTED, mac, ip=ip, started_at=start),
                Happening(
                    end,
                    shop,
                    EventKind.SESSION_ENDED,
                    mac,
                    ip=ip,
                    started_at=start,
                    session_bytes=used,
                    reason=reason,
                ),
            ]
    seen.append(
        Happening(leave + LEFT_AFTER, shop, EventKind.DEVICE_LEFT, mac, dwell=round(stay, 1))
    )
    return seen


def plan_day(
    seed: int, day: int, day_start: float, shops: int, phones: list[Phone]
) -> list[Happening]:
    """Every happening of day `day` (starting at `day_start`) at `shops` shops, time ordered."""
    rng = random.Random(f"{seed}:day:{day}")
    happenings: list[Happening] = []
    for shop in range(shops):
        regulars = [p for p in phones if p.home == shop]
        strangers = [p for p in phones if p.home != shop]
        visits: list[tuple[float, str, bool]] = []  # (arrival, mac, passer_by)
        for phone in regulars:
            if rng.random() < REGULAR_DAILY:
                visits.append((_arrival(rng, day_start), phone.mac, False))
                if rng.random() < REGULAR_TWICE:
                    visits.append((_arrival(rng, day_start), phone.mac, False))
        for phone in rng.sample(strangers, min(WANDERERS_PER_SHOP, len(strangers))):
            visits.append((_arrival(rng, day_start), phone.mac, False))
        for _ in range(NEW_PER_SHOP):
            visits.append((_arrival(rng, day_start), _mac(rng), rng.random() < PASSER_BY))
        busy_until: dict[str, float] = {}
        for number, (arrive, mac, passer_by) in enumerate(sorted(visits)):
            if arrive < busy_until.get(mac, 0.0):
                continue  # still there from an earlier visit: one visit, not two
            seen = _visit(rng, shop, mac, f"192.168.1.{10 + number % 240}", arrive, passer_by)
            busy_until[mac] = seen[-1].at + LEFT_AFTER
            happenings += seen
    return sorted(happenings, key=lambda h: (h.at, h.shop, h.mac, h.kind.value))


def plan(seed: int, shops: int, days: int, first_day_start: float) -> list[Happening]:
    """`days` consecutive days from `first_day_start` (a midnight), time ordered."""
    phones = population(seed, shops)
    whole: list[Happening] = []
    for day in range(days):
        whole += plan_day(seed, day, first_day_start + day * 24 * HOUR, shops, phones)
    return sorted(whole, key=lambda h: (h.at, h.shop, h.mac, h.kind.value))


def counts_by_kind(happenings: Iterable[Happening]) -> Counter[str]:
    """How many events of each kind the happenings make."""
    return Counter(h.kind.value for h in happenings)
