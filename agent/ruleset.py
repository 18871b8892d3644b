"""The nftables ruleset of table `inet loopspot`, rendered from data in this one place."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from agent.access import UNLIMITED, LanPortal, SpeedLimit, TrustedDevice, lan_portals
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
# Limited phones, by IPv4 address, one set each way: a phone's element carries its own
# token bucket (`limit rate over`), so one lookup drops what goes over the phone's rate, and
# an unlimited phone pays one lookup that misses. The bucket costs a limited phone's packet
# about 100 ns; the earlier verdict maps with a jump to a meter (a dynamic set) per rate
# about 200 ns (bench.speed_limit_designs, docs/benchmarks.md section 10).
UPLOAD_LIMITS_SET = "upload_limits"
DOWNLOAD_LIMITS_SET = "download_limits"
TRUSTED_MACS_SET = "trusted_macs"  # ether_addr: pass with any IPv4 address
TRUSTED_HOSTS_SET = "trusted_hosts"  # ether_addr . ipv4_addr: pass with that address only
# ipv4_addr: where trusted devices' downloads may go: trusted_hosts' addresses, and those
# trusted_macs devices sent from (learned by the kernel, forgotten after an idle spell)
TRUSTED_IPS_SET = "trusted_ips"
TRUSTED_IP_IDLE = 600  # seconds
# The kernel's bucket holds one second of the rate plus the burst: a tenth of a second
# lets TCP's bursts through without drops while the rate over seconds stays the limit.
BURST_SECONDS = 0.1
LEAST_BURST = 2 * 1514  # bytes: two full frames
# What a limit set declares, so that nft lets its elements carry a `limit` of their own;
# an element added without one (a revoke's add before its delete) gets this, which never
# drops (about 80 Gbit/s; the kernel refuses a rate and burst over 2**64 ns-bytes).
NO_LIMIT_BYTES = 10**10


@dataclass(frozen=True, slots=True)
class GateSpec:
    """What the ruleset depends on."""

    lan_interfaces: tuple[str, ...]
    portal_address: IPv4Address
    portal_port: int
    walled_garden: tuple[IPv4Network, ...] = ()
    lans: tuple[LanPortal, ...] = ()  # LANs with a portal address of their own
    # per-phone limits the table must be able to enforce (every class's, the grants' too)
    speed_limits: tuple[SpeedLimit, ...] = ()
    trusted: tuple[TrustedDevice, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> GateSpec:
        """The gate's part of the settings."""
        return cls(
            settings.lan_interfaces,
            settings.portal_address,
            settings.portal_port,
            settings.walled_garden_addresses,
            settings.lans,
            tuple(dict.fromkeys(settings.speed_limits.values())),
            settings.trusted_devices,
        )

    @property
    def lan_portals(self) -> tuple[LanPortal, ...]:
        """Every LAN interface with the portal address its phones are sent to."""
        return lan_portals(self.lan_interfaces, self.portal_address, self.lans)


@dataclass(frozen=True, slots=True)
class Grant:
    """A client to let through, for `timeout` seconds (None: until revoked), at `limit`."""

    client: Client
    timeout: int | None
    limit: SpeedLimit = UNLIMITED


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


def limit_rates(limit: SpeedLimit) -> dict[str, int]:
    """The limit sets a phone of `limit` is an element of, each with its rate in bytes/s."""
    rates = {}
    if limit.upload:
        rates[UPLOAD_LIMITS_SET] = limit.upload * 125
    if limit.download:
        rates[DOWNLOAD_LIMITS_SET] = limit.download * 125
    return rates


def burst_bytes(per_second: int) -> int:
    """The burst a phone's bucket holds beyond one second of its rate (bytes/s)."""
    return max(int(per_second * BURST_SECONDS), LEAST_BURST)


def _limit(per_second: int) -> str:
    return f"limit rate over {per_second} bytes/second burst {burst_bytes(per_second)} bytes"


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


def _to_portal(spec: GateSpec) -> tuple[str, str]:
    """What hands a captive phone's web traffic to its LAN's portal, and any chain for it."""
    mark = f"meta mark set meta mark or {PORTAL_MARK:#010x}"
    lans = spec.lan_portals
    if len({lan.address for lan in lans}) <= 1:
        address = lans[0].address if lans else spec.portal_address
        return f"meta l4proto tcp tproxy ip to {address}:{spec.portal_port} {mark} accept", ""
    rules = "".join(
        f'\t\tiifname "{lan.interface}" meta l4proto tcp tproxy ip to '
        f"{lan.address}:{spec.portal_port} {mark} accept\n"
        for lan in lans
    )
    return "jump to_portal", f"\tchain to_portal {{\n{rules}\t\tdrop\n\t}}\n"


