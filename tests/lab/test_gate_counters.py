"""The counters the agent reads over netlink are the ones nft itself lists."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from agent.clients import Client
from agent.gate.gate import Gate, KernelClient
from agent.gate.nft import NftProcess
from agent.ruleset import TABLE, GateSpec
from agent.settings import Settings
from lab import netns
from lab.nft_listing import listed_clients
from lab.polling import wait_until
from lab.pytest_plugin import LabFactory
from lab.router import RouterAgent
from lab.topology import Lab
from tests.lab.portal_steps import accept_terms, reaches_wan

pytestmark = pytest.mark.lab


@pytest.fixture
def lab(lab_factory: LabFactory) -> Lab:
    """A shop with two phones."""
    return lab_factory(phones=2)


def listed_by_nft(lab: Lab) -> dict[Client, KernelClient]:
    """The clients and their counters as `nft -j list set` shows them."""
    result = {}
    for (mac, ip), (expires, up, down) in listed_clients(lab.router).items():
        client = Client(mac, IPv4Address(ip))
        result[client] = KernelClient(client, expires, up, down)
    return result


def read_over_netlink(lab: Lab) -> dict[Client, KernelClient]:
    with netns.entered(lab.router):
        return Gate(NftProcess(), GateSpec.from_settings(Settings())).read_clients()


def same_counters(lab: Lab) -> bool:
    ours, theirs = read_over_netlink(lab), listed_by_nft(lab)
    if ours.keys() != theirs.keys():
        return False
    for client, mine in ours.items():
        other = theirs[client]
        if (mine.bytes_up, mine.bytes_down) != (other.bytes_up, other.bytes_down):
            return False
        assert mine.expires_in is not None and other.expires_in is not None
        assert abs(mine.expires_in - other.expires_in) <= 1
    return True


def test_netlink_read_matches_nft_s_listing_after_real_traffic(
    lab: Lab, agent: RouterAgent
) -> None:
    for phone in lab.phones[:2]:
        assert accept_terms(phone).status == 303
        assert reaches_wan(phone)
    ours = read_over_netlink(lab)
    assert {c.mac for c in ours} == {p.mac for p in lab.phones[:2]}
    assert all(k.bytes_up > 0 and k.bytes_down > 0 for k in ours.values())
    assert wait_until(lambda: same_counters(lab), timeout=3)


def test_the_table_is_seen_only_while_it_exists(lab: Lab, agent: RouterAgent) -> None:
    with netns.entered(lab.router):
        gate = Gate(NftProcess(), GateSpec.from_settings(Settings()))
        assert gate.exists()
        netns.run(lab.router, "nft", "delete", "table", *TABLE.split())
        assert not gate.exists()
