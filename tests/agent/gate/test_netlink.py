"""Parsing the kernel's RTM_NEWNEIGH answer: a usable entry gives its MAC, anything else None."""

from __future__ import annotations

import socket
import struct

from hypothesis import given
from hypothesis import strategies as st

from agent.gate.netlink import NDA_DST, NDA_LLADDR, RTM_NEWNEIGH, parse_reply

NUD_REACHABLE = 0x02


def reply(
    state: int, mac: bytes = bytes.fromhex("02aabbccddee"), kind: int = RTM_NEWNEIGH
) -> bytes:
    attrs = struct.pack("=HH", 8, NDA_DST) + bytes([10, 9, 0, 5])
    attrs += struct.pack("=HH", 4 + len(mac), NDA_LLADDR) + mac + b"\0" * (-len(mac) % 4)
    body = struct.pack("=BxxxiHBB", socket.AF_INET, 3, state, 0, 1) + attrs
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 1, 0) + body


def test_a_reachable_entry_gives_its_mac() -> None:
    assert parse_reply(reply(NUD_REACHABLE)) == "02:aa:bb:cc:dd:ee"


def test_incomplete_or_failed_entries_give_none() -> None:
    assert parse_reply(reply(0x01)) is None
    assert parse_reply(reply(0x20)) is None


def test_an_error_message_gives_none() -> None:
    assert parse_reply(reply(NUD_REACHABLE, kind=2)) is None


def test_a_hardware_address_that_is_not_ethernet_gives_none() -> None:
    assert parse_reply(reply(NUD_REACHABLE, mac=b"\x01\x02")) is None


@given(st.binary(max_size=200))
def test_hostile_bytes_give_none_or_a_well_formed_mac(data: bytes) -> None:
    mac = parse_reply(data)
    assert mac is None or (len(mac) == 17 and mac.count(":") == 5)
