"""A phone's DHCP client made with scapy, for lab tests: `python -m lab.scapy_phone`.

Run inside a phone's namespace (ip netns exec). It asks for an address with a host name,
as phones do, and prints the lease as JSON. Only the layers it needs are imported
(scapy.all alone takes ~90 MB); the agent never imports scapy.
"""

from __future__ import annotations

import argparse
import json
import random
import sys

from scapy.config import conf
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from scapy.sendrecv import srp1


def _option(packet: Packet, name: str) -> object:
    for item in packet.options:
        if isinstance(item, tuple) and item[0] == name:
            return item[1]
    return None


def lease(iface: str, mac: str, hostname: str, timeout: float = 5.0) -> dict[str, str]:
    """DISCOVER, OFFER, REQUEST, ACK on `iface`; the leased address and the server's."""
    conf.checkIPaddr = False  # the OFFER comes from the server, not 255.255.255.255
    xid = random.getrandbits(32)
    raw = bytes.fromhex(mac.replace(":", ""))

    def ask(options: list[object]) -> Packet:
        frame = (
            Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
            / IP(src="0.0.0.0", dst="255.255.255.255")
            / UDP(sport=68, dport=67)
            / BOOTP(chaddr=raw, xid=xid, flags=0x8000)
            / DHCP(options=options)
        )
        answer = srp1(frame, iface=iface, timeout=timeout, verbose=False)
        if answer is None or DHCP not in answer:
            raise SystemExit(f"no DHCP answer on {iface}")
        return answer

    offer = ask([("message-type", "discover"), ("hostname", hostname), "end"])
    offered = offer[BOOTP].yiaddr
    server = _option(offer[DHCP], "server_id")
    ack = ask(
        [
            ("message-type", "request"),
            ("requested_addr", offered),
            ("server_id", server),
            ("hostname", hostname),
            "end",
        ]
    )
    if _option(ack[DHCP], "message-type") != 5:  # DHCPACK
        raise SystemExit(f"the server did not acknowledge {offered}")
    return {"ip": str(ack[BOOTP].yiaddr), "server": str(server)}


def main(argv: list[str] | None = None) -> int:
    """Print the lease as JSON."""
    parser = argparse.ArgumentParser(prog="python -m lab.scapy_phone")
    parser.add_argument("--iface", default="eth0")
    parser.add_argument("--mac", required=True)
    parser.add_argument("--hostname", required=True)
    args = parser.parse_args(argv)
    print(json.dumps(lease(args.iface, args.mac, args.hostname)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
