"""The nftables ruleset of table `inet loopspot`, rendered from data in this one place."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from agent.clients import Client
from agent.settings import Settings

TABLE = "inet loopspot"
CLIENTS_SET = "clients"  # ether_addr . ipv4_addr: authorization, and upload bytes
DOWNLOADS_SET = "downloads"  # ipv4_addr: download bytes of the same clients
WALLED_GARDEN_SET = "walled_garden"  # ipv4 intervals reachable before authorization
# ether_addr of the same clients. Authorization is keyed on IPv4, so their IPv6 cannot pass,
# but it is refused at once: a dual-stack phone falls back to IPv4 without waiting.
ONLINE_MACS_SET = "online_macs"
# A captive phone's web traffic is handed to the portal by `tproxy`, not `redirect`, so the
# gate needs no connection tracking (agent.gate.interception). Its packets carry this mark,
# which a routing rule sends to this routing table, where every address is local.
PORTAL_MARK = 0x00800000
PORTAL_ROUTE_TABLE = 9050


@dataclass(frozen=True, slots=True)
class GateSpec:
    """What the ruleset depends on."""

    lan_interfaces: tuple[str, ...]
    portal_address: IPv4Address
    portal_port: int
    walled_garden: tuple[IPv4Network, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> GateSpec:
        """The gate's part of the settings."""
        return cls(
            settings.lan_interfaces,
            settings.portal_address,
            settings.portal_port,
            settings.walled_garden_addresses,
        )


@dataclass(frozen=True, slots=True)
class Grant:
    """A client to let through, for `timeout` seconds (None: until revoked)."""

    client: Client
    timeout: int | None


def element_timeout(seconds: int | None) -> int | None:
    """The whole seconds an element is given: at least 1 (0 would mean none), or None."""
    return None if seconds is None else max(1, int(seconds))


def _timeout(seconds: int | None) -> str:
    kept = element_timeout(seconds)
    return "" if kept is None else f" timeout {kept}s"


def _client_keys(client: Client) -> dict[str, str]:
    """The sets a client is an element of, each with its key there."""
    return {
        CLIENTS_SET: f"{client.mac} . {client.ip}",
        DOWNLOADS_SET: str(client.ip),
        ONLINE_MACS_SET: client.mac,
    }


def kernel_keys(client: Client) -> dict[str, bytes]:
    """The same elements as `_client_keys`, each key as the kernel stores it."""
    return {
        CLIENTS_SET: clients_key(client),
        DOWNLOADS_SET: client.ip.packed,
        ONLINE_MACS_SET: bytes.fromhex(client.mac.replace(":", "")),
    }


def clients_key(client: Client) -> bytes:
    """A client's key in the `clients` set, as the kernel stores it.

    A concatenation pads each part to 4 bytes: the MAC takes 6 + 2, the IPv4 address 4.
    """
    return bytes.fromhex(client.mac.replace(":", "")) + b"\0\0" + client.ip.packed


def client_of_key(key: bytes) -> Client | None:
    """The client of a `clients` element key as the kernel stores it, None if malformed."""
    if len(key) != 12:
        return None
    return Client(key[:6].hex(":"), IPv4Address(key[8:12]))


def _elements(items: Iterable[str]) -> str:
    listed = ", ".join(items)
    return f"\t\telements = {{ {listed} }}\n" if listed else ""


