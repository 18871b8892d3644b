"""How a captive phone's web traffic reaches the portal, without connection tracking.

The table's `captive` chain hands a captive phone's port-80 packets, whatever their
destination, to the portal's socket with `tproxy`, and marks them (agent.ruleset). Two
kernel facts outside the table finish the job:
- a routing rule sends marked packets to a routing table whose one route delivers
  everything locally (`ip rule add fwmark M/M lookup T`, `ip route add local default dev lo
  table T`), and
- the portal's listening socket is transparent (IP_TRANSPARENT): it may take connections
  addressed to any host, and answers as that host.

`nat`'s `redirect` would do the same with one rule, but it needs connection tracking for
every packet the router forwards: the gate with it gave 0.90x of a router with no portal
in the lab, and 0.97x without it in the same run (docs/benchmarks.md, section 2).
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterable
from ipaddress import IPv4Address
from pathlib import Path

from agent.errors import GateError
from agent.gate.netlink import NLM_F_REQUEST, NLMSG_ERROR
from agent.gate.nfnetlink import NLM_F_ACK, NLM_F_CREATE
from agent.ruleset import PORTAL_MARK, PORTAL_ROUTE_TABLE

RTM_NEWROUTE, RTM_NEWRULE = 24, 32
NLM_F_REPLACE, NLM_F_EXCL = 0x100, 0x200  # with NLM_F_CREATE: replace, or refuse a double
RTPROT_STATIC, RT_SCOPE_HOST, RTN_LOCAL, FR_ACT_TO_TBL = 4, 254, 2, 1
RTA_OIF, RTA_TABLE = 4, 15
FRA_PRIORITY, FRA_FWMARK, FRA_TABLE, FRA_FWMASK = 6, 10, 15, 16
# Ahead of the main table (32766); clear of the ranges fw4 and mwan3 use (1000-2254).
PORTAL_RULE_PRIORITY = 9050
_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg, and fib_rule_hdr which has the same layout
_ATTR_U32 = struct.Struct("=HHI")  # rtattr carrying one u32
_ERROR = struct.Struct("=i")  # nlmsgerr's error field
# There only when br_netfilter is loaded (never by OpenWrt itself: kmod-br-netfilter).
BRIDGE_NETFILTER = Path("/proc/sys/net/bridge")
SYS_CLASS_NET = Path("/sys/class/net")


def _u32(kind: int, value: int) -> bytes:
    return _ATTR_U32.pack(_ATTR_U32.size, kind, value)


def _message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    flags |= NLM_F_REQUEST | NLM_F_ACK
    return _HEADER.pack(_HEADER.size + len(body), kind, flags, seq, 0) + body


def rule_request(seq: int = 1) -> bytes:
    """RTM_NEWRULE: packets marked PORTAL_MARK look up PORTAL_ROUTE_TABLE; EEXIST if there."""
    body = _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, FR_ACT_TO_TBL, 0)
    body += _u32(FRA_PRIORITY, PORTAL_RULE_PRIORITY) + _u32(FRA_FWMARK, PORTAL_MARK)
    body += _u32(FRA_FWMASK, PORTAL_MARK) + _u32(FRA_TABLE, PORTAL_ROUTE_TABLE)
    return _message(RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, seq, body)


def route_request(loopback_index: int, seq: int = 2) -> bytes:
    """RTM_NEWROUTE: in PORTAL_ROUTE_TABLE, every IPv4 address is local (replaced if there)."""
    body = _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, RTPROT_STATIC, RT_SCOPE_HOST, RTN_LOCAL, 0)
    body += _u32(RTA_TABLE, PORTAL_ROUTE_TABLE) + _u32(RTA_OIF, loopback_index)
    return _message(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, seq, body)


def acknowledged(reply: bytes) -> int:
    """The errno of a netlink acknowledgement (0: done); EBADMSG if it is not one."""
    if len(reply) < _HEADER.size + _ERROR.size:
        return errno.EBADMSG
    _, kind, _, _, _ = _HEADER.unpack_from(reply)
    if kind != NLMSG_ERROR:
        return errno.EBADMSG
    (error,) = _ERROR.unpack_from(reply, _HEADER.size)
    return -int(error)


def _is_on(path: Path) -> bool:
    try:
        return path.read_text().strip() not in ("", "0")
    except OSError:
        return False


def bridges_hiding_sockets(
    interfaces: Iterable[str], sysctl: Path = BRIDGE_NETFILTER, devices: Path = SYS_CLASS_NET
) -> list[str]:
    """The LAN bridges whose frames br_netfilter sends through the IP hooks at bridge level.

    There `tproxy` hands a packet its socket before the IP layer, which then drops it: the
    portal never sees the connection, and the phone gets a reset.
    """
    every_bridge = _is_on(sysctl / "bridge-nf-call-iptables")
    return [
        name
        for name in interfaces
        if (devices / name / "bridge").is_dir()
        and (every_bridge or _is_on(devices / name / "bridge" / "nf_call_iptables"))
    ]


def ensure_portal_route(interfaces: Iterable[str]) -> None:
    """Put the routing rule and route in place (idempotent); GateError names what failed."""
    hiding = bridges_hiding_sockets(interfaces)
    if hiding:
        raise GateError(
            f"br_netfilter passes the frames of {', '.join(hiding)} through the IP hooks, "
            "so phones' web traffic cannot reach the portal. Fix: sysctl -w "
            "net.bridge.bridge-nf-call-iptables=0 (and set the bridge's nf_call_iptables to "
            "0), or remove kmod-br-netfilter"
        )
    try:
        loopback = socket.if_nametoindex("lo")
    except OSError as exc:
        raise GateError(f"no loopback interface to deliver phones' web traffic on: {exc}") from exc
    steps: tuple[tuple[str, bytes, set[int]], ...] = (
        ("routing rule for the portal's mark", rule_request(), {errno.EEXIST}),
        ("local route for the portal", route_request(loopback), set()),
    )
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(2.0)
        for what, request, fine in steps:
            try:
                sock.sendto(request, (0, 0))
                error = acknowledged(sock.recv(65536))
            except OSError as exc:
                raise GateError(f"the kernel did not take the {what}: {exc}") from exc
            if error and error not in fine:
                name = errno.errorcode.get(error, str(error))
                raise GateError(f"the kernel refused the {what}: {name}")


def portal_listener(address: IPv4Address, port: int, backlog: int = 1024) -> socket.socket:
    """The portal's transparent listening socket: it takes the connections `tproxy` hands it.

    OSError if the address is taken, or if this process may not make a transparent socket
    (that needs CAP_NET_ADMIN): a portal that cannot receive the phones' traffic must not
    hold them captive.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_IP, socket.IP_TRANSPARENT, 1)
        sock.bind((str(address), port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
