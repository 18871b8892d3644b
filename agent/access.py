"""How each device passes the gate, as plain values: speed classes, trusted devices, LANs.

A session belongs to a speed class (its name travels with the grant); the class gives the
phone's download and upload limits. The gate enforces them per phone in the kernel, each
phone's element with its own token bucket (agent.ruleset), so a grant stays a few element adds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

DEFAULT_CLASS = "default"  # sessions from the portal: `config session` download/upload_limit
STAFF_CLASS = "staff"  # devices staff let through: unlimited unless a class says otherwise


@dataclass(frozen=True, slots=True)
class SpeedLimit:
    """A phone's limits in kbit/s (1000 bits per second); 0 means no limit that way."""

    download: int = 0
    upload: int = 0

    @property
    def unlimited(self) -> bool:
        """True when neither way is limited."""
        return not self.download and not self.upload


UNLIMITED = SpeedLimit()


@dataclass(frozen=True, slots=True)
class SpeedClass:
    """A named class of sessions with its own limits (a campaign, staff, a coupon's)."""

    name: str
    limit: SpeedLimit


def class_limits(default: SpeedLimit, classes: Iterable[SpeedClass]) -> dict[str, SpeedLimit]:
    """Every class's limit: `default` for DEFAULT_CLASS, staff unlimited unless listed."""
    limits = {DEFAULT_CLASS: default, STAFF_CLASS: UNLIMITED}
    limits.update((c.name, c.limit) for c in classes)
    return limits


def limit_of(limits: dict[str, SpeedLimit], name: str) -> SpeedLimit:
    """The limit of class `name`; a class no longer configured falls back to the default."""
    return limits.get(name, limits[DEFAULT_CLASS])


@dataclass(frozen=True, slots=True, order=True)
class TrustedDevice:
    """A device that passes without the portal: any IP, or only `ip` when it is given."""

    mac: str
    ip: IPv4Address | None = None


@dataclass(frozen=True, slots=True)
class LanPortal:
    """A LAN interface whose phones are sent to the portal at `address`, on that LAN."""

    interface: str
    address: IPv4Address


def lan_portals(
    interfaces: Iterable[str], default: IPv4Address, own: Iterable[LanPortal]
) -> tuple[LanPortal, ...]:
    """Each LAN interface with its portal address: its own if given, else `default`."""
    given = {lan.interface: lan.address for lan in own}
    names = dict.fromkeys([*interfaces, *given])
    return tuple(LanPortal(name, given.get(name, default)) for name in names)
