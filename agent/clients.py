"""Who a client is on the LAN: its MAC address and IPv4 address."""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address

from agent.errors import LoopspotError

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class BadMac(LoopspotError):
    """A string is not a MAC address."""


def normalize_mac(text: str) -> str:
    """`text` as a lower-case colon-separated MAC; raises BadMac naming the input."""
    mac = text.strip().lower().replace("-", ":")
    if not _MAC.match(mac):
        raise BadMac(f"'{text}' is not a MAC address; write it as aa:bb:cc:dd:ee:ff")
    if mac == "00:00:00:00:00:00" or int(mac[:2], 16) & 1:
        raise BadMac(f"'{text}' is not a unicast MAC address of a device")
    return mac


def is_randomized(mac: str) -> bool:
    """True when the locally-administered bit is set, as in iOS/Android private addresses."""
    return bool(int(mac[:2], 16) & 0x02)


@dataclass(frozen=True, slots=True, order=True)
class Client:
    """One device on the LAN, as the gate keys it: MAC and IPv4 address."""

    mac: str
    ip: IPv4Address

    @classmethod
    def of(cls, mac: str, ip: str | IPv4Address) -> Client:
        """A validated client from text."""
        return cls(normalize_mac(mac), IPv4Address(ip))
