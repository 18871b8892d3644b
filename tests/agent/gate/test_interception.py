"""The routing rule and route that deliver a captive phone's web traffic to the portal."""

from __future__ import annotations

import errno
import socket
import struct
from pathlib import Path

from agent.gate import interception as I
from agent.ruleset import PORTAL_MARK, PORTAL_ROUTE_TABLE

HEADER = struct.Struct("=IHHII")
BODY = struct.Struct("=BBBBBBBBI")


def attributes(message: bytes) -> dict[int, int]:
    """The u32 attributes after the header and the rtmsg / fib_rule_hdr."""
    found: dict[int, int] = {}
    offset = HEADER.size + BODY.size
    while offset < len(message):
        length, kind, value = struct.unpack_from("=HHI", message, offset)
        found[kind] = value
        offset += length
    return found


def test_the_rule_sends_packets_with_the_portal_s_mark_to_the_portal_s_table() -> None:
    message = I.rule_request(seq=7)
    length, kind, flags, seq, _ = HEADER.unpack_from(message)
    assert (length, kind, seq) == (len(message), I.RTM_NEWRULE, 7)
    assert flags & I.NLM_F_EXCL  # an identical rule is refused (EEXIST), never doubled
    family, *_, action, _ = BODY.unpack_from(message, HEADER.size)
    assert (family, action) == (socket.AF_INET, I.FR_ACT_TO_TBL)
    assert attributes(message) == {
        I.FRA_PRIORITY: I.PORTAL_RULE_PRIORITY,
        I.FRA_FWMARK: PORTAL_MARK,
        I.FRA_FWMASK: PORTAL_MARK,  # only the portal's bit: other marks on the packet stay
        I.FRA_TABLE: PORTAL_ROUTE_TABLE,
    }


def test_the_route_makes_every_address_local_in_the_portal_s_table() -> None:
    message = I.route_request(loopback_index=1)
    _, kind, flags, _, _ = HEADER.unpack_from(message)
    assert kind == I.RTM_NEWROUTE
    assert flags & I.NLM_F_REPLACE
    family, dst_len, _, _, _, _, scope, route_type, _ = BODY.unpack_from(message, HEADER.size)
    assert (family, dst_len, scope, route_type) == (socket.AF_INET, 0, 254, I.RTN_LOCAL)
    assert attributes(message) == {I.RTA_TABLE: PORTAL_ROUTE_TABLE, I.RTA_OIF: 1}


def test_an_acknowledgement_gives_the_kernel_s_errno() -> None:
    def ack(error: int) -> bytes:
        return HEADER.pack(36, I.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", error) + bytes(16)

    assert I.acknowledged(ack(0)) == 0
    assert I.acknowledged(ack(-errno.EEXIST)) == errno.EEXIST
    assert I.acknowledged(b"\0" * 4) == errno.EBADMSG
    assert I.acknowledged(HEADER.pack(20, 24, 0, 1, 0) + bytes(4)) == errno.EBADMSG


def bridge(devices: Path, name: str, nf_call_iptables: str = "0") -> None:
    (devices / name / "bridge").mkdir(parents=True)
    (devices / name / "bridge" / "nf_call_iptables").write_text(f"{nf_call_iptables}\n")


def test_a_lan_bridge_whose_frames_go_through_the_ip_hooks_is_named(tmp_path: Path) -> None:
    sysctl, devices = tmp_path / "sysctl", tmp_path / "devices"
    sysctl.mkdir()
    bridge(devices, "br-lan")
    (devices / "wlan1").mkdir(parents=True)  # not a bridge: br_netfilter never sees its frames
    assert I.bridges_hiding_sockets(["br-lan", "wlan1"], sysctl, devices) == []  # no br_netfilter
    (sysctl / "bridge-nf-call-iptables").write_text("0\n")
    assert I.bridges_hiding_sockets(["br-lan", "wlan1"], sysctl, devices) == []
    bridge(devices, "br-guest", nf_call_iptables="1")  # forced on for this bridge alone
    assert I.bridges_hiding_sockets(["br-lan", "br-guest"], sysctl, devices) == ["br-guest"]
    (sysctl / "bridge-nf-call-iptables").write_text("1\n")  # on for every bridge
    assert I.bridges_hiding_sockets(["br-lan", "wlan1"], sysctl, devices) == ["br-lan"]
