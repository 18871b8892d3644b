"""The nft ruleset is rendered from data in one place."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from agent.clients import Client
from agent.ruleset import (
    PORTAL_MARK,
    GateSpec,
    Grant,
    render_grant,
    render_revoke,
    render_table,
)
from agent.settings import Settings

SPEC = GateSpec(
    ("br-lan", "wlan1"), IPv4Address("10.77.0.1"), 2050, (IPv4Network("198.51.100.20/32"),)
)
PHONE = Client.of("02:00:00:00:00:01", "10.77.0.2")


def test_table_replaces_itself_atomically() -> None:
    script = render_table(SPEC)
    head = script.splitlines()[:3]
    assert head == ["table inet loopspot {}", "delete table inet loopspot", "table inet loopspot {"]


def test_table_names_every_lan_interface_and_the_portal() -> None:
    script = render_table(SPEC)
    assert 'tcp dport 80 iifname { "br-lan", "wlan1" } jump captive' in script
    assert "tproxy ip to 10.77.0.1:2050" in script
    assert "198.51.100.20/32" in script


def _chain(script: str, name: str) -> list[str]:
    body = script.split(f"chain {name} {{")[1].split("\n\t}")[0]
    return [line.strip() for line in body.strip().splitlines()]


def test_a_captive_phone_s_web_traffic_is_handed_to_the_portal_marked_for_local_delivery() -> None:
    mark = f"meta mark set meta mark or {PORTAL_MARK:#010x}"
    to_portal = f"meta l4proto tcp tproxy ip to 10.77.0.1:2050 {mark} accept"
    assert _chain(render_table(SPEC), "captive") == [
        "meta nfproto != ipv4 return",
        f"ip daddr 10.77.0.1 {to_portal}",
        "ip daddr @walled_garden return",
        "ether saddr . ip saddr @clients return",
        to_portal,
    ]


def test_the_gate_needs_no_connection_tracking() -> None:
    """No nat chain and no `ct` match: forwarding pays for no conntrack lookup."""
    script = render_table(SPEC)
    assert "type nat" not in script
    assert "redirect" not in script
    assert " ct " not in script


def test_a_captive_phone_hears_only_from_dns_dhcp_and_the_walled_garden() -> None:
    assert _chain(render_table(SPEC), "to_lan") == [
        "meta nfproto ipv6 drop",
        "udp sport { 53, 67, 68 } accept",
        "tcp sport 53 accept",
        "ip saddr @walled_garden accept",
        "icmp type { destination-unreachable, time-exceeded } accept",
        "drop",
    ]


def test_online_phones_pass_first_and_everything_from_the_lan_else_goes_to_from_lan() -> None:
    lan = '{ "br-lan", "wlan1" }'
    assert _chain(render_table(SPEC), "forward")[1:] == [
        "ether saddr . ip saddr @clients accept",  # an online phone's upload
        f"iifname {lan} jump from_lan",  # ends every packet from the LAN
        "ip daddr @downloads accept",  # an online phone's download, from outside the LAN only
        f"oifname {lan} jump to_lan",
    ]


def test_unauthorized_https_is_reset_and_everything_else_dropped() -> None:
    lines = _chain(render_table(SPEC), "from_lan")
    assert lines[0] == "meta nfproto ipv6 jump ipv6_from_lan"
    assert "tcp dport 443 reject with tcp reset" in lines
    assert lines[-1] == "drop"


def test_ipv6_of_an_online_phone_is_refused_at_once_and_of_a_captive_one_dropped() -> None:
    assert _chain(render_table(SPEC), "ipv6_from_lan") == [
        "ether saddr @online_macs meta l4proto tcp reject with tcp reset",
        "ether saddr @online_macs reject with icmpx type admin-prohibited",
        "drop",
    ]


def test_granted_clients_are_carried_into_a_reinstalled_table_with_their_time() -> None:
    script = render_table(
        SPEC, [Grant(PHONE, 120), Grant(Client.of("02:00:00:00:00:02", "10.77.0.3"), None)]
    )
    assert "02:00:00:00:00:01 . 10.77.0.2 timeout 120s, 02:00:00:00:00:02 . 10.77.0.3 }" in script
    assert "10.77.0.2 timeout 120s, 10.77.0.3 }" in script


def test_grant_is_one_element_in_each_set() -> None:
    assert render_grant(Grant(PHONE, 60)) == (
        "add element inet loopspot clients { 02:00:00:00:00:01 . 10.77.0.2 timeout 60s }\n"
        "add element inet loopspot downloads { 10.77.0.2 timeout 60s }\n"
        "add element inet loopspot online_macs { 02:00:00:00:00:01 timeout 60s }\n"
    )


def test_revoke_succeeds_even_when_the_element_is_already_gone() -> None:
    script = render_revoke(PHONE)
    for name in ("clients", "downloads", "online_macs"):
        assert script.index(f"add element inet loopspot {name}") < script.index(
            f"delete element inet loopspot {name}"
        )


def test_spec_comes_from_the_settings() -> None:
    spec = GateSpec.from_settings(Settings(portal_port=8080))
    assert spec.portal_port == 8080
    assert spec.lan_interfaces == ("br-lan",)
