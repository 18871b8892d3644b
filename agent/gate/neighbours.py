"""A client's MAC address from its IPv4 address, through the kernel's neighbour table."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

from agent.clients import BadMac, normalize_mac
from agent.errors import ClientUnknown
from agent.gate.netlink import NeighbourLookup

ARP_TABLE = Path("/proc/net/arp")
_ATF_COM = 0x02  # the entry is complete


def parse_arp_table(text: str) -> dict[IPv4Address, str]:
    """IP -> MAC for every complete entry of /proc/net/arp text."""
    table: dict[IPv4Address, str] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        try:
            flags = int(fields[2], 16)
            if flags & _ATF_COM:
                table[IPv4Address(fields[0])] = normalize_mac(fields[3])
        except (ValueError, BadMac):
            continue
    return table


def mac_of(
    ip: IPv4Address, arp_table: Path = ARP_TABLE, lookup: NeighbourLookup | None = None
) -> str:
    """The MAC the kernel has for `ip`; raises ClientUnknown when there is none.

    With `lookup`, the kernel is asked for this one address over netlink; the whole
    table is read only where netlink cannot answer.
    """
    mac = None
    if lookup is not None:
        try:
            found = lookup.mac_of(ip)
            mac = normalize_mac(found) if found else None
        except (OSError, BadMac):
            mac = None
    if mac is None:
        mac = parse_arp_table(arp_table.read_text()).get(ip)
    if mac is None:
        raise ClientUnknown(f"no neighbour entry for {ip}")
    return mac


def ip_of(mac: str, arp_table: Path = ARP_TABLE) -> IPv4Address:
    """The IPv4 address the kernel sees `mac` using; raises ClientUnknown when none."""
    for ip, known in parse_arp_table(arp_table.read_text()).items():
        if known == mac:
            return ip
    raise ClientUnknown(f"no neighbour entry for {mac}")
