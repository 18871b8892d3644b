"""The service puts the gate's table back when it vanished, with every live session."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.clients import Client
from agent.errors import GateError
from agent.gate.gate import Gate
from agent.gate.nfnetlink import SetElement
from agent.ruleset import CLIENTS_SET, TABLE, GateSpec, Grant, clients_key
from agent.service import AgentService
from agent.settings import Settings
from agent.store import SessionStore

PHONE = Client.of("02:00:00:00:00:21", "192.168.1.21")


class KernelStandIn:
    """The kernel's view of the table: there or not, and the clients let through."""

    name = "stand-in"

    def __init__(self) -> None:
        self.table = False
        self.clients: dict[bytes, int] = {}  # key: bytes counted
        self.installs: list[str] = []

    def run(self, script: str) -> None:
        if script.startswith(f"table {TABLE} {{}}\ndelete table {TABLE}\n"):
            self.table = True
            self.installs.append(script)

    def grant(self, grant: Grant, *, replace: bool = False) -> None:
        self.clients[clients_key(grant.client)] = 0

    def revoke(self, client: Client) -> None:
        self.clients.pop(clients_key(client), None)

    def table_exists(self) -> bool:
        return self.table

    def elements(self, set_name: str) -> list[SetElement]:
        if not self.table:
            raise GateError(f"cannot read set {set_name}: ENOENT")
        if set_name != CLIENTS_SET:
            return []
        return [SetElement(key, None, count, 1) for key, count in self.clients.items()]

    def flush_ruleset(self) -> None:
        """What `nft flush ruleset` does to the agent's table."""
        self.table = False
        self.clients = {}


def service_on(kernel: KernelStandIn, tmp_path: Path) -> AgentService:
    settings = Settings(state_dir=tmp_path / "tmpfs", flash_dir=tmp_path / "flash")
    gate = Gate(kernel, GateSpec.from_settings(settings), sets=kernel, grants=kernel)
    store = SessionStore(settings.state_dir, settings.flash_dir)
    return AgentService(settings, gate, store, flush_conntrack=False)


async def test_a_vanished_table_is_put_back_with_every_live_session(tmp_path: Path) -> None:
    kernel = KernelStandIn()
    service = service_on(kernel, tmp_path)
    await service.start()
    await service.accept(PHONE, "1")
    kernel.clients[clients_key(PHONE)] = 5_000  # the phone used the internet
    await service.poll()
    kernel.flush_ruleset()  # the LAN is open to every phone now
    observed = await service.poll()
    assert kernel.table and len(kernel.installs) == 2
    assert PHONE.mac in kernel.installs[-1]  # back in the set with the table
    assert observed.ended == []
    kernel.clients[clients_key(PHONE)] = 6_000  # counted by the new element only
    await service.poll()
    session = service.session_of(PHONE)
    assert session is not None and session.bytes_used == 11_000  # nothing given or taken
    await service.close()


async def test_a_table_that_is_there_but_unreadable_is_an_error_not_a_reinstall(
    tmp_path: Path,
) -> None:
    kernel = KernelStandIn()
    service = service_on(kernel, tmp_path)
    await service.start()

    def unreadable(set_name: str) -> list[SetElement]:
        raise GateError("permission denied")

    kernel.elements = unreadable  # type: ignore[method-assign]
    with pytest.raises(GateError, match="permission denied"):
        await service.poll()
    assert len(kernel.installs) == 1
    await service.close()


async def test_a_refused_grant_fails_the_accept_but_the_next_poll_lets_the_phone_through(
    tmp_path: Path,
) -> None:
    kernel = KernelStandIn()
    service = service_on(kernel, tmp_path)
    await service.start()
    refusals = [GateError("the kernel refused to grant: ENOMEM")]
    granting = kernel.grant

    def refuse_once(grant: Grant, *, replace: bool = False) -> None:
        if refusals:
            raise refusals.pop()
        granting(grant, replace=replace)

    kernel.grant = refuse_once  # type: ignore[method-assign]
    with pytest.raises(GateError):
        await service.accept(PHONE, "1")
    assert clients_key(PHONE) not in kernel.clients
    assert service.session_of(PHONE) is not None  # the session stands, as recorded
    assert [v for v, _ in service.store.acceptances(PHONE.mac)] == ["1"]
    await service.poll()
    assert clients_key(PHONE) in kernel.clients
    await service.close()
