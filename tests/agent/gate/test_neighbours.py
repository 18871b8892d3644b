"""A client's MAC comes from the kernel's neighbour table."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from agent.errors import ClientUnknown
from agent.gate.neighbours import ip_of, mac_of, parse_arp_table

ARP = """IP address       HW type     Flags       HW address            Mask     Device
10.77.0.10       0x1         0x2         02:11:22:33:44:55     *        br-lan
10.77.0.11       0x1         0x0         00:00:00:00:00:00     *        br-lan
10.77.0.12       0x1         0x6         02:AA:BB:CC:DD:EE     *        br-lan
garbage line
"""


def test_complete_entries_are_read_and_incomplete_ones_ignored() -> None:
    table = parse_arp_table(ARP)
    assert table == {
        IPv4Address("10.77.0.10"): "02:11:22:33:44:55",
        IPv4Address("10.77.0.12"): "02:aa:bb:cc:dd:ee",
    }


def test_unknown_ip_raises_client_unknown(tmp_path: Path) -> None:
    arp = tmp_path / "arp"
    arp.write_text(ARP)
    assert mac_of(IPv4Address("10.77.0.10"), arp) == "02:11:22:33:44:55"
    assert ip_of("02:aa:bb:cc:dd:ee", arp) == IPv4Address("10.77.0.12")
    with pytest.raises(ClientUnknown, match=r"10\.77\.0\.11"):
        mac_of(IPv4Address("10.77.0.11"), arp)
