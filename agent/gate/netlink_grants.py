"""Grants and revokes written straight to the kernel's sets over nfnetlink.

One grant is one nf_tables batch, so one transaction, as `nft -f` would send it: the
same elements (agent.ruleset.kernel_keys) with the same timeout, and the same
add-then-delete for a revoke, so that revoking an absent client is not an error. No
library and no process: libnftables costs the agent 2 MiB of a router's memory (its
context, its parser and its cache of the table), and an `nft` process 4 ms a change.
The counters come from the sets' own `counter`: the kernel gives each new element one.
"""

from __future__ import annotations

import socket
import struct

from agent.access import UNLIMITED, SpeedLimit
from agent.clients import Client
from agent.errors import GateError
from agent.gate.nfnetlink import (
    FAMILIES,
    NETLINK_NETFILTER,
    NFNL_SUBSYS_NFTABLES,
    NFT_MSG_NEWSETELEM,
    NFTA_DATA_VALUE,
    NFTA_EXPR_DATA,
    NFTA_EXPR_NAME,
    NFTA_LIST_ELEM,
    NFTA_SET_ELEM_KEY,
    NFTA_SET_ELEM_LIST_ELEMENTS,
    NFTA_SET_ELEM_LIST_SET,
    NFTA_SET_ELEM_LIST_TABLE,
    NFTA_SET_ELEM_TIMEOUT,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_REQUEST,
    attribute,
    nested,
    nft_message,
    parse_acks,
    string_attribute,
)
from agent.ruleset import TABLE, Grant, burst_bytes, element_timeout, kernel_keys, limit_rates

NFT_MSG_DELSETELEM = 14
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
_BATCH_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_BATCH_BODY = struct.Struct("!BBH")  # nfgenmsg; here its resource id, in network order
_RECEIVE = 16 * 1024
_TIMEOUT = 2.0
NFTA_SET_ELEM_EXPR = 7
NFTA_LIMIT_RATE, NFTA_LIMIT_UNIT, NFTA_LIMIT_BURST = 1, 2, 3
NFTA_LIMIT_TYPE, NFTA_LIMIT_FLAGS = 4, 5
NFT_LIMIT_PKT_BYTES, NFT_LIMIT_F_INV = 1, 1  # a rate in bytes; `over`: match above the rate
# message, set, key, timeout in seconds, and for a limit set the element's rate in bytes/s
Change = tuple[int, str, bytes, int | None, int | None]


def _batch_marker(kind: int, seq: int) -> bytes:
    size = _BATCH_HEADER.size + _BATCH_BODY.size
    return _BATCH_HEADER.pack(size, kind, NLM_F_REQUEST, seq, 0) + _BATCH_BODY.pack(
        socket.AF_UNSPEC, 0, NFNL_SUBSYS_NFTABLES
    )


def grant_changes(grant: Grant, *, replace: bool = False) -> list[Change]:
    """The element changes of a grant, in order; `replace` first drops those it has."""
    head = revoke_changes(grant.client, grant.limit) if replace else []
    timeout = element_timeout(grant.timeout)
    ip = grant.client.ip.packed
    return (
        head
        + [
            (NFT_MSG_NEWSETELEM, name, key, timeout, None)
            for name, key in kernel_keys(grant.client).items()
        ]
        + [
            (NFT_MSG_NEWSETELEM, name, ip, timeout, rate)
            for name, rate in limit_rates(grant.limit).items()
        ]
    )


def revoke_changes(client: Client, limit: SpeedLimit = UNLIMITED) -> list[Change]:
    """The element changes of a revoke: add, then delete, so an absent client is no error.

    `limit` names the limit sets the client is in; their add carries no limit of its own
    (the set's, which never drops, for the moment before the delete).
    """
    keyed = [*kernel_keys(client).items(), *((n, client.ip.packed) for n in limit_rates(limit))]
    return [
        (message, name, key, None, None)
        for name, key in keyed
        for message in (NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM)
    ]


