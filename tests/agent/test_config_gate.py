"""The gate's options: speed limits, speed classes, trusted devices and LANs, with their fixes."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from agent.access import (
    DEFAULT_CLASS,
    STAFF_CLASS,
    LanPortal,
    SpeedClass,
    SpeedLimit,
    TrustedDevice,
)
from agent.config import parse_settings
from agent.errors import ConfigError

SHOP = """\
config agent 'agent'
	list lan_interface 'br-lan'
	option portal_address '192.168.1.1'
	list lan 'br-guest=10.78.0.1'

config session 'session'
	option download_limit '10mbit'
	option upload_limit '2048'
	list speed_class 'campaign=4mbit/1mbit'
	list speed_class 'staff=0/0'

config trusted 'till'
	list device 'AA-BB-CC-DD-EE-01'

config trusted 'staff_phones'
	list device '02:aa:bb:cc:dd:02 192.168.1.20'
	list device_id '0123456789abcdef0123456789abcdef'
"""


def refusal(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_settings(text)
    return caught.value


def test_a_shop_s_limits_classes_trusted_devices_and_lans_reach_the_settings() -> None:
    settings = parse_settings(SHOP)
    assert (settings.download_limit, settings.upload_limit) == (10_000, 2048)
    assert settings.speed_classes == (
        SpeedClass("campaign", SpeedLimit(4000, 1000)),
        SpeedClass("staff", SpeedLimit(0, 0)),
    )
    assert settings.trusted_devices == (
        TrustedDevice("aa:bb:cc:dd:ee:01"),
        TrustedDevice("02:aa:bb:cc:dd:02", IPv4Address("192.168.1.20")),
    )
    assert settings.trusted_device_ids == ("0123456789abcdef0123456789abcdef",)
    assert settings.lan_interfaces == ("br-lan", "br-guest")
    assert settings.lan_portals == (
        LanPortal("br-lan", IPv4Address("192.168.1.1")),
        LanPortal("br-guest", IPv4Address("10.78.0.1")),
    )


def test_each_class_gets_its_limit_and_staff_is_unlimited_unless_listed() -> None:
    limits = parse_settings("config session\n\toption download_limit '5mbit'\n").speed_limits
    assert limits[DEFAULT_CLASS] == SpeedLimit(5000, 0)
    assert limits[STAFF_CLASS] == SpeedLimit(0, 0)
    assert parse_settings(SHOP).speed_limits["campaign"] == SpeedLimit(4000, 1000)


@pytest.mark.parametrize(
    ("written", "kbit"),
    [("0", 0), ("64", 64), ("512kbit", 512), ("10mbit", 10_000), ("2.5M", 2500),
     ("1gbit", 1_000_000), ("10Mbit/s", 10_000), ("20mbps", 20_000)],
)  # fmt: skip
def test_a_speed_is_kbit_per_second_or_a_number_with_its_unit(written: str, kbit: int) -> None:
    text = f"config session\n\toption download_limit '{written}'\n"
    assert parse_settings(text).download_limit == kbit


@pytest.mark.parametrize(
    ("option", "value", "complaint", "fix"),
    [
        ("download_limit", "fast", "is not a speed", "e.g. 512kbit or 10mbit"),
        ("upload_limit", "10", "is out of range", "from 64kbit to 10gbit"),
        ("upload_limit", "10MB", "is not a speed", "kbit, mbit or gbit"),
        ("upload_limit", "100000bit", "is not a speed", "kbit, mbit or gbit"),
    ],
)
def test_a_bad_speed_names_the_option_the_line_and_the_fix(
    option: str, value: str, complaint: str, fix: str
) -> None:
    error = refusal(f"config session\n\toption {option} '{value}'\n")
    assert error.option == option and error.line == 2
    assert complaint in str(error) and fix in str(error)


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("campaign", "is not a speed class"),
        ("campaign=4mbit", "is not a speed class"),
        ("Big Deal=1mbit/1mbit", "is not a class name"),
        ("default=1mbit/1mbit", "default class is not written as a speed_class"),
        ("vip=1mbit/fast", "is not a speed"),
    ],
)
def test_a_bad_speed_class_is_refused_with_the_form_to_write(value: str, complaint: str) -> None:
    error = refusal(f"config session\n\tlist speed_class '{value}'\n")
    assert error.option == "speed_class" and complaint in str(error)


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("till", "is not a device's MAC address"),
        ("01:00:5e:00:00:01", "is not a device's MAC address"),  # multicast
        ("aa:bb:cc:dd:ee:01 192.168.1", "is not an IPv4 address"),
        ("aa:bb:cc:dd:ee:01 192.168.1.2 extra", "is not a device"),
    ],
)
def test_a_bad_trusted_device_is_refused_naming_the_form(value: str, complaint: str) -> None:
    error = refusal(f"config trusted\n\tlist device '{value}'\n")
    assert error.option == "device" and complaint in str(error)
    assert "aa:bb:cc:dd:ee:ff 192.168.1.5" in str(error)


def test_a_raw_mac_is_refused_where_a_device_id_belongs() -> None:
    error = refusal("config trusted\n\tlist device_id 'aabbccddeeff'\n")
    assert "not a device id" in str(error) and "not a MAC address" in str(error)


def test_lans_alone_replace_the_default_lan_and_give_the_main_address() -> None:
    settings = parse_settings(
        "config agent\n\tlist lan 'br-shop=10.77.0.1'\n\tlist lan 'br-guest=10.78.0.1'\n"
    )
    assert settings.lan_interfaces == ("br-shop", "br-guest")
    assert settings.portal_address == IPv4Address("10.77.0.1")


@pytest.mark.parametrize(
    ("lans", "complaint"),
    [
        (["br-guest"], "is not a LAN"),
        (["br-guest=10.78.0.300"], "is not an IPv4 address"),
        (["lo=10.78.0.1"], "clients never arrive on loopback"),
        (["br-a=10.78.0.1", "br-b=10.78.0.1"], "share an interface or a portal address"),
    ],
)
def test_a_bad_lan_is_refused_naming_the_option(lans: list[str], complaint: str) -> None:
    listed = "".join(f"\tlist lan '{lan}'\n" for lan in lans)
    error = refusal(f"config agent\n{listed}")
    assert error.option == "lan" and complaint in str(error)


def test_a_speed_class_listed_twice_is_refused() -> None:
    listed = "\tlist speed_class 'vip=1mbit/1mbit'\n\tlist speed_class 'vip=2mbit/1mbit'\n"
    error = refusal(f"config session\n{listed}")
    assert error.option == "speed_class" and "'vip' is listed twice" in str(error)
