"""Who is in the shop: a pure diff of sightings into arrivals and departures, and its readers.

A sighting is (MAC, when it last gave a sign of life). Signs come from the kernel's
neighbour table (a netlink dump: one syscall, no process), lease renewals in dnsmasq's
lease file, and traffic of authorized sessions. A device unseen for `left_after` seconds
has left; the visit's dwell time goes with the departure.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.gate.neighbours import ARP_TABLE, parse_arp_table
from agent.gate.netlink import dump_neighbours

# --- the pure core ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Visit:
    """One device's current stay: first and last sign of life."""

    first_seen: float
    last_seen: float


@dataclass(frozen=True, slots=True)
class Arrived:
    """A device showed up."""

    mac: str
    at: float


@dataclass(frozen=True, slots=True)
class Left:
    """A device has been gone `left_after` seconds; `at` is its last sign of life."""

    mac: str
    at: float
    dwell: float


class Presence:
    """The devices in the shop now; `observe` turns sightings into arrivals and departures."""

    def __init__(self, left_after: float, visits: Mapping[str, Visit] | None = None) -> None:
        self.left_after = left_after
        self.visits: dict[str, Visit] = dict(visits or {})

    def observe(self, sightings: Mapping[str, float], now: float) -> list[Arrived | Left]:
        """Apply the latest sign of life per MAC; old signs never start a visit."""
        changes: list[Arrived | Left] = []
        for mac, seen in sorted(sightings.items()):
            seen = min(seen, now)
            visit = self.visits.get(mac)
            if visit is None:
                if now - seen < self.left_after:
                    self.visits[mac] = Visit(seen, seen)
                    changes.append(Arrived(mac, seen))
            elif seen > visit.last_seen:
                self.visits[mac] = Visit(visit.first_seen, seen)
        for mac, visit in sorted(self.visits.items()):
            if now - visit.last_seen >= self.left_after:
                del self.visits[mac]
                changes.append(Left(mac, visit.last_seen, visit.last_seen - visit.first_seen))
        return changes


def latest(*sources: Mapping[str, float]) -> dict[str, float]:
    """The most recent sign of life per MAC across sources."""
    merged: dict[str, float] = {}
    for source in sources:
        for mac, seen in source.items():
            merged[mac] = max(seen, merged.get(mac, seen))
    return merged


# --- kept on tmpfs -----------------------------------------------------------------------

VISITS_FILE = "presence.json"  # in state_dir (tmpfs): survives agent restarts, not reboots


def visits_json(visits: Mapping[str, Visit]) -> str:
    """The visits as JSON: {mac: [first_seen, last_seen]}."""
    return json.dumps({mac: [v.first_seen, v.last_seen] for mac, v in sorted(visits.items())})


def visits_from_json(text: str) -> dict[str, Visit]:
    """Visits read back; entries that are not [first, last] numbers are skipped."""
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    visits: dict[str, Visit] = {}
    if isinstance(data, dict):
        for mac, times in data.items():
            if (
                isinstance(times, list)
                and len(times) == 2
                and all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in times)
            ):
                visits[mac] = Visit(float(times[0]), float(times[1]))
    return visits


def load_visits(path: Path) -> dict[str, Visit]:
    """The visits an earlier run of the agent left, if any."""
    try:
        return visits_from_json(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, UnicodeDecodeError):
        return {}


# --- the reader ---------------------------------------------------------------------------


class NeighbourReader:
    """Signs of life on the LAN interfaces; falls back to /proc/net/arp without netlink."""

    def __init__(self, lan_interfaces: Iterable[str], arp_table: Path = ARP_TABLE) -> None:
        self.lan_interfaces = tuple(lan_interfaces)
        self.arp_table = arp_table

    def _indexes(self) -> set[int]:
        indexes: set[int] = set()
        for name in self.lan_interfaces:
            try:
                indexes.add(socket.if_nametoindex(name))
            except OSError:
                continue  # not up yet: no one is on it
        return indexes

    def read(self, now: float) -> dict[str, float]:
        """MAC -> when it was last heard from (blocking: not on the loop)."""
        try:
            lan = self._indexes()
            seen: dict[str, float] = {}
            for n in dump_neighbours():
                if n.ifindex in lan:  # one device may hold several addresses: keep its latest
                    seen[n.mac] = max(now - n.seconds_ago, seen.get(n.mac, 0.0))
            return seen
        except OSError:
            table = parse_arp_table(self.arp_table.read_text())
            return {mac: now for mac in table.values()}  # no ages here: present means now