def _limit(per_second: int) -> bytes:
    """A `limit rate over per_second bytes/second` expression, the phone's own bucket."""
    data = (
        attribute(NFTA_LIMIT_RATE, struct.pack(">Q", per_second))
        + attribute(NFTA_LIMIT_UNIT, struct.pack(">Q", 1))  # per second
        + attribute(NFTA_LIMIT_BURST, struct.pack(">I", burst_bytes(per_second)))
        + attribute(NFTA_LIMIT_TYPE, struct.pack(">I", NFT_LIMIT_PKT_BYTES))
        + attribute(NFTA_LIMIT_FLAGS, struct.pack(">I", NFT_LIMIT_F_INV))
    )
    expression = string_attribute(NFTA_EXPR_NAME, "limit") + nested(NFTA_EXPR_DATA, data)
    return nested(NFTA_SET_ELEM_EXPR, expression)


def encode_batch(table: str, changes: list[Change], first_seq: int) -> bytes:
    """One nf_tables transaction: batch begin, one message per change, batch end.

    Every change asks for an acknowledgement (sequence numbers first_seq + 1 ...).
    """
    family, _, name = table.partition(" ")
    if family not in FAMILIES or not name:
        raise GateError(f"not a table name: {table!r} (expected e.g. 'inet loopspot')")
    table_attr = string_attribute(NFTA_SET_ELEM_LIST_TABLE, name)
    parts = [_batch_marker(NFNL_MSG_BATCH_BEGIN, first_seq)]
    seq = first_seq
    for message, set_name, key, timeout, rate in changes:
        seq += 1
        element = [nested(NFTA_SET_ELEM_KEY, attribute(NFTA_DATA_VALUE, key))]
        if timeout is not None:
            element.append(attribute(NFTA_SET_ELEM_TIMEOUT, struct.pack(">Q", timeout * 1000)))
        if rate is not None:
            element.append(_limit(rate))
        attrs = (
            table_attr
            + string_attribute(NFTA_SET_ELEM_LIST_SET, set_name)
            + nested(NFTA_SET_ELEM_LIST_ELEMENTS, nested(NFTA_LIST_ELEM, *element))
        )
        flags = NLM_F_ACK | (NLM_F_CREATE if message == NFT_MSG_NEWSETELEM else 0)
        parts.append(nft_message(message, flags, FAMILIES[family], attrs, seq))
    parts.append(_batch_marker(NFNL_MSG_BATCH_END, seq + 1))
    return b"".join(parts)


class NetlinkGrants:
    """Grants and revokes as nf_tables batches on a netlink socket opened per change."""

    name = "netlink"

    def __init__(self, table: str = TABLE) -> None:
        self.table = table
        self._seq = 0
        self._buffer = bytearray(_RECEIVE)

    def grant(self, grant: Grant, *, replace: bool = False) -> None:
        """Let a client through until its timeout, in one transaction."""
        self._apply(grant_changes(grant, replace=replace), f"grant {grant.client.mac}")

    def revoke(self, client: Client, limit: SpeedLimit = UNLIMITED) -> None:
        """Take a client granted at `limit` out of every set, in one transaction."""
        self._apply(revoke_changes(client, limit), f"revoke {client.mac}")

    def _apply(self, changes: list[Change], doing: str) -> None:
        first = self._seq
        self._seq = (self._seq + len(changes) + 2) & 0x7FFFFFFF
        batch = encode_batch(self.table, changes, first)
        waiting = set(range(first + 1, first + 1 + len(changes)))
        view = memoryview(self._buffer)
        try:
            with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
                sock.settimeout(_TIMEOUT)
                sock.sendto(batch, (0, 0))
                while waiting:
                    size = sock.recv_into(self._buffer)
                    parse_acks(view[:size], waiting, doing)
        except OSError as exc:
            raise GateError(f"cannot {doing} over netlink: {exc}") from exc
        finally:
            view.release()
