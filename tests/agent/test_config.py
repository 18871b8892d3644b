"""Settings from /etc/config/loopspot: every option mapped, every mistake named with its fix."""

from __future__ import annotations

import contextlib
import dataclasses
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import KNOWN_OPTIONS, load_settings, parse_settings
from agent.errors import ConfigError
from agent.settings import Settings

DEFAULT_CONFIG = Path(__file__).parents[2] / "deploy" / "openwrt" / "files" / "loopspot.config"

CAFE = """\
config agent 'agent'
	list lan_interface 'br-lan'
	list lan_interface 'wlan1'
	option portal_address '10.0.0.1'
	option portal_port '8080'
	option state_dir '/tmp/cafe'
	option flash_dir '/etc/cafe'
	option snapshot_interval '10m'
	option control_socket '/var/run/cafe.sock'
	option nft_backend 'nft'
	option counter_poll_interval '1.5'

config session 'session'
	option timeout '2h'
	option idle_timeout '900'
	option data_quota '500M'

config portal 'portal'
	option template 'cafe_2'
	option templates_dir '/usr/share/loopspot/portal_templates'
	option language 'zh'
	option terms_version '2026-11'
	option site_name 'Café Lumière'
	option rate_limit '2.5'
	option rate_burst '40'

config walled_garden 'payments'
	list domain 'alipay.com'
	list address '203.0.113.0/24'
"""


def one(section: str, option: str, value: str) -> Settings:
    """Settings from a file that sets just one option; the option is on line 2."""
    keyword = "list" if option in ("lan_interface", "domain", "address") else "option"
    return parse_settings(f"config {section}\n\t{keyword} {option} '{value}'\n")


