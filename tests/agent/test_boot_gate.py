"""The agent keeps on flash the captive table that the router loads at boot."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Network
from pathlib import Path

from agent.clients import Client
from agent.gate.gate import BOOT_GATE_FILE
from agent.ruleset import GateSpec, render_table
from agent.service import AgentService
from agent.settings import Settings
from agent.store import SessionStore
from tests.agent.test_events import fake_gate


def service_in(tmp_path: Path) -> AgentService:
    settings = Settings(state_dir=tmp_path / "tmpfs", flash_dir=tmp_path / "flash")
    store = SessionStore(settings.state_dir, settings.flash_dir)
    return AgentService(settings, fake_gate(settings), store, flush_conntrack=False)


async def test_start_keeps_the_table_without_clients_for_the_next_boot(tmp_path: Path) -> None:
    service = service_in(tmp_path)
    await service.start()
    await service.accept(Client.of("02:00:00:00:00:07", "192.168.1.7"), "1")
    boot = (tmp_path / "flash" / BOOT_GATE_FILE).read_text()
    assert boot == render_table(GateSpec.from_settings(service.settings))
    assert "02:00:00:00:00:07" not in boot  # captive for everyone until the agent restores
    await service.close()


async def test_a_new_walled_garden_reaches_the_boot_table_and_nothing_else_rewrites_it(
    tmp_path: Path,
) -> None:
    service = service_in(tmp_path)
    await service.start()
    path = tmp_path / "flash" / BOOT_GATE_FILE
    written = path.stat().st_mtime_ns
    await service.reconfigure(dataclasses.replace(service.settings, session_timeout=60))
    assert path.stat().st_mtime_ns == written  # flash is not written for nothing
    garden = (IPv4Network("203.0.113.7/32"),)
    await service.reconfigure(dataclasses.replace(service.settings, walled_garden_addresses=garden))
    assert "203.0.113.7" in path.read_text()
    await service.close()
