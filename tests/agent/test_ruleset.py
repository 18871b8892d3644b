"""The nft ruleset is rendered from data in one place."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv4Network

from agent.access import LanPortal, SpeedClass, SpeedLimit, TrustedDevice
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


SLOW = SpeedLimit(download=10_000, upload=2000)
GUEST = LanPortal("br-guest", IPv4Address("10.78.0.1"))
TILL = TrustedDevice("02:00:00:00:00:09")
STAFF_PHONE = TrustedDevice("02:00:00:00:00:0a", IPv4Address("10.77.0.9"))


def test_without_limits_an_online_phone_s_path_has_no_limit_lookup() -> None:
    assert "limits" not in "".join(_chain(render_table(SPEC), "forward"))


def test_limited_phones_cost_every_phone_one_set_lookup_each_way() -> None:
    spec = dataclasses.replace(SPEC, speed_limits=(SLOW,))
    lan = '{ "br-lan", "wlan1" }'
    assert _chain(render_table(spec), "forward")[1:] == [
        "ip saddr @upload_limits drop",
        "ether saddr . ip saddr @clients accept",
        f"iifname {lan} jump from_lan",
        "ip daddr @download_limits drop",
        "ip daddr @downloads accept",
        f"oifname {lan} jump to_lan",
    ]


def test_a_limited_phone_s_element_carries_its_own_bucket_that_drops_what_goes_over() -> None:
    script = render_table(SPEC, [Grant(PHONE, 60, SLOW)])
    upload = script.split("set upload_limits {")[1].split("}")[0]
    download = script.split("set download_limits {")[1].split("}")[0]
    assert "10.77.0.2 limit rate over 250000 bytes/second burst 25000 bytes timeout 60s" in upload
    assert "10.77.0.2 limit rate over 1250000 bytes/second burst 125000 bytes timeout 60s" in (
        download
    )
    assert "chain upload_" not in script and "meter" not in script  # nothing per rate


def test_an_element_added_without_a_limit_of_its_own_never_drops() -> None:
    upload = render_table(SPEC).split("set upload_limits {")[1].split("}")[0]
    assert "limit rate over 10000000000 bytes/second burst 1000000000 bytes" in upload


def test_a_slow_rate_still_lets_two_full_frames_through_at_once() -> None:
    script = render_grant(Grant(PHONE, 60, SpeedLimit(upload=64)))
    assert "limit rate over 8000 bytes/second burst 3028 bytes timeout 60s" in script


def test_a_limited_grant_adds_its_address_to_the_limit_sets_in_the_same_transaction() -> None:
    script = render_grant(Grant(PHONE, 60, SLOW))
    assert script.endswith(
        "add element inet loopspot upload_limits"
        " { 10.77.0.2 limit rate over 250000 bytes/second burst 25000 bytes timeout 60s }\n"
        "add element inet loopspot download_limits"
        " { 10.77.0.2 limit rate over 1250000 bytes/second burst 125000 bytes timeout 60s }\n"
    )
    assert "limits" not in render_grant(Grant(PHONE, 60))


def test_a_limited_phone_s_revoke_takes_it_out_of_the_limit_sets_it_was_granted_into() -> None:
    script = render_revoke(PHONE, SpeedLimit(download=10_000))
    assert (
        "add element inet loopspot download_limits { 10.77.0.2 }\n"
        "delete element inet loopspot download_limits { 10.77.0.2 }\n"
    ) in script
    assert "upload_limits" not in script


def test_the_installed_table_meters_the_rates_its_grants_carry() -> None:
    script = render_table(SPEC, [Grant(PHONE, 60, SpeedLimit(upload=512))])
    assert "10.77.0.2 limit rate over 64000 bytes/second burst 6400 bytes timeout 60s" in script
    assert "ip saddr @upload_limits drop" in script  # a grant's limit is enforced too


def test_a_trusted_device_skips_the_portal_and_passes_both_ways() -> None:
    script = render_table(dataclasses.replace(SPEC, trusted=(TILL, STAFF_PHONE)))
    assert "02:00:00:00:00:09" in script.split("set trusted_macs {")[1].split("}")[0]
    assert "02:00:00:00:00:0a . 10.77.0.9" in script.split("set trusted_hosts {")[1]
    captive = _chain(script, "captive")
    assert captive[-3:-1] == [
        "ether saddr . ip saddr @trusted_hosts return",
        "ether saddr @trusted_macs return",
    ]
    assert _chain(script, "from_lan")[1:3] == [
        "ether saddr . ip saddr @trusted_hosts accept",
        "ether saddr @trusted_macs update @trusted_ips { ip saddr timeout 600s } accept",
    ]
    assert _chain(script, "to_lan")[1] == "ip daddr @trusted_ips accept"


def test_without_trusted_devices_captive_traffic_meets_no_trusted_rule() -> None:
    script = render_table(SPEC)
    for chain in ("captive", "from_lan", "to_lan"):
        assert not any("trusted" in rule for rule in _chain(script, chain))


def test_each_lan_s_captive_phones_are_handed_to_the_portal_on_their_own_lan() -> None:
    spec = GateSpec(("br-lan",), IPv4Address("10.77.0.1"), 2050, lans=(GUEST,))
    script = render_table(spec)
    mark = f"meta mark set meta mark or {PORTAL_MARK:#010x}"
    assert 'tcp dport 80 iifname { "br-lan", "br-guest" } jump captive' in script
    assert _chain(script, "captive")[1] == "ip daddr { 10.77.0.1, 10.78.0.1 } jump to_portal"
    assert _chain(script, "to_portal") == [
        f'iifname "br-lan" meta l4proto tcp tproxy ip to 10.77.0.1:2050 {mark} accept',
        f'iifname "br-guest" meta l4proto tcp tproxy ip to 10.78.0.1:2050 {mark} accept',
        "drop",
    ]


def test_nothing_passes_from_one_lan_to_another_but_interfaces_of_one_lan_are_one_lan() -> None:
    spec = GateSpec(("br-lan", "wlan1"), IPv4Address("10.77.0.1"), 2050, lans=(GUEST,))
    first = _chain(render_table(spec), "forward")[1]
    apart = [("br-lan", "br-guest"), ("wlan1", "br-guest"), ("br-guest", "br-lan"),
             ("br-guest", "wlan1")]  # fmt: skip
    pairs = [f'"{a}" . "{b}"' for a, b in apart]
    assert first == f"iifname . oifname {{ {', '.join(pairs)} }} drop"
    assert "oifname {" not in _chain(render_table(SPEC), "forward")[1]


def test_the_spec_takes_every_class_s_limit_lans_and_trusted_devices_from_the_settings() -> None:
    settings = Settings(
        download_limit=8000,
        speed_classes=(SpeedClass("vip", SpeedLimit(0, 0)),),
        trusted_devices=(TILL,),
        lans=(GUEST,),
    )
    spec = GateSpec.from_settings(settings)
    assert spec.speed_limits == (SpeedLimit(8000, 0), SpeedLimit(0, 0))
    assert spec.trusted == (TILL,)
    assert [lan.interface for lan in spec.lan_portals] == ["br-lan", "br-guest"]
