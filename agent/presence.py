"""Who is in the shop: a pure diff of sightings into arrivals and departures, and its readers.

A sighting is (MAC, when it last gave a sign of life). Signs come from the kernel's
neighbour table (a netlink dump: one syscall, no process), lease renewals in dnsmasq's
lease file, and traffic of authorized sessions. A device unseen for `left_after` seconds
has left; the visit's dwell time goes with the departure.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from agent.clients import BadMac, normalize_mac
from agent.gate.neighbours import ARP_TABLE, parse_arp_table

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


# --- the neighbour table over netlink -----------------------------------------------------

RTM_NEWNEIGH, RTM_GETNEIGH = 28, 30
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NDA_DST, NDA_LLADDR, NDA_CACHEINFO = 1, 2, 3
NUD_INCOMPLETE, NUD_FAILED, NUD_NOARP, NUD_PERMANENT = 0x01, 0x20, 0x40, 0x80
_NOT_A_SIGN = NUD_INCOMPLETE | NUD_FAILED | NUD_NOARP | NUD_PERMANENT
_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_NDMSG = struct.Struct("=BBHiHBB")  # ndmsg
_ATTR = struct.Struct("=HH")  # rtattr
_CACHEINFO = struct.Struct("=IIII")  # nda_cacheinfo: confirmed, used, updated (clock ticks ago)
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
MAX_DUMP_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Neighbour:
    """One IPv4 neighbour entry: who, on which interface, and how long since its last sign."""

    mac: str
    ip: IPv4Address
    ifindex: int
    seconds_ago: float


def _attributes(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    while offset + _ATTR.size <= end:
        length, kind = _ATTR.unpack_from(data, offset)
        if length < _ATTR.size or offset + length > end:
            break
        found[kind] = data[offset + _ATTR.size : offset + length]
        offset += (length + 3) & ~3
    return found


def _neighbour(data: bytes, offset: int, end: int) -> Neighbour | None:
    if end - offset < _NDMSG.size:
        return None
    family, _, _, ifindex, state, _, _ = _NDMSG.unpack_from(data, offset)
    if family != socket.AF_INET or state & _NOT_A_SIGN:
        return None
    attrs = _attributes(data, offset + _NDMSG.size, end)
    lladdr, dst, info = (
        attrs.get(NDA_LLADDR, b""),
        attrs.get(NDA_DST, b""),
        attrs.get(NDA_CACHEINFO),
    )
    if len(lladdr) != 6 or len(dst) != 4:
        return None
    try:
        mac = normalize_mac(lladdr.hex(":"))
    except BadMac:
        return None
    ago = 0.0
    if info is not None and len(info) >= _CACHEINFO.size:
        confirmed, _, updated, _ = _CACHEINFO.unpack_from(info)
        ago = min(confirmed, updated) / _TICKS
    return Neighbour(mac, IPv4Address(dst), ifindex, ago)


def parse_neighbour_dump(data: bytes) -> tuple[list[Neighbour], bool]:
    """The neighbours in netlink replies, and whether the dump is complete (NLMSG_DONE seen)."""
    found: list[Neighbour] = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _, _, _ = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size or offset + length > len(data):
            break  # damaged: take what was whole
        if kind in (NLMSG_DONE, NLMSG_ERROR):
            return found, True
        if kind == RTM_NEWNEIGH:
            neighbour = _neighbour(data, offset + _HEADER.size, offset + length)
            if neighbour is not None:
                found.append(neighbour)
        offset += (length + 3) & ~3
    return found, False


def dump_neighbours() -> list[Neighbour]:
    """The kernel's IPv4 neighbour table, in one netlink request (blocking: not on the loop)."""
    request = _HEADER.pack(
        _HEADER.size + _NDMSG.size, RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, 1, 0
    )
    request += _NDMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(2.0)
        sock.sendto(request, (0, 0))
        found: list[Neighbour] = []
        received = 0
        while received < MAX_DUMP_BYTES:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += len(chunk)
            neighbours, done = parse_neighbour_dump(chunk)
            found.extend(neighbours)
            if done:
                break
    return found


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
