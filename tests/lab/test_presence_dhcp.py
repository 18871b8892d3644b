"""A phone takes a DHCP lease with its host name (scapy); the cloud hears of it, never the name."""

from __future__ import annotations

import sys

import pytest

from agent.wire import EventKind, device_id
from lab import netns
from lab.router import LAB_ALLIANCE_KEY
from lab.topology import Lab
from tests.lab.test_link import CloudSide, MakeAgent, broker, cloud, start_linked, uplink, wait_for

pytestmark = pytest.mark.lab
__all__ = ["broker", "cloud", "uplink"]

HOSTNAME = "annas-iphone"


def test_a_dhcp_lease_is_reported_as_a_device_seen_without_its_host_name(
    lab: Lab, make_agent: MakeAgent, cloud: CloudSide
) -> None:
    leases = lab.workdir / "agent" / "leases"
    leases.parent.mkdir(parents=True, exist_ok=True)
    lab.popen(
        lab.router,
        "dnsmasq",
        "--no-daemon",
        "--port=0",
        "--bind-interfaces",
        "--interface=br-lan",
        "--dhcp-range=10.77.250.10,10.77.250.50,255.255.0.0,1h",
        f"--dhcp-leasefile={leases}",
        "--conf-file=/dev/null",
        "--dhcp-authoritative",
        "--pid-file=",
    )
    start_linked(make_agent, lab)
    phone = lab.phones[0]
    expected = device_id(LAB_ALLIANCE_KEY, phone.mac)
    # The phone has sent no IPv4 yet, so the router's (IPv4) neighbour table lacks it:
    # only the DHCP lease can reveal it.
    assert phone.mac not in netns.ip(lab.router, "-4", "neigh", "show").stdout
    got = netns.run(
        phone.ns,
        sys.executable,
        "-m",
        "lab.scapy_phone",
        "--mac",
        phone.mac,
        "--hostname",
        HOSTNAME,
        timeout=30,
    )
    assert '"ip": "10.77.250.' in got.stdout
    assert HOSTNAME in leases.read_text()

    def seen() -> bool:
        return any(
            e.kind is EventKind.DEVICE_SEEN and e.device_id == expected for e in cloud.events()
        )

    assert wait_for(seen, timeout=10), [e.kind for e in cloud.events()]
    for payload in cloud.payloads():
        assert HOSTNAME.encode() not in payload
        assert phone.mac.encode() not in payload
