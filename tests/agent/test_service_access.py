"""The service grants each session at its class's speed limit and lets trusted devices be."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from agent.access import STAFF_CLASS, SpeedClass, SpeedLimit, TrustedDevice
from agent.clients import Client
from agent.gate.gate import Gate
from agent.gate.nfnetlink import SetElement
from agent.ruleset import CLIENTS_SET, TABLE, GateSpec, Grant, clients_key
from agent.service import AgentService
from agent.settings import Settings
from agent.store import SessionStore
from agent.wire import device_id

PHONE = Client.of("02:00:00:00:00:31", "192.168.1.31")
TILL_MAC = "02:00:00:00:00:99"
KEY = b"a" * 32


class Kernel:
    """The grants and revokes the gate wrote, and the table it installed."""

    name = "recorder"

    def __init__(self) -> None:
        self.grants: list[Grant] = []
        self.revokes: list[tuple[Client, SpeedLimit | None]] = []
        self.scripts: list[str] = []
        self.clients: dict[bytes, int] = {}

    def run(self, script: str) -> None:
        self.scripts.append(script)

    def grant(self, grant: Grant, *, replace: bool = False) -> None:
        self.grants.append(grant)
        self.clients[clients_key(grant.client)] = 0

    def revoke(self, client: Client, limit: SpeedLimit | None = None) -> None:
        self.revokes.append((client, limit))
        self.clients.pop(clients_key(client), None)

    def table_exists(self) -> bool:
        return bool(self.scripts)

    def elements(self, set_name: str) -> list[SetElement]:
        if set_name != CLIENTS_SET:
            return []
        return [SetElement(key, None, count, 1) for key, count in self.clients.items()]


async def service_with(kernel: Kernel, tmp_path: Path, **options: Any) -> AgentService:
    settings = Settings(state_dir=tmp_path / "tmpfs", flash_dir=tmp_path / "flash")
    settings = dataclasses.replace(settings, **options)
    gate = Gate(kernel, GateSpec.from_settings(settings), sets=kernel, grants=kernel)
    service = AgentService(
        settings, gate, SessionStore(settings.state_dir, settings.flash_dir), flush_conntrack=False
    )
    await service.start()
    return service


async def test_a_shopper_is_granted_at_the_default_limit(tmp_path: Path) -> None:
    kernel = Kernel()
    service = await service_with(kernel, tmp_path, download_limit=4000, upload_limit=1000)
    await service.accept(PHONE, "1")
    assert kernel.grants[-1].limit == SpeedLimit(4000, 1000)


async def test_staff_grants_are_unlimited_and_a_class_has_its_own_limit(tmp_path: Path) -> None:
    kernel = Kernel()
    vip = SpeedClass("campaign", SpeedLimit(20_000, 5000))
    service = await service_with(kernel, tmp_path, download_limit=4000, speed_classes=(vip,))
    await service.grant_mac(PHONE.mac, PHONE.ip)
    assert kernel.grants[-1].limit == SpeedLimit()
    assert service.book.of_mac(PHONE.mac).speed_class == STAFF_CLASS  # type: ignore[union-attr]
    other = Client.of("02:00:00:00:00:32", "192.168.1.32")
    await service.accept(other, "1", speed_class="campaign")
    assert kernel.grants[-1].limit == SpeedLimit(20_000, 5000)


async def test_a_limited_phone_is_revoked_with_the_limit_it_was_granted_at(tmp_path: Path) -> None:
    kernel = Kernel()
    service = await service_with(kernel, tmp_path, download_limit=4000)
    await service.accept(PHONE, "1")
    await service.revoke(PHONE.mac)
    assert kernel.revokes[-1] == (PHONE, SpeedLimit(4000, 0))


async def test_a_new_limit_reinstalls_the_table_with_every_session_at_it(tmp_path: Path) -> None:
    kernel = Kernel()
    service = await service_with(kernel, tmp_path)
    await service.accept(PHONE, "1")
    installs = len(kernel.scripts)
    await service.reconfigure(dataclasses.replace(service.settings, download_limit=2000))
    assert len(kernel.scripts) == installs + 1
    limited = kernel.scripts[-1].split("set download_limits {")[1].split("}")[0]
    assert "192.168.1.31 limit rate over 250000 bytes/second burst 25000 bytes timeout" in limited
    assert kernel.scripts[-1].startswith(f"table {TABLE} {{}}")


async def test_a_device_the_cloud_trusts_by_id_is_let_through_once_seen(tmp_path: Path) -> None:
    kernel = Kernel()
    till_id = device_id(KEY, TILL_MAC)
    service = await service_with(kernel, tmp_path, trusted_device_ids=(till_id,))
    await service.trust_seen([PHONE.mac, TILL_MAC], lambda mac: device_id(KEY, mac))
    assert service.is_trusted(TILL_MAC) and not service.is_trusted(PHONE.mac)
    assert kernel.scripts[-1] == f"add element {TABLE} trusted_macs {{ {TILL_MAC} }}\n"
    assert TrustedDevice(TILL_MAC) in service.gate.spec.trusted  # kept on the next install


async def test_a_trusted_device_s_portal_view_is_not_reported(tmp_path: Path) -> None:
    kernel = Kernel()
    service = await service_with(kernel, tmp_path, trusted_devices=(TrustedDevice(PHONE.mac),))
    seen: list[str] = []

    class Events:
        def portal_viewed(self, mac: str, at: float) -> None:
            seen.append(mac)

    service.events = Events()  # type: ignore[assignment]

    async def identify(ip: object) -> Client:
        return PHONE

    service.identify = identify  # type: ignore[method-assign]
    await service.portal_viewed(PHONE.ip)
    assert seen == []
