"""Grants and revokes as nf_tables batches: which elements change, and the bytes sent."""

from __future__ import annotations

import errno
import struct
from ipaddress import IPv4Address

import pytest

from agent.access import SpeedLimit
from agent.clients import Client
from agent.errors import GateError
from agent.gate.netlink_grants import (
    NFNL_MSG_BATCH_BEGIN,
    NFNL_MSG_BATCH_END,
    NFT_MSG_DELSETELEM,
    encode_batch,
    grant_changes,
    revoke_changes,
)
from agent.gate.nfnetlink import NFT_MSG_NEWSETELEM, NLM_F_ACK, NLM_F_CREATE, parse_acks
from agent.ruleset import (
    CLIENTS_SET,
    DOWNLOAD_LIMITS_SET,
    DOWNLOADS_SET,
    ONLINE_MACS_SET,
    TABLE,
    UPLOAD_LIMITS_SET,
    Grant,
    _client_keys,
    client_of_key,
    kernel_keys,
)

PHONE = Client("02:aa:bb:cc:dd:ee", IPv4Address("10.77.0.9"))
MAC = bytes.fromhex("02aabbccddee")
IP = IPv4Address("10.77.0.9").packed
NESTED = 0x8000


def messages(batch: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, seq, body) of each netlink message in a batch."""
    found, offset = [], 0
    while offset < len(batch):
        length, kind, flags, seq, _ = struct.unpack_from("=IHHII", batch, offset)
        found.append((kind, flags, seq, batch[offset + 16 : offset + length]))
        offset += (length + 3) & ~3
    return found


def attributes(data: bytes) -> dict[int, bytes]:
    found, offset = {}, 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        found[kind & ~NESTED] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return found


def test_the_kernel_keys_name_the_same_sets_as_the_script_keys() -> None:
    assert kernel_keys(PHONE).keys() == _client_keys(PHONE).keys()


def test_the_kernel_keys_are_the_sets_own_layouts() -> None:
    keys = kernel_keys(PHONE)
    assert keys == {CLIENTS_SET: MAC + b"\0\0" + IP, DOWNLOADS_SET: IP, ONLINE_MACS_SET: MAC}
    assert client_of_key(keys[CLIENTS_SET]) == PHONE


def test_a_grant_adds_the_client_to_every_set_with_its_timeout() -> None:
    assert grant_changes(Grant(PHONE, 90)) == [
        (NFT_MSG_NEWSETELEM, name, key, 90, None) for name, key in kernel_keys(PHONE).items()
    ]


def test_a_grant_without_timeout_adds_elements_without_one() -> None:
    assert {change[3] for change in grant_changes(Grant(PHONE, None))} == {None}


def test_a_revoke_adds_then_deletes_so_an_absent_client_is_no_error() -> None:
    changes = revoke_changes(PHONE)
    assert [(m, name) for m, name, _, _, _ in changes] == [
        (message, name)
        for name in (CLIENTS_SET, DOWNLOADS_SET, ONLINE_MACS_SET)
        for message in (NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM)
    ]


def test_a_replacing_grant_revokes_first_in_the_same_transaction() -> None:
    changes = grant_changes(Grant(PHONE, 60), replace=True)
    assert changes == revoke_changes(PHONE) + grant_changes(Grant(PHONE, 60))


def test_the_batch_is_framed_for_nf_tables_and_every_change_asks_for_an_ack() -> None:
    sent = messages(encode_batch(TABLE, grant_changes(Grant(PHONE, 90)), first_seq=40))
    begin, *changes, end = sent
    assert begin[0] == NFNL_MSG_BATCH_BEGIN and begin[3] == b"\0\0\0\x0a"  # res_id: nf_tables
    assert end[0] == NFNL_MSG_BATCH_END and end[2] == 44
    assert [seq for _, _, seq, _ in changes] == [41, 42, 43]
    for kind, flags, _, _ in changes:
        assert kind == (10 << 8) | NFT_MSG_NEWSETELEM
        assert flags & NLM_F_ACK and flags & NLM_F_CREATE


def test_an_element_carries_its_table_set_key_and_timeout_in_milliseconds() -> None:
    _, (_, _, _, body), *_ = messages(encode_batch(TABLE, grant_changes(Grant(PHONE, 90)), 0))
    assert body[0] == 1  # nfgenmsg family: inet
    attrs = attributes(body[4:])
    assert attrs[1] == b"loopspot\0" and attrs[2] == b"clients\0"
    element = attributes(attributes(attrs[3])[1])
    assert attributes(element[1])[1] == MAC + b"\0\0" + IP
    assert struct.unpack(">Q", element[4]) == (90_000,)


def test_a_table_name_without_family_is_refused() -> None:
    with pytest.raises(GateError, match="not a table name"):
        encode_batch("loopspot", [], 0)


def ack(seq: int, code: int = 0) -> bytes:
    return struct.pack("=IHHII", 36, 2, 0, seq, 0) + struct.pack("=i", code) + b"\0" * 16


def test_acks_are_taken_off_the_waiting_list() -> None:
    waiting = {1, 2, 3}
    parse_acks(memoryview(ack(1) + ack(3)), waiting, "grant")
    assert waiting == {2}


def test_a_refusal_names_the_change_and_the_kernel_s_error() -> None:
    with pytest.raises(GateError, match=r"refused to grant 02:aa.*ENOENT"):
        parse_acks(memoryview(ack(1, -errno.ENOENT)), {1}, f"grant {PHONE.mac}")


def test_a_limited_phone_s_elements_carry_its_own_bucket_each_way() -> None:
    changes = grant_changes(Grant(PHONE, 90, SpeedLimit(download=4000, upload=1000)))
    assert changes[3:] == [
        (NFT_MSG_NEWSETELEM, UPLOAD_LIMITS_SET, IP, 90, 125_000),
        (NFT_MSG_NEWSETELEM, DOWNLOAD_LIMITS_SET, IP, 90, 500_000),
    ]
    *_, (_, _, _, body), _ = messages(encode_batch(TABLE, changes, 0))
    element = attributes(attributes(attributes(body[4:])[3])[1])
    expression = attributes(element[7])  # NFTA_SET_ELEM_EXPR
    assert expression[1] == b"limit\0"
    limit = attributes(expression[2])
    assert struct.unpack(">Q", limit[1]) == (500_000,)  # bytes per
    assert struct.unpack(">Q", limit[2]) == (1,)  # second
    assert struct.unpack(">I", limit[3]) == (50_000,)  # burst: a tenth of a second
    assert struct.unpack(">II", limit[4] + limit[5]) == (1, 1)  # in bytes, `over`


def test_a_limited_phone_s_revoke_adds_then_deletes_its_limit_elements() -> None:
    changes = revoke_changes(PHONE, SpeedLimit(upload=1000))
    assert changes[-2:] == [
        (NFT_MSG_NEWSETELEM, UPLOAD_LIMITS_SET, IP, None, None),
        (NFT_MSG_DELSETELEM, UPLOAD_LIMITS_SET, IP, None, None),
    ]
