"""Reading the gate's sets from nfnetlink messages: elements, counters, errors."""

from __future__ import annotations

import errno
import struct
from ipaddress import IPv4Address

import pytest

from agent.clients import Client
from agent.errors import GateError
from agent.gate.nfnetlink import (
    NFNL_SUBSYS_NFTABLES,
    NFT_MSG_NEWSETELEM,
    NFTA_SET_ELEM_EXPR,
    NFTA_SET_ELEM_EXPRESSIONS,
    NLM_F_DUMP_INTR,
    NLMSG_DONE,
    NLMSG_ERROR,
    DumpInterrupted,
    KernelSets,
    SetElement,
    _counted_element,
    parse_set_dump,
)
from agent.ruleset import client_of_key

NESTED = 0x8000
PHONE_KEY = bytes.fromhex("02aabbccddee") + b"\0\0" + IPv4Address("10.77.0.9").packed


def attr(kind: int, value: bytes, *, nested: bool = False) -> bytes:
    head = struct.pack("=HH", 4 + len(value), kind | (NESTED if nested else 0))
    return head + value + b"\0" * (-len(value) % 4)


def counter(byte_count: int, packets: int, *, nested: bool = True) -> bytes:
    data = attr(1, struct.pack(">Q", byte_count)) + attr(2, struct.pack(">Q", packets))
    return attr(1, b"counter\0") + attr(2, data, nested=nested)


def element(key: bytes, *, expires_ms: int | None = None, expr: bytes = b"") -> bytes:
    body = attr(1, attr(1, key), nested=True)
    if expires_ms is not None:
        body += attr(4, struct.pack(">Q", 3_600_000)) + attr(5, struct.pack(">Q", expires_ms))
    return attr(1, body + expr, nested=True)


def message(kind: int, body: bytes, flags: int = 0x2) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, flags, 7, 0) + body


def elements_message(*elements: bytes) -> bytes:
    body = struct.pack("=BBH", 1, 0, 0) + attr(1, b"loopspot\0") + attr(2, b"clients\0")
    body += attr(3, b"".join(elements), nested=True)
    return message((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM, body)


def parse(data: bytes) -> tuple[list[SetElement], bool]:
    found: list[SetElement] = []
    done = parse_set_dump(memoryview(data), found)
    return found, done


def test_an_element_gives_its_key_time_left_and_counter() -> None:
    one = element(PHONE_KEY, expires_ms=59_500, expr=attr(NFTA_SET_ELEM_EXPR, counter(1500, 3)))
    found, done = parse(elements_message(one))
    assert found == [SetElement(PHONE_KEY, 59_500, 1500, 3)]
    assert not done


# One NFT_MSG_NEWSETELEM as Linux 6.18 sent it for `02:00:00:00:00:01 . 10.77.0.2 timeout 1h`
# in a set with `counter`: key, counter expression, timeout, expiration.
LINUX_6_18 = bytes.fromhex(
    "900000000c0a020001000000004c000001000002"
    "0d0001006c6f6f7073706f74000000000c000200636c69656e747300"
    "600003005c00010014000100100001000200000000010000"
    "0a4d00022c0007000c000100636f756e746572001c0002000c000100"
    "00000000000000000c000200000000000000000"
    "00c000400000000000036ee800c00050000000000"
    "0036ee50"
)


def test_the_kernels_own_message_is_read_in_one_unpack() -> None:
    found, _ = parse(LINUX_6_18)
    key = bytes.fromhex("020000000001") + b"\0\0" + IPv4Address("10.77.0.2").packed
    assert found == [SetElement(key, 3_599_952, 0, 0)]
    start = LINUX_6_18.index(bytes.fromhex("14000100"))  # the element's first attribute
    assert _counted_element(memoryview(LINUX_6_18), start, len(LINUX_6_18)) == found[0]


def test_the_usual_layout_and_any_other_order_read_the_same() -> None:
    timed = attr(4, struct.pack(">Q", 3_600_000)) + attr(5, struct.pack(">Q", 42_000))
    key_attr = attr(1, attr(1, PHONE_KEY))  # no NLA_F_NESTED, as the kernel sends them
    counted = attr(NFTA_SET_ELEM_EXPR, counter(1500, 3, nested=False))
    usual = elements_message(attr(1, key_attr + counted + timed))
    reordered = elements_message(attr(1, timed + key_attr + counted))
    expected = SetElement(PHONE_KEY, 42_000, 1500, 3)
    assert parse(usual)[0] == parse(reordered)[0] == [expected]
    start = usual.index(key_attr)
    assert _counted_element(memoryview(usual), start, start + len(key_attr + counted + timed))


def test_counters_in_the_newer_expressions_list_are_read_too() -> None:
    listed = attr(1, counter(42, 1), nested=True)
    one = element(PHONE_KEY, expr=attr(NFTA_SET_ELEM_EXPRESSIONS, listed, nested=True))
    found, _ = parse(elements_message(one))
    assert found == [SetElement(PHONE_KEY, None, 42, 1)]


def test_an_element_without_a_timeout_has_no_expiry_and_zero_counts() -> None:
    found, _ = parse(elements_message(element(PHONE_KEY)))
    assert found == [SetElement(PHONE_KEY, None, 0, 0)]


def test_several_messages_in_one_read_and_the_end_of_the_dump() -> None:
    other = bytes.fromhex("02aabbccddef") + b"\0\0" + IPv4Address("10.77.0.10").packed
    data = elements_message(element(PHONE_KEY)) + elements_message(element(other))
    data += message(NLMSG_DONE, struct.pack("=i", 0))
    found, done = parse(data)
    assert [e.key for e in found] == [PHONE_KEY, other]
    assert done


def test_a_kernel_error_is_raised_with_its_name() -> None:
    error = message(NLMSG_ERROR, struct.pack("=i", -errno.ENOENT) + b"\0" * 16)
    with pytest.raises(GateError, match="ENOENT"):
        parse(error)


def test_a_dump_the_set_changed_under_is_flagged_to_be_read_again() -> None:
    whole = elements_message(element(PHONE_KEY))
    interrupted = whole[:6] + struct.pack("=H", 0x2 | NLM_F_DUMP_INTR) + whole[8:]
    with pytest.raises(DumpInterrupted):
        parse(interrupted)


def test_a_truncated_message_is_refused_not_misread() -> None:
    whole = elements_message(element(PHONE_KEY))
    with pytest.raises(GateError, match="damaged"):
        parse(whole[:-8])


def test_a_clients_key_is_the_mac_padded_then_the_address() -> None:
    assert client_of_key(PHONE_KEY) == Client("02:aa:bb:cc:dd:ee", IPv4Address("10.77.0.9"))
    assert client_of_key(PHONE_KEY[:10]) is None


def test_a_table_name_without_a_family_is_refused() -> None:
    with pytest.raises(GateError, match="'loopspot'"):
        KernelSets("loopspot")