def refusal(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_settings(text)
    return caught.value


def test_every_option_of_the_cafe_example_reaches_its_settings_field() -> None:
    assert parse_settings(CAFE) == Settings(
        lan_interfaces=("br-lan", "wlan1"),
        portal_address=IPv4Address("10.0.0.1"),
        portal_port=8080,
        state_dir=Path("/tmp/cafe"),
        flash_dir=Path("/etc/cafe"),
        snapshot_interval=600,
        control_socket=Path("/var/run/cafe.sock"),
        nft_backend="nft",
        counter_poll_interval=1.5,
        session_timeout=7200,
        idle_timeout=900,
        data_quota=500 * 1024**2,
        template="cafe_2",
        templates_dir=Path("/usr/share/loopspot/portal_templates"),
        language="zh",
        terms_version="2026-11",
        site_name="Café Lumière",
        rate_limit=2.5,
        rate_burst=40,
        walled_garden_domains=("alipay.com",),
        walled_garden_addresses=(IPv4Network("203.0.113.0/24"),),
    )


def test_an_empty_file_gives_the_default_settings() -> None:
    assert parse_settings("# nothing configured yet\n") == Settings()


def test_the_shipped_default_config_parses_to_the_default_settings() -> None:
    assert load_settings(DEFAULT_CONFIG) == Settings()


def test_the_shipped_default_config_shows_every_section_and_option() -> None:
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    for section, options in KNOWN_OPTIONS.items():
        assert f"\nconfig {section}" in text
        for option in options:
            assert f" {option} '" in text, f"{section}.{option} is not documented"


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("0", 0), ("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), (" 1h ", 3600)],
)
def test_session_timeout_takes_seconds_or_a_unit(written: str, seconds: int) -> None:
    assert one("session", "timeout", written).session_timeout == seconds


@pytest.mark.parametrize(
    ("written", "size"),
    [("0", 0), ("1048576", 1024**2), ("2048K", 2 * 1024**2), ("500M", 500 * 1024**2),
     ("500m", 500 * 1024**2), ("2G", 2 * 1024**3)],
)  # fmt: skip
def test_data_quota_takes_bytes_or_1024_multiples(written: str, size: int) -> None:
    assert one("session", "data_quota", written).data_quota == size


def test_a_zero_session_timeout_and_idle_timeout_mean_no_limit() -> None:
    got = parse_settings("config session\n\toption timeout 0\n\toption idle_timeout 0\n")
    assert (got.session_timeout, got.idle_timeout) == (0, 0)


def test_an_idle_timeout_longer_than_the_session_timeout_is_fine() -> None:
    got = parse_settings("config session\n\toption timeout 10m\n\toption idle_timeout 1h\n")
    assert (got.session_timeout, got.idle_timeout) == (600, 3600)


def test_an_empty_value_keeps_the_default_as_uci_treats_it_as_unset() -> None:
    assert one("portal", "templates_dir", "").templates_dir is None


def test_walled_garden_sections_add_up_without_repeats() -> None:
    got = parse_settings(
        "config walled_garden\n\tlist domain 'Alipay.COM.'\n\tlist address 203.0.113.7\n"
        "config walled_garden 'wechat'\n\tlist domain wechat.com\n\tlist domain alipay.com\n"
        "\tlist address 198.51.100.0/24\n"
    )
    assert got.walled_garden_domains == ("alipay.com", "wechat.com")
    assert got.walled_garden_addresses == (
        IPv4Network("203.0.113.7/32"),
        IPv4Network("198.51.100.0/24"),
    )


def test_an_international_domain_is_stored_as_dnsmasq_needs_it() -> None:
    assert one("walled_garden", "domain", "例子.中国").walled_garden_domains == (
        "xn--fsqu00a.xn--fiqs8s",
    )


def test_unknown_option_names_the_line_and_suggests_the_closest_option() -> None:
    error = refusal(
        "config agent 'agent'\n\toption portal_address 10.0.0.1\n\toption portal_prot 80\n"
    )
    assert (error.line, error.option) == (3, "portal_prot")
    assert str(error) == (
        "line 3: option 'portal_prot': unknown option in 'config agent'."
        " Fix: did you mean 'portal_port'?"
    )


def test_an_option_put_in_the_wrong_section_says_where_it_belongs() -> None:
    error = refusal("config agent\n\toption idle_timeout 5m\n")
    assert error.line == 2
    assert "'idle_timeout' belongs in 'config session'" in error.fix


def test_a_settings_field_name_used_as_an_option_points_to_the_uci_name() -> None:
    assert (
        "write option timeout in 'config session'"
        in refusal("config session\n\toption session_timeout 1h\n").fix
    )
    assert (
        "write list domain in 'config walled_garden'"
        in refusal("config agent\n\tlist walled_garden_domains a.com\n").fix
    )


def test_unknown_section_type_suggests_the_closest_section() -> None:
    error = refusal("config agent\nconfig sesion 'session'\n\toption timeout 1h\n")
    assert error.line == 2
    assert error.fix.startswith("did you mean 'config session'?")


def test_an_option_written_where_a_list_is_expected_is_refused_with_the_list_form() -> None:
    error = refusal("config agent\n\toption lan_interface 'br-lan'\n")
    assert (error.line, error.option) == (2, "lan_interface")
    assert error.fix.startswith("write list lan_interface 'br-lan'")


def test_a_list_written_where_one_value_is_expected_is_refused_with_the_option_form() -> None:
    error = refusal("config agent\n\tlist portal_port 2050\n\tlist portal_port 2051\n")
    assert (error.line, error.option) == (2, "portal_port")
    assert error.fix.startswith("write option portal_port '2050'")


def test_a_second_agent_section_is_refused_naming_both_lines() -> None:
    error = refusal("config agent 'a'\n\nconfig agent 'b'\n")
    assert error.line == 3
    assert "the first is on line 1" in str(error)


def test_portal_port_80_is_refused_because_the_gate_redirects_port_80_to_the_portal() -> None:
    error = refusal("config agent\n\toption portal_port 80\n")
    assert (error.line, error.option) == (2, "portal_port")
    assert "redirects clients' port 80" in str(error)


def test_a_port_out_of_range_gets_the_exact_message_an_installer_reads() -> None:
    text = "\n".join(
        ["config agent 'agent'"] + ["\t# comment"] * 5 + ["\toption portal_port 70000"]
    )
    assert str(refusal(text)) == (
        "line 7: option 'portal_port': '70000' is not a port number."
        " Fix: use a number from 1 to 65535."
    )


BAD_VALUES = [
    ("agent", "lan_interface", "br lan", "not a network interface name"),
    ("agent", "lan_interface", "a/b", "not a network interface name"),
    ("agent", "lan_interface", "sixteen_chars_xx", "not a network interface name"),
    ("agent", "lan_interface", "", "not a network interface name"),
    ("agent", "lan_interface", "lo", "loopback"),
    ("agent", "portal_address", "192.168.1.256", "not an IPv4 address"),
    ("agent", "portal_address", "192.168.001.1", "not an IPv4 address"),
    ("agent", "portal_address", "0.0.0.0", "clients cannot reach"),
    ("agent", "portal_address", "127.0.0.1", "clients cannot reach"),
    ("agent", "portal_port", "0", "not a port number"),
    ("agent", "portal_port", "-1", "not a port number"),
    ("agent", "portal_port", "2_050", "not a port number"),
    ("agent", "portal_port", "٢٠٥٠", "not a port number"),
    ("agent", "portal_port", "53", "dnsmasq"),
    ("agent", "portal_port", "443", "resets HTTPS"),
    ("agent", "portal_port", "22", "dropbear"),
    ("agent", "state_dir", "tmp/loopspot", "not an absolute path"),
    ("agent", "state_dir", "/tmp/../etc", "not an absolute path"),
    ("agent", "state_dir", "/", "root directory"),
    ("agent", "flash_dir", "/etc/loop\nspot", "not an absolute path"),
    ("agent", "snapshot_interval", "5 minutes", "not a duration"),
    ("agent", "snapshot_interval", "10s", "out of range"),
    ("agent", "snapshot_interval", "2d", "out of range"),
    ("agent", "control_socket", "/tmp/" + "s" * 120, "Unix socket path"),
    ("agent", "nft_backend", "iptables", "not a choice"),
    ("agent", "counter_poll_interval", "0", "not a number from 0.5 to 60"),
    ("agent", "counter_poll_interval", "nan", "not a number"),
    ("agent", "counter_poll_interval", "inf", "not a number"),
    ("agent", "counter_poll_interval", "1e3", "not a number"),
    ("session", "timeout", "-1h", "not a duration"),
    ("session", "timeout", "1w", "not a duration"),
    ("session", "timeout", "400d", "out of range"),
    ("session", "timeout", "9" * 13, "not a duration"),
    ("session", "timeout", "400d", "out of range"),
    ("session", "idle_timeout", "1.5h", "not a duration"),
    ("session", "data_quota", "1.5G", "not a size"),
    ("session", "data_quota", "500MB", "not a size"),
    ("session", "data_quota", "1000", "too small"),
    ("portal", "template", "../etc", "not allowed"),
    ("portal", "template", "Default", "not allowed"),
    ("portal", "templates_dir", "templates", "not an absolute path"),
    ("portal", "language", "fr", "not a choice"),
    ("portal", "terms_version", "v 2", "not allowed"),
    ("portal", "site_name", "   ", "not a usable site name"),
    ("portal", "site_name", "x" * 81, "not a usable site name"),
    ("portal", "site_name", "two\nlines", "not a usable site name"),
    ("portal", "site_name", "bell\x07", "not a usable site name"),
    ("portal", "rate_limit", "0", "not a number from 0.1 to 1000"),
    ("portal", "rate_limit", "-5", "not a number"),
    ("portal", "rate_burst", "0", "not a burst size"),
    ("portal", "rate_burst", "1.5", "not a burst size"),
    ("walled_garden", "domain", "com", "whole top-level domain"),
    ("walled_garden", "domain", "*.alipay.com", "wildcard"),
    ("walled_garden", "domain", "-bad-.com", "not a domain name"),
    ("walled_garden", "domain", "a..com", "not a domain name"),
    ("walled_garden", "domain", "pay_me.com", "not a domain name"),
    ("walled_garden", "domain", "1.2.3.4", "is an address"),
    ("walled_garden", "domain", "x" * 64 + ".com", "not a domain name"),
    ("walled_garden", "address", "0.0.0.0/0", "everyone through"),
    ("walled_garden", "address", "10.0.0.0/7", "everyone through"),
    ("walled_garden", "address", "203.0.113.7/24", "address inside a network"),
    ("walled_garden", "address", "2001:db8::/32", "not an IPv4 address or network"),
    ("walled_garden", "address", "alipay.com", "not an IPv4 address or network"),
]


@pytest.mark.parametrize(("section", "option", "value", "complaint"), BAD_VALUES)
def test_a_bad_value_is_refused_naming_the_option_the_line_and_the_fix(
    section: str, option: str, value: str, complaint: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        one(section, option, value)
    error = caught.value
    assert (error.option, error.line) == (option, 2)
    assert complaint in str(error)
    assert error.fix
    assert str(error).startswith(f"line 2: option '{option}': ")


def test_the_fix_for_an_address_inside_a_network_names_the_network() -> None:
    assert refusal("config walled_garden\n\tlist address 203.0.113.7/24\n").fix == (
        "write 203.0.113.0/24."
    )


def test_state_dir_on_flash_inside_flash_dir_is_refused() -> None:
    error = refusal("config agent\n\toption state_dir /etc/loopspot/state\n")
    assert (error.option, error.line) == ("state_dir", 2)
    assert "overlap" in str(error)


def test_flash_dir_equal_to_the_default_state_dir_is_blamed_on_flash_dir() -> None:
    error = refusal("config agent\n\toption flash_dir /tmp/loopspot\n")
    assert (error.option, error.line) == ("flash_dir", 2)


def test_counters_must_be_read_more_often_than_the_idle_timeout() -> None:
    error = refusal(
        "config agent\n\toption counter_poll_interval 60\n"
        "config session\n\toption idle_timeout 1m\n"
    )
    assert (error.option, error.line) == ("counter_poll_interval", 2)
    assert (
        parse_settings(
            "config agent\n\toption counter_poll_interval 60\n"
            "config session\n\toption idle_timeout 0\n"
        ).counter_poll_interval
        == 60
    )


def test_an_error_carries_a_note_naming_the_file() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings("config nope\n", source="/etc/config/loopspot")
    assert caught.value.__notes__ == ["in /etc/config/loopspot"]


def test_a_missing_file_is_a_config_error_that_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read .*loopspot") as caught:
        load_settings(tmp_path / "loopspot")
    assert "reinstall" in caught.value.fix


def test_a_directory_instead_of_a_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read") as caught:
        load_settings(tmp_path)
    assert "regular file" in caught.value.fix


def test_a_file_that_is_not_utf8_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "loopspot"
    path.write_bytes(b"config portal\n\toption site_name 'Caf\xe9'\n")
    with pytest.raises(ConfigError, match="not UTF-8") as caught:
        load_settings(path)
    assert caught.value.line == 2


def test_a_file_is_read_with_its_settings(tmp_path: Path) -> None:
    path = tmp_path / "loopspot"
    path.write_text(CAFE, encoding="utf-8")
    assert load_settings(path).site_name == "Café Lumière"


# --- properties -----------------------------------------------------------------------------

WORDS = st.sampled_from(
    [
        "config", "option", "list", "agent", "session", "portal", "walled_garden",
        *[o for options in KNOWN_OPTIONS.values() for o in options],
        "'0'", "'1h'", "'80'", "'br-lan'", "'/tmp/x'", "'a.com'", "'1.2.3.4/8'", "'nan'",
        "''", "'", "\n", "\t", "#", ";", "\\\n", "'9999999999999d'", "'é'",
    ]
)  # fmt: skip


@settings(max_examples=500)
@given(st.text())
def test_any_text_either_gives_settings_or_raises_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_settings(text)


@settings(max_examples=1000)
@given(st.lists(WORDS, max_size=30).map(" ".join))
def test_config_shaped_noise_either_gives_settings_or_raises_config_error(text: str) -> None:
    try:
        assert isinstance(parse_settings(text), Settings)
    except ConfigError as error:
        assert error.fix


@given(st.integers(0, 10**6), st.sampled_from([("", 1), ("s", 1), ("m", 60), ("h", 3600)]))
def test_a_duration_is_its_number_times_its_unit(number: int, unit: tuple[str, int]) -> None:
    suffix, factor = unit
    seconds = number * factor
    text = f"config session\n\toption timeout '{number}{suffix}'\n"
    if seconds == 0 or 1 <= seconds <= 365 * 86400:
        assert parse_settings(text).session_timeout == seconds
    else:
        with pytest.raises(ConfigError, match="out of range"):
            parse_settings(text)


@st.composite
def valid_settings(draw: st.DrawFn) -> Settings:
    """Settings an installer could write, for the round trip through the UCI text."""
    return dataclasses.replace(
        Settings(),
        portal_port=draw(st.integers(1025, 65535)),
        session_timeout=draw(st.sampled_from([0, 60, 3600, 86400])),
        idle_timeout=draw(st.integers(60, 86400)),
        data_quota=draw(st.sampled_from([0, 1024**2, 3 * 1024**3])),
        rate_burst=draw(st.integers(1, 10000)),
        site_name=draw(
            st.text(st.characters(categories=("L", "N", "P", "S")), min_size=1, max_size=80)
        ),
        walled_garden_domains=tuple(
            draw(st.lists(st.from_regex(r"[a-z0-9]{1,10}\.(com|cn|net)", fullmatch=True),
                          unique=True, max_size=5))
        ),
    )  # fmt: skip


QUOTE, ESCAPED_QUOTE = "'", "'\\''"  # as uci export writes a quote inside a value


@settings(max_examples=200)
@given(valid_settings())
def test_settings_written_as_uci_read_back_the_same(wanted: Settings) -> None:
    domains = "".join(f"\tlist domain '{d}'\n" for d in wanted.walled_garden_domains)
    text = (
        f"config agent\n\toption portal_port {wanted.portal_port}\n"
        f"config session\n\toption timeout {wanted.session_timeout}\n"
        f"\toption idle_timeout {wanted.idle_timeout}\n\toption data_quota {wanted.data_quota}\n"
        f"config portal\n\toption rate_burst {wanted.rate_burst}\n"
        f"\toption site_name '{wanted.site_name.replace(QUOTE, ESCAPED_QUOTE)}'\n"
        f"config walled_garden\n{domains}"
    )
    assert parse_settings(text) == wanted
