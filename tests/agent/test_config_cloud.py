"""`config cloud` and `config presence`: off by default, precise errors like every option."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import parse_settings
from agent.errors import ConfigError
from agent.settings import Settings

LAB = """\
config cloud 'cloud'
\toption enabled '1'
\toption router_id 'shop-0042'
\toption broker_host 'MQTT.Example.com.'
\toption broker_port '8883'
\toption tls '1'
\toption credentials_dir '/etc/loopspot/credentials'
\toption ca_file '/etc/ssl/ca.crt'
\toption cert_file '/etc/loopspot/r.crt'
\toption key_file '/etc/loopspot/r.key'
\toption username 'shop-0042'
\toption password_file '/etc/loopspot/password'
\toption alliance_key_file '/etc/loopspot/alliance.key'
\toption keepalive '30s'
\toption status_interval '1m'
\toption spool_max_events '5000'
\toption spool_flush_interval '10m'

config presence 'presence'
\toption dhcp_leases '/tmp/dhcp.leases'
\toption interval '10'
\toption left_after '10m'
"""


def test_the_cloud_is_off_unless_enabled() -> None:
    assert not Settings().cloud_enabled
    assert not parse_settings("config cloud 'cloud'\n").cloud_enabled


def test_every_cloud_and_presence_option_is_read() -> None:
    got = parse_settings(LAB)
    assert got.cloud_enabled and got.cloud_tls
    assert (got.cloud_router_id, got.cloud_broker_host, got.cloud_broker_port) == (
        "shop-0042", "mqtt.example.com", 8883,
    )  # fmt: skip
    assert got.cloud_ca_file == Path("/etc/ssl/ca.crt")
    assert (got.cloud_keepalive, got.cloud_status_interval) == (30, 60)
    assert (got.spool_max_events, got.spool_flush_interval) == (5000, 600)
    assert (got.presence_interval, got.presence_left_after) == (10, 600)


@pytest.mark.parametrize(
    ("text", "option", "line", "fix"),
    [
        ("config cloud\n\toption enabled 'maybe'\n", "enabled", 2, "1 (on) or 0 (off)"),
        ("config cloud\n\toption router_id 'Shop 42'\n", "router_id", 2, "lower-case"),
        ("config cloud\n\toption broker_host 'mqtts://x'\n", "broker_host", 2, "no mqtts://"),
        ("config cloud\n\toption broker_port '0'\n", "broker_port", 2, "from 1 to 65535"),
        ("config cloud\n\toption keepalive '1h'\n", "keepalive", 2, "from 5s"),
        ("config cloud\n\toption spool_max_events '5'\n", "spool_max_events", 2, "from 10"),
        ("config cloud\n\toption spool_flush_interval '1s'\n", "spool_flush_interval", 2, "10s"),
        ("config cloud\n\toption cert_file '/c.crt'\n", "cert_file", 2, "key_file"),
        ("config cloud\n\toption password_file '/p'\n", "password_file", 2, "username"),
        ("config presence\n\toption interval '5m'\n", "interval", 2, "shorter than left_after"),
        ("config cloud\n\toption spool_max_event '5'\n", "spool_max_event", 2, "spool_max_events"),
    ],
)
def test_a_wrong_option_is_named_with_its_line_and_fix(
    text: str, option: str, line: int, fix: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(text)
    assert (caught.value.option, caught.value.line) == (option, line)
    assert fix in caught.value.fix


def test_presence_options_belong_in_their_own_section() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings("config cloud\n\toption left_after '5m'\n")
    assert "config presence" in caught.value.fix
