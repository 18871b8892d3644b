"""The gate's sets read straight from the kernel over nfnetlink: no `nft` process, no JSON.

A counter poll asks for the elements of one set in one dump and parses them as they
arrive, in a buffer it reuses, so 10,000 sessions cost a few hundred kilobytes of netlink
messages instead of megabytes of JSON turned into dicts. The messages are built with the
helpers here, which agent.gate.netlink_grants shares to write elements.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from agent.errors import GateError

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWTABLE, NFT_MSG_GETTABLE = 0, 1
NFT_MSG_NEWSETELEM, NFT_MSG_GETSETELEM = 12, 13
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP, NLM_F_CREATE = 0x1, 0x4, 0x300, 0x400
NLA_F_NESTED = 0x8000
NLM_F_DUMP_INTR = 0x10  # the set changed during the dump: what came may be incomplete
DUMP_TRIES = 3
FAMILIES = {"inet": 1, "ip": 2, "arp": 3, "netdev": 5, "bridge": 7, "ip6": 10}
NFTA_TABLE_NAME = 1
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_TIMEOUT, NFTA_SET_ELEM_EXPIRATION = 1, 4, 5
NFTA_SET_ELEM_EXPR = 7
NFTA_SET_ELEM_EXPRESSIONS = 11
NFTA_DATA_VALUE = 1
NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 2
NFTA_COUNTER_BYTES, NFTA_COUNTER_PACKETS = 1, 2
_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER
_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_NFGENMSG = struct.Struct("=BBH")  # nfgenmsg: family, version, resource id
_ATTR = struct.Struct("=HH")  # nlattr
_ERRNO = struct.Struct("=i")
_U64 = struct.Struct(">Q")
_COUNTER_NAME = _ATTR.pack(12, NFTA_EXPR_NAME) + b"counter\0"  # an expression's name attribute
# What the kernel sends after an element's key when its set has `counter`: the counter
# expression (name, bytes, packets), then timeout and expiration if the element has them.
# Matched whole, that layout is read in one unpack; anything else takes the general walk.
_COUNTER_HEAD = (
    _ATTR.pack(44, NFTA_SET_ELEM_EXPR)
    + _COUNTER_NAME
    + _ATTR.pack(28, NFTA_EXPR_DATA)
    + _ATTR.pack(12, NFTA_COUNTER_BYTES)
)
_PACKETS_HEAD = _ATTR.pack(12, NFTA_COUNTER_PACKETS)
_TIMES_HEADS = (_ATTR.pack(12, NFTA_SET_ELEM_TIMEOUT), _ATTR.pack(12, NFTA_SET_ELEM_EXPIRATION))
_COUNTED = struct.Struct(">24sQ4sQ")  # counter head, bytes, packets head, packets
_COUNTED_TIMED = struct.Struct(">24sQ4sQ4sQ4sQ")  # ... timeout head, timeout, expiry head, expiry
_RECEIVE = 16 * 1024  # a short hold of the GIL per read: a poll never stalls an accept
_TIMEOUT = 2.0


class DumpInterrupted(GateError):
    """The set changed while it was being dumped; read it again."""


@dataclass(frozen=True, slots=True)
class SetElement:
    """One element of a set: its key as the kernel stores it, time left, and its counter."""

    key: bytes
    expires_ms: int | None
    bytes: int
    packets: int


def _attributes(data: memoryview, offset: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, start, end) of each attribute between offset and end."""
    while offset + 4 <= end:
        length, kind = _ATTR.unpack_from(data, offset)
        if length < 4 or offset + length > end:
            return
        yield kind & _TYPE_MASK, offset + 4, offset + length
        offset += (length + 3) & ~3


def _counter(data: memoryview, offset: int, end: int) -> tuple[int, int] | None:
    """(bytes, packets) of one expression, when it is a counter."""
    if data[offset : offset + len(_COUNTER_NAME)] != _COUNTER_NAME:
        return None
    offset += len(_COUNTER_NAME)
    byte_count = packets = 0
    unpack = _ATTR.unpack_from
    while offset + 4 <= end:  # the expression's data, then into it
        length, kind = unpack(data, offset)
        if length < 4 or offset + length > end:
            return None
        if kind & _TYPE_MASK == NFTA_EXPR_DATA:
            inner, stop = offset + 4, offset + length
            while inner + 4 <= stop:
                size, what = unpack(data, inner)
                if size < 4 or inner + size > stop:
                    break
                if size == 12 and what & _TYPE_MASK == NFTA_COUNTER_BYTES:
                    byte_count = _U64.unpack_from(data, inner + 4)[0]
                elif size == 12 and what & _TYPE_MASK == NFTA_COUNTER_PACKETS:
                    packets = _U64.unpack_from(data, inner + 4)[0]
                inner += (size + 3) & ~3
        offset += (length + 3) & ~3
    return byte_count, packets