def render_table(spec: GateSpec, grants: Iterable[Grant] = ()) -> str:
    """The whole table as one atomic script that replaces any earlier version.

    `forward` lets an online phone's packets through first, with one set lookup each way:
    `from_lan` and `to_lan` only ever see captive phones' traffic. Every rule on that path
    costs each forwarded packet (bench.forwarding --packets). `downloads` is asked only
    after every packet from the LAN has gone to `from_lan`, which ends each one, so a
    captive phone cannot reach an online one through another LAN interface.
    """
    grants = list(grants)
    lan = ", ".join(f'"{name}"' for name in spec.lan_interfaces)
    keyed = [(_client_keys(g.client), _timeout(g.timeout)) for g in grants]
    clients, downloads, macs = (
        _elements(keys[name] + timeout for keys, timeout in keyed)
        for name in (CLIENTS_SET, DOWNLOADS_SET, ONLINE_MACS_SET)
    )
    garden = _elements(str(net) for net in spec.walled_garden)
    portal, port = spec.portal_address, spec.portal_port
    mark = f"meta mark set meta mark or {PORTAL_MARK:#010x}"
    to_portal = f"meta l4proto tcp tproxy ip to {portal}:{port} {mark} accept"
    return f"""table {TABLE} {{}}
delete table {TABLE}
table {TABLE} {{
\tset {CLIENTS_SET} {{
\t\ttype ether_addr . ipv4_addr
\t\tflags timeout
\t\tcounter
{clients}\t}}
\tset {DOWNLOADS_SET} {{
\t\ttype ipv4_addr
\t\tflags timeout
\t\tcounter
{downloads}\t}}
\tset {ONLINE_MACS_SET} {{
\t\ttype ether_addr
\t\tflags timeout
{macs}\t}}
\tset {WALLED_GARDEN_SET} {{
\t\ttype ipv4_addr
\t\tflags interval
\t\tauto-merge
{garden}\t}}
\tchain prerouting {{
\t\ttype filter hook prerouting priority mangle - 5; policy accept;
\t\ttcp dport 80 iifname {{ {lan} }} jump captive
\t}}
\tchain captive {{
\t\tmeta nfproto != ipv4 return
\t\tip daddr {portal} {to_portal}
\t\tip daddr @{WALLED_GARDEN_SET} return
\t\tether saddr . ip saddr @{CLIENTS_SET} return
\t\t{to_portal}
\t}}
\tchain forward {{
\t\ttype filter hook forward priority filter - 5; policy accept;
\t\tether saddr . ip saddr @{CLIENTS_SET} accept
\t\tiifname {{ {lan} }} jump from_lan
\t\tip daddr @{DOWNLOADS_SET} accept
\t\toifname {{ {lan} }} jump to_lan
\t}}
\tchain from_lan {{
\t\tmeta nfproto ipv6 jump ipv6_from_lan
\t\tudp dport {{ 53, 67, 68 }} accept
\t\ttcp dport 53 accept
\t\tip daddr @{WALLED_GARDEN_SET} accept
\t\ttcp dport 443 reject with tcp reset
\t\ttcp flags & (syn | ack) == ack reject with tcp reset
\t\tdrop
\t}}
\tchain ipv6_from_lan {{
\t\tether saddr @{ONLINE_MACS_SET} meta l4proto tcp reject with tcp reset
\t\tether saddr @{ONLINE_MACS_SET} reject with icmpx type admin-prohibited
\t\tdrop
\t}}
\tchain to_lan {{
\t\tmeta nfproto ipv6 drop
\t\tudp sport {{ 53, 67, 68 }} accept
\t\ttcp sport 53 accept
\t\tip saddr @{WALLED_GARDEN_SET} accept
\t\ticmp type {{ destination-unreachable, time-exceeded }} accept
\t\tdrop
\t}}
}}
"""


def render_grant(grant: Grant, *, replace: bool = False) -> str:
    """One transaction adding a client; `replace` first drops an element it already has."""
    head = render_revoke(grant.client) if replace else ""
    timeout = _timeout(grant.timeout)
    return head + "".join(
        f"add element {TABLE} {name} {{ {key}{timeout} }}\n"
        for name, key in _client_keys(grant.client).items()
    )


def render_revoke(client: Client) -> str:
    """One transaction removing a client; adding first makes it succeed if it is absent."""
    return "".join(
        f"add element {TABLE} {name} {{ {key} }}\ndelete element {TABLE} {name} {{ {key} }}\n"
        for name, key in _client_keys(client).items()
    )


def render_walled_garden(addresses: Iterable[IPv4Network]) -> str:
    """Replace the walled-garden addresses (dnsmasq's nftset entries are replaced too)."""
    listed = ", ".join(str(a) for a in addresses)
    add = f"add element {TABLE} {WALLED_GARDEN_SET} {{ {listed} }}\n" if listed else ""
    return f"flush set {TABLE} {WALLED_GARDEN_SET}\n{add}"