def render_table(spec: GateSpec, grants: Iterable[Grant] = ()) -> str:
    """The whole table as one atomic script that replaces any earlier version.

    `forward` lets an online phone's packets through first, with one set lookup each way:
    `from_lan` and `to_lan` only ever see captive phones' traffic. Every rule on that path
    costs each forwarded packet (bench.forwarding --packets). `downloads` is asked only
    after every packet from the LAN has gone to `from_lan`, which ends each one, so a
    captive phone cannot reach an online one through another LAN interface.
    With speed limits, one lookup more each way, in a set whose limited phones' elements
    drop what goes over their rate; with several LANs, one rule
    first that drops what goes from one LAN to another (LANs differ by portal address).
    """
    grants = list(grants)
    interfaces = [lan.interface for lan in spec.lan_portals]
    lan = ", ".join(f'"{name}"' for name in interfaces)
    keyed = [(_client_keys(g.client), _timeout(g.timeout)) for g in grants]
    clients, downloads, macs = (
        _elements(keys[name] + timeout for keys, timeout in keyed)
        for name in (CLIENTS_SET, DOWNLOADS_SET, ONLINE_MACS_SET)
    )
    limited = any(not g.limit.unlimited for g in grants) or any(
        not limit.unlimited for limit in spec.speed_limits
    )
    upload_limits, download_limits = (
        _elements(
            f"{g.client.ip} {_limit(limit_rates(g.limit)[name])}{_timeout(g.timeout)}"
            for g in grants
            if name in limit_rates(g.limit)
        )
        for name in (UPLOAD_LIMITS_SET, DOWNLOAD_LIMITS_SET)
    )
    trusted_macs = _elements(d.mac for d in spec.trusted if d.ip is None)
    trusted_hosts = _elements(f"{d.mac} . {d.ip}" for d in spec.trusted if d.ip is not None)
    trusted_ips = _elements(str(d.ip) for d in spec.trusted if d.ip is not None)
    garden = _elements(str(net) for net in spec.walled_garden)
    addresses = list(dict.fromkeys(str(p.address) for p in spec.lan_portals))
    portals = addresses[0] if len(addresses) == 1 else f"{{ {', '.join(addresses)} }}"
    to_portal, to_portal_chain = _to_portal(spec)
    apart = [
        f'"{a.interface}" . "{b.interface}"'
        for a in spec.lan_portals
        for b in spec.lan_portals
        if a.address != b.address
    ]
    between_lans = f"\t\tiifname . oifname {{ {', '.join(apart)} }} drop\n" if apart else ""
    limit_up = f"\t\tip saddr @{UPLOAD_LIMITS_SET} drop\n" if limited else ""
    limit_down = f"\t\tip daddr @{DOWNLOAD_LIMITS_SET} drop\n" if limited else ""
    trusted_pass = (
        f"\t\tether saddr . ip saddr @{TRUSTED_HOSTS_SET} return\n"
        f"\t\tether saddr @{TRUSTED_MACS_SET} return\n"
        if spec.trusted
        else ""
    )
    trusted_from = (
        f"\t\tether saddr . ip saddr @{TRUSTED_HOSTS_SET} accept\n"
        f"\t\tether saddr @{TRUSTED_MACS_SET} update @{TRUSTED_IPS_SET} "
        f"{{ ip saddr timeout {TRUSTED_IP_IDLE}s }} accept\n"
        if spec.trusted
        else ""
    )
    trusted_to = f"\t\tip daddr @{TRUSTED_IPS_SET} accept\n" if spec.trusted else ""
    trusted_v6 = (  # refused at once, as an online phone's: it falls back to IPv4
        f"\t\tether saddr @{TRUSTED_MACS_SET} meta l4proto tcp reject with tcp reset\n"
        f"\t\tether saddr @{TRUSTED_MACS_SET} reject with icmpx type admin-prohibited\n"
        if spec.trusted
        else ""
    )
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
\tset {TRUSTED_MACS_SET} {{
\t\ttype ether_addr
{trusted_macs}\t}}
\tset {TRUSTED_HOSTS_SET} {{
\t\ttype ether_addr . ipv4_addr
{trusted_hosts}\t}}
\tset {TRUSTED_IPS_SET} {{
\t\ttype ipv4_addr
\t\tsize 65535
\t\tflags dynamic,timeout
{trusted_ips}\t}}
\tset {UPLOAD_LIMITS_SET} {{
\t\ttype ipv4_addr
\t\tflags timeout
\t\t{_limit(NO_LIMIT_BYTES)}
{upload_limits}\t}}
\tset {DOWNLOAD_LIMITS_SET} {{
\t\ttype ipv4_addr
\t\tflags timeout
\t\t{_limit(NO_LIMIT_BYTES)}
{download_limits}\t}}
\tchain prerouting {{
\t\ttype filter hook prerouting priority mangle - 5; policy accept;
\t\ttcp dport 80 iifname {{ {lan} }} jump captive
\t}}
\tchain captive {{
\t\tmeta nfproto != ipv4 return
\t\tip daddr {portals} {to_portal}
\t\tip daddr @{WALLED_GARDEN_SET} return
\t\tether saddr . ip saddr @{CLIENTS_SET} return
{trusted_pass}\t\t{to_portal}
\t}}
{to_portal_chain}\tchain forward {{
\t\ttype filter hook forward priority filter - 5; policy accept;
{between_lans}{limit_up}\t\tether saddr . ip saddr @{CLIENTS_SET} accept
\t\tiifname {{ {lan} }} jump from_lan
{limit_down}\t\tip daddr @{DOWNLOADS_SET} accept
\t\toifname {{ {lan} }} jump to_lan
\t}}
\tchain from_lan {{
\t\tmeta nfproto ipv6 jump ipv6_from_lan
{trusted_from}\t\tudp dport {{ 53, 67, 68 }} accept
\t\ttcp dport 53 accept
\t\tip daddr @{WALLED_GARDEN_SET} accept
\t\ttcp dport 443 reject with tcp reset
\t\ttcp flags & (syn | ack) == ack reject with tcp reset
\t\tdrop
\t}}
\tchain ipv6_from_lan {{
\t\tether saddr @{ONLINE_MACS_SET} meta l4proto tcp reject with tcp reset
\t\tether saddr @{ONLINE_MACS_SET} reject with icmpx type admin-prohibited
{trusted_v6}\t\tdrop
\t}}
\tchain to_lan {{
\t\tmeta nfproto ipv6 drop
{trusted_to}\t\tudp sport {{ 53, 67, 68 }} accept
\t\ttcp sport 53 accept
\t\tip saddr @{WALLED_GARDEN_SET} accept
\t\ticmp type {{ destination-unreachable, time-exceeded }} accept
\t\tdrop
\t}}
}}
"""


def render_grant(grant: Grant, *, replace: bool = False) -> str:
    """One transaction adding a client; `replace` first drops an element it already has."""
    head = render_revoke(grant.client, grant.limit) if replace else ""
    timeout = _timeout(grant.timeout)
    return (
        head
        + "".join(
            f"add element {TABLE} {name} {{ {key}{timeout} }}\n"
            for name, key in _client_keys(grant.client).items()
        )
        + "".join(
            f"add element {TABLE} {name} {{ {grant.client.ip} {_limit(rate)}{timeout} }}\n"
            for name, rate in limit_rates(grant.limit).items()
        )
    )


def render_revoke(client: Client, limit: SpeedLimit = UNLIMITED) -> str:
    """One transaction removing a client granted at `limit` (which limit sets it is in);
    adding first makes it succeed if it is absent."""
    return "".join(
        f"add element {TABLE} {name} {{ {key} }}\ndelete element {TABLE} {name} {{ {key} }}\n"
        for name, key in _client_keys(client).items()
    ) + "".join(
        f"add element {TABLE} {name} {{ {client.ip} }}\n"
        f"delete element {TABLE} {name} {{ {client.ip} }}\n"
        for name in limit_rates(limit)
    )


def render_walled_garden(addresses: Iterable[IPv4Network]) -> str:
    """Replace the walled-garden addresses (dnsmasq's nftset entries are replaced too)."""
    listed = ", ".join(str(a) for a in addresses)
    add = f"add element {TABLE} {WALLED_GARDEN_SET} {{ {listed} }}\n" if listed else ""
    return f"flush set {TABLE} {WALLED_GARDEN_SET}\n{add}"
