"""The pushed config on flash: kept atomically, laid over the UCI settings on the next start."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Network
from pathlib import Path

from agent.link.local import (
    APPLIED_FILE,
    CLOUD_DOMAINS_FILE,
    cloud_domains_text,
    load_applied,
    save_applied,
    with_applied,
)
from agent.settings import Settings
from agent.wire import RouterConfig


def test_the_applied_config_survives_a_restart(tmp_path: Path) -> None:
    config = RouterConfig(version=12, site_name="Spa", walled_garden_addresses=("203.0.113.7/32",))
    save_applied(tmp_path, config)
    assert load_applied(tmp_path) == config
    settings = with_applied(Settings(), load_applied(tmp_path))
    assert settings.site_name == "Spa"
    assert settings.walled_garden_addresses == (IPv4Network("203.0.113.7/32"),)


def test_no_or_a_damaged_file_means_the_uci_settings_alone(tmp_path: Path) -> None:
    assert load_applied(tmp_path) is None
    (tmp_path / APPLIED_FILE).write_text("{not json")
    assert load_applied(tmp_path) is None
    assert with_applied(Settings(), None) == Settings()


def test_a_stored_config_that_no_longer_fits_is_left_out(tmp_path: Path) -> None:
    stored = RouterConfig(version=3, idle_timeout=1)  # clashes with a 2 s counter poll
    assert with_applied(Settings(), stored) == Settings()


def test_the_domains_file_holds_the_clouds_domains_only_while_the_cloud_sets_them() -> None:
    settings = Settings(walled_garden_domains=("pay.example", "login.example"))
    pushed = RouterConfig(version=2, walled_garden_domains=("pay.example", "login.example"))
    assert cloud_domains_text(settings, pushed) == "pay.example\nlogin.example\n"
    assert cloud_domains_text(settings, RouterConfig(version=3)) is None  # UCI's list holds
    assert cloud_domains_text(settings, None) is None
    emptied = RouterConfig(version=4, walled_garden_domains=())
    assert cloud_domains_text(Settings(), emptied) == ""  # the cloud wants none at all


async def test_a_pushed_config_is_applied_live_kept_on_flash_and_revokes_by_device_id(
    tmp_path: Path,
) -> None:
    from agent.clients import Client
    from agent.link.local import AgentRouter
    from agent.service import AgentService
    from agent.store import SessionStore
    from agent.wire import device_id
    from tests.agent.test_events import FakeNft, fake_gate

    settings = Settings(state_dir=tmp_path / "tmpfs", flash_dir=tmp_path / "flash")
    nft = FakeNft()
    service = AgentService(
        settings,
        fake_gate(settings, nft),
        SessionStore(settings.state_dir, settings.flash_dir),
        flush_conntrack=False,
    )
    shown: list[Settings] = []
    key = b"k" * 16
    runs = tmp_path / "dnsmasq-sync.runs"
    sync = tmp_path / "dnsmasq-sync"
    sync.write_text(f"#!/bin/sh\necho run >> {runs}\n")
    sync.chmod(0o755)
    router = AgentRouter(service, settings, None, key, on_settings=shown.append, dnsmasq_sync=sync)
    config = RouterConfig(
        version=2,
        session_timeout=600,
        site_name="Spa",
        walled_garden_addresses=("203.0.113.7/32",),
        walled_garden_domains=("pay.example",),
    )
    assert await router.apply_config(config) == ""
    assert router.config_version == 2 and load_applied(settings.flash_dir) == config
    assert "add element inet loopspot walled_garden { 203.0.113.7/32 }" in nft.scripts[-1]
    assert service.book.limits.session_timeout == 600
    assert shown[-1].site_name == "Spa"
    assert (settings.flash_dir / CLOUD_DOMAINS_FILE).read_text() == "pay.example\n"
    assert runs.read_text() == "run\n"  # dnsmasq-sync turns the file into dnsmasq's nftset

    again = dataclasses.replace(config, version=3, site_name="Spa & Sauna")
    assert await router.apply_config(again) == ""
    assert runs.read_text() == "run\n"  # the same domains: dnsmasq is left alone
    assert await router.apply_config(RouterConfig(version=4)) == ""
    assert not (settings.flash_dir / CLOUD_DOMAINS_FILE).exists()  # UCI's domains again
    assert runs.read_text() == "run\nrun\n"

    refused = await router.apply_config(RouterConfig(version=5, data_quota=5))
    assert refused.startswith("data_quota: ") and router.config_version == 4

    mac = "02:00:00:00:00:07"
    await service.accept(Client.of(mac, "192.168.1.7"), "1")
    assert await router.revoke_device(device_id(key, "02:00:00:00:00:08")) != ""
    assert await router.revoke_device(device_id(key, mac)) == ""
    assert len(service.book) == 0


async def test_reload_config_applies_live_fields_and_names_what_needs_a_restart(
    tmp_path: Path,
) -> None:
    from agent.link.local import AgentRouter
    from agent.service import AgentService
    from agent.store import SessionStore
    from tests.agent.test_events import fake_gate

    uci = tmp_path / "loopspot"
    dirs = f"\toption state_dir '{tmp_path}/tmpfs'\n\toption flash_dir '{tmp_path}/flash'\n"
    uci.write_text(f"config agent\n{dirs}")
    settings = Settings(state_dir=tmp_path / "tmpfs", flash_dir=tmp_path / "flash")
    service = AgentService(
        settings,
        fake_gate(settings),
        SessionStore(settings.state_dir, settings.flash_dir),
        flush_conntrack=False,
    )
    pushed = RouterConfig(version=4, site_name="From the cloud")
    router = AgentRouter(service, settings, pushed, b"k" * 16, config_file=uci)
    uci.write_text(
        f"config agent\n{dirs}\toption portal_port '8080'\n"
        "config session\n\toption timeout '2h'\n"
        "config portal\n\toption site_name 'From the file'\n"
    )
    note = await router.reload_config()
    assert note == "applied; restart to change portal_port"
    assert service.settings.session_timeout == 7200
    assert service.settings.site_name == "From the cloud"  # the cloud's config stays on top
    assert service.settings.portal_port == settings.portal_port
    uci.write_text("config agent\n\toption portal_port '80'\n")
    assert "port 80" in await router.reload_config()


async def test_a_pushed_portal_name_is_checked_and_sends_the_router_for_its_certificate(
    tmp_path: Path,
) -> None:
    from aiohttp import web

    from agent.link.local import AgentRouter
    from agent.portal.tls import PortalTls
    from agent.service import AgentService
    from agent.store import SessionStore
    from tests.agent.test_events import fake_gate

    settings = Settings(state_dir=tmp_path / "tmpfs", flash_dir=tmp_path / "flash")
    service = AgentService(
        settings,
        fake_gate(settings),
        SessionStore(settings.state_dir, settings.flash_dir),
        flush_conntrack=False,
    )
    tls = PortalTls(settings, web.AppRunner(web.Application()))
    router = AgentRouter(service, settings, None, b"k" * 16, portal_tls=tls)
    refused = await router.apply_config(RouterConfig(version=2, portal_name="Not A Name"))
    assert "portal_name" in refused and router.config_version == 0
    assert not router._portal_wake.is_set()
    pushed = RouterConfig(version=3, portal_name="r1.portal.example.com", site_name="Spa")
    assert await router.apply_config(pushed) == ""
    assert router._portal_wake.is_set(), "the certificate is asked for at once"
    router._portal_wake.clear()
    assert await router.apply_config(dataclasses.replace(pushed, version=4, site_name="X")) == ""
    assert not router._portal_wake.is_set(), "the same name: the twice-daily check will do"


async def test_a_portal_name_left_from_before_goes_when_no_certificate_is_served(
    tmp_path: Path,
) -> None:
    from aiohttp import web

    from agent.link.local import AgentRouter
    from agent.portal.tls import NAME_FILE, PortalTls
    from agent.service import AgentService
    from agent.store import SessionStore
    from tests.agent.test_events import fake_gate

    settings = Settings(state_dir=tmp_path / "tmpfs", flash_dir=tmp_path / "flash")
    service = AgentService(
        settings,
        fake_gate(settings),
        SessionStore(settings.state_dir, settings.flash_dir),
        flush_conntrack=False,
    )
    settings.flash_dir.mkdir(parents=True, exist_ok=True)
    (settings.flash_dir / NAME_FILE).write_text("r1.portal.example.com\n")  # port taken at start
    runs = tmp_path / "dnsmasq-sync.runs"
    sync = tmp_path / "dnsmasq-sync"
    sync.write_text(f"#!/bin/sh\necho run >> {runs}\n")
    sync.chmod(0o755)
    tls = PortalTls(settings, web.AppRunner(web.Application()))
    router = AgentRouter(service, settings, None, b"k" * 16, dnsmasq_sync=sync, portal_tls=tls)
    await router.publish_domains()
    assert not (settings.flash_dir / NAME_FILE).exists()
    assert runs.read_text() == "run\n", "dnsmasq-sync puts option 114 back on http"
