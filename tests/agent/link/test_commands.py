"""What the cloud may change and ask: checked like the UCI file, and only from the allow-list."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from agent.access import SpeedLimit
from agent.link.commands import (
    ALLOWED_ACTIONS,
    ConfigRefused,
    RecentCommands,
    Verdict,
    command_ack,
    config_ack,
    find_device,
    judge,
    live_changes,
    settings_with,
)
from agent.settings import Settings
from agent.wire import CommandAction, RouterConfig, device_id

KEY = b"k" * 32


def test_a_pushed_config_changes_only_what_it_carries() -> None:
    base = Settings(site_name="Corner Shop", walled_garden_domains=("pay.example",))
    config = RouterConfig(
        version=3,
        session_timeout=7200,
        walled_garden_addresses=("203.0.113.0/24", "203.0.113.0/24"),
    )
    got = settings_with(base, config)
    assert got.session_timeout == 7200
    assert got.walled_garden_addresses == (IPv4Network("203.0.113.0/24"),)
    assert got.site_name == "Corner Shop" and got.walled_garden_domains == ("pay.example",)
    assert live_changes(base, got) == ("session_timeout", "walled_garden_addresses")


@pytest.mark.parametrize(
    ("config", "field", "fix"),
    [
        (RouterConfig(version=1, walled_garden_addresses=("0.0.0.0/4",)),
         "walled_garden_addresses", "/8 or narrower"),
        (RouterConfig(version=1, walled_garden_domains=("*.pay.example",)),
         "walled_garden_domains", "subdomains count"),
        (RouterConfig(version=1, data_quota=1000), "data_quota", "at least 1M"),
        (RouterConfig(version=1, terms_version="v 2"), "terms_version", "letters, digits"),
        (RouterConfig(version=1, site_name="\n"), "site_name", "1 to 80 characters"),
        (RouterConfig(version=1, idle_timeout=1), "idle_timeout", "counter_poll_interval"),
        (RouterConfig(version=0, site_name="x"), "version", "1 or more"),
    ],
)  # fmt: skip
def test_a_config_the_file_would_refuse_is_refused_naming_the_field_and_fix(
    config: RouterConfig, field: str, fix: str
) -> None:
    with pytest.raises(ConfigRefused) as refused:
        settings_with(Settings(), config)
    assert str(refused.value).startswith(f"{field}: ")
    assert fix in str(refused.value)
    assert len(str(refused.value)) <= 256


def test_versions_decide_apply_repeat_or_ignore() -> None:
    assert judge(4, RouterConfig(version=5)) is Verdict.APPLY
    assert judge(5, RouterConfig(version=5)) is Verdict.REPEAT
    assert judge(5, RouterConfig(version=4)) is Verdict.STALE
    assert judge(0, RouterConfig(version=1)) is Verdict.APPLY


def test_acks_name_what_they_answer() -> None:
    ok = config_ack("shop-1", 5, "", 1.0)
    assert (ok.ref, ok.id, ok.ok, ok.error) == ("config", "5", True, "")
    refused = command_ack("shop-1", "c-9", "x" * 999, 1.0)
    assert (refused.ref, refused.id, refused.ok) == ("cmd", "c-9", False)
    assert len(refused.error) == 256


def test_a_device_id_leads_back_to_its_mac_only_on_this_router() -> None:
    macs = ["02:00:00:00:00:01", "a4:5e:60:11:22:33"]
    wanted = device_id(KEY, "a4:5e:60:11:22:33")
    assert find_device(KEY, wanted, macs) == "a4:5e:60:11:22:33"
    assert find_device(KEY, device_id(KEY, "02:00:00:00:00:09"), macs) is None
    assert find_device(b"another alliance", wanted, macs) is None


def test_the_allow_list_is_exactly_four_actions() -> None:
    assert {a.value for a in ALLOWED_ACTIONS} == {
        "revoke_device",
        "reload_config",
        "send_status",
        "coupons_spent",
    }
    assert CommandAction.UNKNOWN not in ALLOWED_ACTIONS


def test_a_redelivered_command_gets_the_same_answer_and_old_ones_are_forgotten() -> None:
    recent = RecentCommands(size=2)
    for n in range(3):
        recent.remember(command_ack("shop-1", f"c{n}", "", float(n)))
    assert recent.answer("c0") is None
    answer = recent.answer("c2")
    assert answer is not None and answer.at == 2.0


def test_a_pushed_config_sets_speed_limits_classes_and_trusted_device_ids() -> None:
    trusted = device_id(KEY, "02:00:00:00:00:09")
    config = RouterConfig(
        version=4,
        download_limit=8000,
        upload_limit=0,
        speed_classes=("campaign=20mbit/5mbit",),
        trusted_device_ids=(trusted,),
    )
    got = settings_with(Settings(), config)
    assert (got.download_limit, got.upload_limit) == (8000, 0)
    assert got.speed_limits["campaign"] == SpeedLimit(20_000, 5000)
    assert got.trusted_device_ids == (trusted,)


@pytest.mark.parametrize(
    ("config", "field", "complaint"),
    [
        (RouterConfig(version=1, download_limit=10), "download_limit", "out of range"),
        (RouterConfig(version=1, speed_classes=("vip",)), "speed_classes", "NAME=DOWNLOAD/UPLOAD"),
        (RouterConfig(version=1, trusted_device_ids=("aa:bb:cc:dd:ee:ff",)),
         "trusted_device_ids", "not a device id"),
    ],
)  # fmt: skip
def test_a_bad_pushed_limit_or_trusted_device_is_refused_naming_the_field(
    config: RouterConfig, field: str, complaint: str
) -> None:
    with pytest.raises(ConfigRefused, match=complaint) as caught:
        settings_with(Settings(), config)
    assert str(caught.value).startswith(f"{field}:")
