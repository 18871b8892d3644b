"""The till and staff phones pass without the portal, and are neither sessions nor visitors."""

from __future__ import annotations

import pytest

from lab import addresses as A
from lab.client import http_get
from lab.pytest_plugin import LabFactory
from lab.router import RouterAgent
from tests.lab.portal_steps import PORTAL, reaches_wan, tcp_outcome

pytestmark = pytest.mark.lab


def test_a_trusted_mac_passes_and_the_same_mac_with_another_ip_does_not(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(phones=3)
    till, staff_phone, shopper = lab.phones
    trusted = {"device": [till.mac, f"{staff_phone.mac} {staff_phone.ip}"]}
    agent = RouterAgent(lab, sections={"trusted": trusted})
    agent.start()
    try:
        assert reaches_wan(till) and reaches_wan(staff_phone)  # no portal on the way
        assert tcp_outcome(till, A.WEB_IP, 443) == "open"  # HTTPS too, not reset
        assert not reaches_wan(shopper)
        assert http_get(shopper.ns, f"http://{A.WEB_IP}/").headers["Location"] == (
            f"{PORTAL}/portal"
        )
        assert agent.ctl_json("clients")["clients"] == []  # trusted devices are no sessions

        moved = lab.change_ip(staff_phone, A.phone_ip(200))  # the staff phone, a new lease
        assert not reaches_wan(moved)
        assert http_get(moved.ns, f"http://{A.WEB_IP}/").status == 302  # to the portal

        till_moved = lab.change_ip(till, A.phone_ip(201))  # a trusted MAC: any address
        assert reaches_wan(till_moved)
    finally:
        agent.stop()
        print(agent.logs()[-3000:])