def _element(data: memoryview, offset: int, end: int) -> SetElement | None:
    return _counted_element(data, offset, end) or _any_element(data, offset, end)


def _counted_element(data: memoryview, offset: int, end: int) -> SetElement | None:
    """The element, if it has the kernel's usual layout for a set with `counter`."""
    if end - offset < 8:
        return None
    key_length, kind = _ATTR.unpack_from(data, offset)
    value_length, value_kind = _ATTR.unpack_from(data, offset + 4)
    if kind & _TYPE_MASK != NFTA_SET_ELEM_KEY or value_kind & _TYPE_MASK != NFTA_DATA_VALUE:
        return None
    if not 4 <= value_length <= key_length - 4:
        return None
    rest = offset + ((key_length + 3) & ~3)
    key = bytes(data[offset + 8 : offset + 4 + value_length])
    if end - rest == _COUNTED_TIMED.size:
        head, byte_count, packets_head, packets, *times = _COUNTED_TIMED.unpack_from(data, rest)
        if (times[0], times[2]) != _TIMES_HEADS:
            return None
        expires: int | None = times[3]
    elif end - rest == _COUNTED.size:
        head, byte_count, packets_head, packets = _COUNTED.unpack_from(data, rest)
        expires = None
    else:
        return None
    if head != _COUNTER_HEAD or packets_head != _PACKETS_HEAD:
        return None
    return SetElement(key, expires, byte_count, packets)


def _any_element(data: memoryview, offset: int, end: int) -> SetElement | None:
    # Any attribute order or extra attributes: walked inline, not via a generator.
    key = b""
    expires: int | None = None
    counts = (0, 0)
    unpack, u64 = _ATTR.unpack_from, _U64.unpack_from
    while offset + 4 <= end:
        length, kind = unpack(data, offset)
        if length < 4 or offset + length > end:
            break
        kind &= _TYPE_MASK
        a, b = offset + 4, offset + length
        if kind == NFTA_SET_ELEM_KEY and b - a >= 4:
            inner_length, inner = unpack(data, a)
            if inner & _TYPE_MASK == NFTA_DATA_VALUE and 4 <= inner_length <= b - a:
                key = bytes(data[a + 4 : a + inner_length])
        elif kind == NFTA_SET_ELEM_EXPIRATION and b - a == 8:
            expires = u64(data, a)[0]
        elif kind == NFTA_SET_ELEM_EXPR:
            counts = _counter(data, a, b) or counts
        elif kind == NFTA_SET_ELEM_EXPRESSIONS:
            for _, s, e in _attributes(data, a, b):
                counts = _counter(data, s, e) or counts
        offset += (length + 3) & ~3
    return SetElement(key, expires, *counts) if key else None


def parse_set_dump(data: memoryview, out: list[SetElement]) -> bool:
    """Append the elements in these netlink messages to `out`; True once the dump is done.

    A kernel error (no such table or set, no permission) raises GateError naming it; a dump
    the set changed under raises DumpInterrupted.
    """
    offset, size = 0, len(data)
    subsys_new = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM
    while offset + _HEADER.size <= size:
        length, kind, flags, _, _ = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size or offset + length > size:
            raise GateError("the kernel sent a damaged nftables message")
        if flags & NLM_F_DUMP_INTR:
            raise DumpInterrupted("the set changed while it was read")
        body = offset + _HEADER.size
        if kind == NLMSG_DONE:
            return True
        if kind == NLMSG_ERROR:
            raise_for_error(data, body)
            return True
        if kind == subsys_new:
            for attr, a, b in _attributes(data, body + _NFGENMSG.size, offset + length):
                if attr != NFTA_SET_ELEM_LIST_ELEMENTS:
                    continue
                for item, s, e in _attributes(data, a, b):
                    element = _element(data, s, e) if item == NFTA_LIST_ELEM else None
                    if element is not None:
                        out.append(element)
        offset += (length + 3) & ~3
    return False


