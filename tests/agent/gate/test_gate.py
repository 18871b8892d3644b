"""The gate hands back the Client objects it granted, poll after poll, and forgets revoked ones."""

from __future__ import annotations

from ipaddress import IPv4Address

from agent.clients import Client
from agent.gate.gate import Gate
from agent.ruleset import GateSpec, Grant
from tests.agent.test_service import KernelStandIn

PHONE = Client("02:aa:bb:cc:dd:01", IPv4Address("10.77.0.11"))
TABLET = Client("02:aa:bb:cc:dd:02", IPv4Address("10.77.0.12"))


def gate_on(kernel: KernelStandIn) -> Gate:
    kernel.table = True
    spec = GateSpec(("br-lan",), IPv4Address("192.168.1.1"), 8080)
    return Gate(kernel, spec, sets=kernel, grants=kernel)


def test_a_poll_returns_the_very_client_objects_that_were_granted() -> None:
    kernel = KernelStandIn()
    gate = gate_on(kernel)
    gate.grant(Grant(PHONE, 60))
    for _ in range(2):
        (read,) = gate.read_clients()
        assert read is PHONE


def test_clients_installed_with_the_table_are_shared_too() -> None:
    kernel = KernelStandIn()
    gate = gate_on(kernel)
    gate.install([Grant(TABLET, 60)])
    kernel.grant(Grant(TABLET, 60))  # what the table's elements put in the kernel
    (read,) = gate.read_clients()
    assert read is TABLET


def test_a_client_the_gate_never_granted_is_read_from_its_key() -> None:
    kernel = KernelStandIn()
    kernel.grant(Grant(PHONE, 60))  # e.g. left in the kernel by the agent before a restart
    (read,) = gate_on(kernel).read_clients()
    assert read == PHONE and read is not PHONE


def test_revoked_and_expired_clients_are_not_kept() -> None:
    kernel = KernelStandIn()
    gate = gate_on(kernel)
    gate.grant(Grant(PHONE, 60))
    gate.grant(Grant(TABLET, 60))
    gate.revoke(PHONE)
    kernel.revoke(TABLET)  # its element timed out in the kernel
    assert gate.read_clients() == {}
    kernel.grant(Grant(TABLET, 60))
    (read,) = gate.read_clients()
    assert read == TABLET and read is not TABLET


def test_the_route_to_the_portal_is_put_in_place_before_each_table() -> None:
    kernel = KernelStandIn()
    order: list[str] = []
    spec = GateSpec(("br-lan",), IPv4Address("192.168.1.1"), 8080)
    gate = Gate(
        kernel,
        spec,
        sets=kernel,
        grants=kernel,
        route_to_portal=lambda lan: order.append(
            f"route for {list(lan)}, with {len(kernel.installs)} tables installed"
        ),
    )
    gate.install()
    gate.install([Grant(PHONE, 60)])  # put back after `nft flush ruleset`
    assert order == [
        "route for ['br-lan'], with 0 tables installed",
        "route for ['br-lan'], with 1 tables installed",
    ]
    assert len(kernel.installs) == 2
