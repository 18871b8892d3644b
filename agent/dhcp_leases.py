"""dnsmasq's lease file, read for presence only: MAC, IPv4 address and expiry per lease.

Host names are not kept: they are personal ("Anna's iPhone") and never leave the router.
Lines that are not an IPv4 lease of a unicast MAC (DHCPv6 leases, the duid line, damage)
are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address
from pathlib import Path

from agent.clients import BadMac, normalize_mac

MAX_LEASES = 65536  # a /16 of leases; anything beyond is not a lease file
MAX_FILE_BYTES = 8 * 1024 * 1024
_MAX_EXPIRY = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Lease:
    """One DHCPv4 lease: `expires` is Unix time, 0 for an infinite lease."""

    mac: str
    ip: IPv4Address
    expires: int


def parse_lease(line: str) -> Lease | None:
    """The lease on one line of the file ('<expiry> <mac> <ip> <name> <client-id>'), or None."""
    fields = line.split()
    if len(fields) < 3 or not fields[0].isascii() or not fields[0].isdigit():
        return None
    expires = int(fields[0])
    if expires > _MAX_EXPIRY:
        return None
    try:
        return Lease(normalize_mac(fields[1]), IPv4Address(fields[2]), expires)
    except (BadMac, AddressValueError):
        return None


def parse_leases(text: str) -> list[Lease]:
    """Every valid IPv4 lease in the file's text, in file order, at most MAX_LEASES."""
    leases: list[Lease] = []
    for line in text.splitlines():
        lease = parse_lease(line)
        if lease is not None:
            leases.append(lease)
            if len(leases) >= MAX_LEASES:
                break
    return leases


def read_leases(path: Path) -> list[Lease]:
    """The leases in `path`; none when the file is missing (dnsmasq not running yet)."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES)
    except FileNotFoundError:
        return []
    return parse_leases(data.decode("utf-8", errors="replace"))


class LeaseWatch:
    """Which devices renewed or took a lease since the last look: each did talk to us just now."""

    def __init__(self) -> None:
        self._known: dict[str, int] | None = None  # None until the first look: a baseline

    def renewed(self, leases: Iterable[Lease]) -> set[str]:
        """MACs whose lease is new or has a new expiry; empty on the first look."""
        current = {lease.mac: lease.expires for lease in leases}
        before, self._known = self._known, current
        if before is None:
            return set()
        return {mac for mac, expires in current.items() if before.get(mac) != expires}
