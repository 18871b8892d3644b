"""Trusted devices are never visitors to the cloud, and the cloud trusts devices by id."""

from __future__ import annotations

import time

import pytest

from agent.wire import Ack, Channel, EventKind, RouterConfig, device_id
from lab import addresses as A
from lab.client import http_get
from lab.pytest_plugin import LabFactory
from lab.router import LAB_ALLIANCE_KEY, cloud_section
from lab.topology import Lab
from tests.lab.portal_steps import reaches_wan
from tests.lab.test_link import CloudSide, MakeAgent, broker, cloud, online, uplink, wait_for

pytestmark = pytest.mark.lab
__all__ = ["broker", "cloud", "uplink"]


@pytest.fixture
def lab(lab_factory: LabFactory) -> Lab:
    """A till, a staff phone the cloud will trust, and a shopper."""
    return lab_factory(phones=3)


def test_trusted_devices_are_not_reported_and_the_cloud_trusts_a_device_by_its_id(
    lab: Lab, make_agent: MakeAgent, cloud: CloudSide
) -> None:
    till, staff_phone, shopper = lab.phones
    workdir = lab.workdir / "agent"
    presence = {"interval": "1", "left_after": "10", "dhcp_leases": str(workdir / "leases")}
    make_agent(
        sections={
            "cloud": cloud_section(workdir),
            "presence": presence,
            "trusted": {"device": [till.mac]},
        }
    )
    wait_for(lambda: online(cloud), timeout=10)
    staff_id = device_id(LAB_ALLIANCE_KEY, staff_phone.mac)
    cloud.send(Channel.CONFIG, RouterConfig(version=3, trusted_device_ids=(staff_id,)), True)
    ack = wait_for(lambda: cloud.on(Channel.ACK, Ack), timeout=5)[-1]
    assert ack.ok, ack.error
    for phone in lab.phones:  # each says something, so the router's neighbour table has it
        http_get(phone.ns, f"http://{A.WEB_IP}/", timeout=2)
    assert wait_for(lambda: reaches_wan(staff_phone, timeout=0.5), timeout=8)  # within a look
    assert reaches_wan(till) and not reaches_wan(shopper)

    shopper_id = device_id(LAB_ALLIANCE_KEY, shopper.mac)
    seen = lambda: {e.device_id for e in cloud.events() if e.kind is EventKind.DEVICE_SEEN}  # noqa: E731
    assert wait_for(lambda: shopper_id in seen(), timeout=10)
    time.sleep(2)  # two more looks at the LAN
    assert device_id(LAB_ALLIANCE_KEY, till.mac) not in seen()
    assert staff_id not in seen()
