"""The lab's addressing plan, defined once: every address, name and interface of the shop."""

from __future__ import annotations

import re

LAN_BRIDGE = "br-lan"
ROUTER_WAN_IF = "wan0"
PHONE_IF = "eth0"
WAN_IF = "eth0"

LAN_NET = "10.77.0.0/16"
LAN_PREFIXLEN = 16
ROUTER_LAN_IP = "10.77.0.1"
LAN6_NET = "fd77::/64"
ROUTER_LAN_IP6 = "fd77::1"

WAN_NET = "198.51.100.0/24"
ROUTER_WAN_IP = "198.51.100.1"
WAN_IP = "198.51.100.2"
WAN_DNS_IP = WAN_IP
WEB_IP = "198.51.100.10"
GARDEN_IP = "198.51.100.20"
WAN6_NET = "fd51::/64"
ROUTER_WAN_IP6 = "fd51::1"
WAN_IP6 = "fd51::2"

WEB_HOST = "wan.lab.test"
GARDEN_HOST = "garden.lab.test"

# Phones are numbered from 0; 250 per /24-sized block keeps .0 and .255 out of the plan.
PHONES_PER_BLOCK = 250
MAX_PHONES = PHONES_PER_BLOCK * 254

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def _block(index: int) -> tuple[int, int]:
    if not 0 <= index < MAX_PHONES:
        raise ValueError(f"phone index {index} is outside 0..{MAX_PHONES - 1}")
    return 1 + index // PHONES_PER_BLOCK, 1 + index % PHONES_PER_BLOCK


MAX_LANS = 8  # LAN n (from 0) is 10.(77 + n).0.0/16; 0 is br-lan, the others br-lan<n>


def _lan(lan: int) -> int:
    if not 0 <= lan < MAX_LANS:
        raise ValueError(f"LAN {lan} is outside 0..{MAX_LANS - 1}")
    return 77 + lan


def lan_bridge(lan: int = 0) -> str:
    """The router's bridge of LAN `lan`: br-lan for the first, br-lan1, br-lan2 ... after."""
    return LAN_BRIDGE if _lan(lan) == 77 else f"{LAN_BRIDGE}{lan}"


def router_lan_ip(lan: int = 0) -> str:
    """The router's (and its portal's) address on LAN `lan`: 10.77.0.1 on the first."""
    return f"10.{_lan(lan)}.0.1"


def router_lan_ip6(lan: int = 0) -> str:
    """The router's ULA on LAN `lan`: fd77::1 on the first."""
    return f"fd{_lan(lan)}::1"


def lan_net(lan: int = 0) -> str:
    """LAN `lan`'s IPv4 network."""
    return f"10.{_lan(lan)}.0.0/{LAN_PREFIXLEN}"


def lan6_net(lan: int = 0) -> str:
    """LAN `lan`'s IPv6 network."""
    return f"fd{_lan(lan)}::/64"


def phone_ip(index: int, lan: int = 0) -> str:
    """Phone `index`'s IPv4 address on LAN `lan`: 10.77.1.1 for phone 0 on the first."""
    a, b = _block(index)
    return f"10.{_lan(lan)}.{a}.{b}"


def phone_ip6(index: int, lan: int = 0) -> str:
    """Phone `index`'s ULA on its LAN, mirroring its IPv4 address: fd77::1:1 for phone 0."""
    a, b = _block(index)
    return f"fd{_lan(lan)}::{a}:{b}"


def phone_mac(index: int) -> str:
    """A generated locally administered unicast MAC for phone `index` (02:4c:53 = 'LS')."""
    if not 0 <= index < 1 << 24:
        raise ValueError(f"phone index {index} does not fit in a generated MAC")
    return "02:4c:53:" + ":".join(f"{(index >> s) & 0xFF:02x}" for s in (16, 8, 0))


def normalize_mac(mac: str) -> str:
    """Return `mac` in lower-case colon form; raise ValueError unless it is a unicast MAC."""
    norm = mac.strip().lower().replace("-", ":")
    if not _MAC_RE.match(norm):
        raise ValueError(f"MAC {mac!r} is not six colon-separated hex octets")
    if int(norm[:2], 16) & 1:
        raise ValueError(f"MAC {mac!r} is multicast; a phone needs a unicast MAC")
    if norm == "00:00:00:00:00:00":
        raise ValueError("MAC 00:00:00:00:00:00 is not a usable phone MAC")
    return norm


def link_local(mac: str) -> str:
    """The EUI-64 IPv6 link-local address the kernel derives from `mac`."""
    o = [int(x, 16) for x in normalize_mac(mac).split(":")]
    o[0] ^= 0x02
    words = [o[0] << 8 | o[1], o[2] << 8 | 0xFF, 0xFE << 8 | o[3], o[4] << 8 | o[5]]
    return "fe80::" + ":".join(f"{w:x}" for w in words)
