"""Grants written over netlink leave in the kernel exactly what the same nft script does."""

from __future__ import annotations

import dataclasses
import re
from ipaddress import IPv4Address

import pytest

from agent.access import SpeedClass, SpeedLimit
from agent.clients import Client
from agent.errors import GateError
from agent.gate.gate import Gate, GrantWriter, ScriptedGrants
from agent.gate.netlink_grants import NetlinkGrants
from agent.gate.nft import NftProcess
from agent.ruleset import (
    CLIENTS_SET,
    DOWNLOAD_LIMITS_SET,
    DOWNLOADS_SET,
    ONLINE_MACS_SET,
    TABLE,
    UPLOAD_LIMITS_SET,
    GateSpec,
    Grant,
)
from agent.settings import Settings
from lab import netns
from lab.pytest_plugin import LabFactory
from lab.topology import Lab

pytestmark = pytest.mark.lab

KEPT = Client("02:00:00:aa:00:01", IPv4Address("192.168.50.21"))
FOREVER = Client("02:00:00:aa:00:02", IPv4Address("192.168.50.22"))
REVOKED = Client("02:00:00:aa:00:03", IPv4Address("192.168.50.23"))
MOVED = Client("02:00:00:aa:00:04", IPv4Address("192.168.50.24"))
_EXPIRES = re.compile(r" expires [0-9hmsd]+")


@pytest.fixture
def lab(lab_factory: LabFactory) -> Lab:
    """A shop router; no phone is needed."""
    return lab_factory(phones=0, wan_services=False)


def kernel_sets_after(lab: Lab, grants: GrantWriter) -> str:
    """A fresh table, the same grants and revokes through `grants`; the sets as nft lists them."""
    with netns.entered(lab.router):
        Gate(NftProcess(), GateSpec.from_settings(Settings())).install()
        grants.grant(Grant(KEPT, 3600))
        grants.grant(Grant(FOREVER, None))
        grants.grant(Grant(REVOKED, 600))
        grants.revoke(REVOKED)
        grants.revoke(REVOKED)  # revoking an absent client is no error
        grants.grant(Grant(MOVED, 60))
        grants.grant(Grant(MOVED, 120), replace=True)
        grants.grant(Grant(KEPT, 3600))  # granting twice is no error either
    listed = [
        netns.run(lab.router, "nft", "list", "set", *TABLE.split(), name).stdout
        for name in (CLIENTS_SET, DOWNLOADS_SET, ONLINE_MACS_SET)
    ]
    return _EXPIRES.sub("", "".join(listed))


def test_netlink_grants_leave_the_elements_an_nft_script_leaves(lab: Lab) -> None:
    by_netlink = kernel_sets_after(lab, NetlinkGrants(TABLE))
    by_nft = kernel_sets_after(lab, ScriptedGrants(NftProcess()))
    assert by_netlink == by_nft
    assert "02:00:00:aa:00:01 . 192.168.50.21 counter packets 0 bytes 0 timeout 1h" in by_netlink
    assert "02:00:00:aa:00:02 . 192.168.50.22 counter packets 0 bytes 0" in by_netlink
    assert "192.168.50.24 counter packets 0 bytes 0 timeout 2m" in by_netlink
    assert "192.168.50.23" not in by_netlink


def test_a_grant_without_the_table_names_the_kernel_s_refusal(lab: Lab) -> None:
    with (
        netns.entered(lab.router),
        pytest.raises(GateError, match=r"grant 02:00:00:aa:00:01.*ENOENT"),
    ):
        NetlinkGrants(TABLE).grant(Grant(KEPT, 60))


LIMITED = Client("02:00:00:aa:00:05", IPv4Address("192.168.50.25"))
SLOW = SpeedLimit(download=4000, upload=1000)
DOWN_ONLY = SpeedLimit(download=2000)


def limit_sets_after(lab: Lab, grants: GrantWriter) -> str:
    """A table able to limit SLOW and DOWN_ONLY; limited grants and revokes through `grants`."""
    spec = GateSpec.from_settings(Settings(speed_classes=(SpeedClass("a", SLOW),)))
    spec = dataclasses.replace(spec, speed_limits=(SLOW, DOWN_ONLY))
    with netns.entered(lab.router):
        Gate(NftProcess(), spec).install()
        grants.grant(Grant(LIMITED, 600, SLOW))
        grants.grant(Grant(REVOKED, 600, DOWN_ONLY))
        grants.revoke(REVOKED, DOWN_ONLY)
        grants.revoke(REVOKED, DOWN_ONLY)
        grants.grant(Grant(MOVED, 60, DOWN_ONLY))
        grants.grant(Grant(MOVED, 120, DOWN_ONLY), replace=True)
    listed = [
        netns.run(lab.router, "nft", "list", "set", *TABLE.split(), name).stdout
        for name in (UPLOAD_LIMITS_SET, DOWNLOAD_LIMITS_SET)
    ]
    return _EXPIRES.sub("", "".join(listed))


def test_netlink_grants_put_limited_phones_in_the_limit_sets_as_an_nft_script_does(
    lab: Lab,
) -> None:
    by_netlink = limit_sets_after(lab, NetlinkGrants(TABLE))
    by_nft = limit_sets_after(lab, ScriptedGrants(NftProcess()))
    assert by_netlink == by_nft
    assert "192.168.50.25 limit rate over 125000 bytes/second burst 12500 bytes timeout 10m" in (
        by_netlink
    )
    assert "192.168.50.25 limit rate over 500000 bytes/second burst 50000 bytes timeout 10m" in (
        by_netlink
    )
    assert "192.168.50.24 limit rate over 250000 bytes/second burst 25000 bytes timeout 2m" in (
        by_netlink
    )
    assert "192.168.50.23" not in by_netlink