def raise_for_error(data: memoryview, body: int, doing: str = "list nftables") -> None:
    """Raise GateError for an NLMSG_ERROR whose code is not 0 (0 is an acknowledgement)."""
    (code,) = _ERRNO.unpack_from(data, body)
    if code:
        name = errno.errorcode.get(-code, str(-code))
        raise GateError(f"the kernel refused to {doing}: {name} ({os.strerror(-code)})")


def attribute(kind: int, value: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    return _ATTR.pack(_ATTR.size + len(value), kind) + value + b"\0" * (-len(value) % 4)


def nested(kind: int, *attributes: bytes) -> bytes:
    """An attribute holding other attributes."""
    return attribute(kind | NLA_F_NESTED, b"".join(attributes))


def string_attribute(kind: int, text: str) -> bytes:
    """A NUL-terminated string attribute (table and set names)."""
    return attribute(kind, text.encode() + b"\0")


def nft_message(message: int, flags: int, family: int, attrs: bytes, seq: int) -> bytes:
    """One nf_tables request: netlink header, nfgenmsg, attributes."""
    body = _NFGENMSG.pack(family, 0, 0) + attrs
    kind = (NFNL_SUBSYS_NFTABLES << 8) | message
    return _HEADER.pack(_HEADER.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body


def parse_acks(data: memoryview, waiting: set[int], doing: str) -> None:
    """Take the acknowledgements in these messages off `waiting` (their sequence numbers).

    The first refusal raises GateError naming the kernel's error.
    """
    offset, size = 0, len(data)
    while offset + _HEADER.size <= size:
        length, kind, _, seq, _ = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size or offset + length > size:
            raise GateError("the kernel sent a damaged nftables message")
        if kind == NLMSG_ERROR and length >= _HEADER.size + _ERRNO.size:
            raise_for_error(data, offset + _HEADER.size, doing)
            waiting.discard(seq)
        offset += (length + 3) & ~3


class KernelSets:
    """Reads one nftables table's sets; one netlink socket, opened per call."""

    def __init__(self, table: str) -> None:
        family, _, name = table.partition(" ")
        if family not in FAMILIES or not name:
            raise GateError(f"not a table name: {table!r} (expected e.g. 'inet loopspot')")
        self.family, self.name = FAMILIES[family], name
        self._buffer = bytearray(_RECEIVE)
        self._seq = 0

    def _open(self) -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        sock.settimeout(_TIMEOUT)
        return sock

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    def elements(self, set_name: str) -> list[SetElement]:
        """Every element of the set, with its counter; raises GateError if there is none.

        A dump that a grant or revoke interrupted is read again (it may lack elements).
        """
        for _ in range(DUMP_TRIES - 1):
            try:
                return self._dump(set_name)
            except DumpInterrupted:
                continue
        return self._dump(set_name)

    def _dump(self, set_name: str) -> list[SetElement]:
        attrs = string_attribute(NFTA_SET_ELEM_LIST_TABLE, self.name)
        attrs += string_attribute(NFTA_SET_ELEM_LIST_SET, set_name)
        request = nft_message(NFT_MSG_GETSETELEM, NLM_F_DUMP, self.family, attrs, self._next_seq())
        found: list[SetElement] = []
        view = memoryview(self._buffer)
        try:
            with self._open() as sock:
                sock.sendto(request, (0, 0))
                while True:
                    size = sock.recv_into(self._buffer)
                    if size == 0 or parse_set_dump(view[:size], found):
                        return found
        except DumpInterrupted:
            raise
        except (OSError, GateError) as exc:
            raise GateError(f"cannot read set {set_name} of table {self.name}: {exc}") from exc
        finally:
            view.release()

    def table_exists(self) -> bool:
        """True when the table is in the kernel."""
        attrs = string_attribute(NFTA_TABLE_NAME, self.name)
        request = nft_message(NFT_MSG_GETTABLE, NLM_F_ACK, self.family, attrs, self._next_seq())
        try:
            with self._open() as sock:
                sock.sendto(request, (0, 0))
                reply = memoryview(sock.recv(_RECEIVE))
        except OSError as exc:
            raise GateError(f"cannot ask the kernel for table {self.name}: {exc}") from exc
        if len(reply) < _HEADER.size + _ERRNO.size:
            raise GateError("the kernel sent a damaged nftables message")
        _, kind, _, _, _ = _HEADER.unpack_from(reply)
        if kind == NLMSG_ERROR:
            (code,) = _ERRNO.unpack_from(reply, _HEADER.size)
            if -code == errno.ENOENT:
                return False
            raise_for_error(reply, _HEADER.size)
        return bool(kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE)
