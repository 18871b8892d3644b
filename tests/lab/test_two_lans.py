"""Two LANs (the shop's and a guest VLAN), each captive, each with its own portal address."""

from __future__ import annotations

import json

import pytest

from lab import addresses as A
from lab.client import http_get
from lab.polling import wait_until
from lab.pytest_plugin import LabFactory
from lab.router import RouterAgent
from tests.lab.portal_steps import WAN_PAGE, accept_terms, is_authorized, reaches_wan, tcp_outcome

pytestmark = pytest.mark.lab


def portal_on(lan: int) -> str:
    return f"http://{A.router_lan_ip(lan)}:2050"


def test_a_phone_on_each_lan_is_sent_to_its_own_lan_s_portal_and_goes_online(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(phones=1, lans=2)
    shop = lab.phones[0]
    guest = lab.add_phone(lan=1)
    agent = RouterAgent(lab, lan=[f"{A.lan_bridge(1)}={A.router_lan_ip(1)}"])
    agent.start()
    try:
        for phone in (shop, guest):
            answer = http_get(phone.ns, WAN_PAGE)
            assert answer.status == 302
            assert answer.headers["Location"] == f"{portal_on(phone.lan)}/portal"
            api = json.loads(http_get(phone.ns, f"{portal_on(phone.lan)}/api/captive").body)
            assert api == {"captive": True, "user-portal-url": f"{portal_on(phone.lan)}/portal"}
            assert tcp_outcome(phone, A.WEB_IP, 443) == "reset"

        accept_terms(guest, portal=portal_on(1))
        assert is_authorized(agent, guest) and reaches_wan(guest)
        assert not reaches_wan(shop)  # still captive on its own LAN
        accept_terms(shop, portal=portal_on(0))
        assert reaches_wan(shop)
        online = http_get(guest.ns, "http://captive.apple.com/hotspot-detect.html")
        assert online.status == 200 and b"Success" in online.body
    finally:
        agent.stop()
        print(agent.logs()[-3000:])


def test_an_online_phone_on_one_lan_cannot_reach_a_phone_on_the_other(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(phones=1, lans=2)
    shop = lab.phones[0]
    guest = lab.add_phone(lan=1)
    agent = RouterAgent(lab, lan=[f"{A.lan_bridge(1)}={A.router_lan_ip(1)}"])
    agent.start()
    try:
        listener = lab.popen(shop.ns, "python3", "-m", "http.server", "8080", "-b", shop.ip)
        accept_terms(guest, portal=portal_on(1))
        accept_terms(shop, portal=portal_on(0))
        assert reaches_wan(guest) and reaches_wan(shop)
        assert wait_until(lambda: tcp_outcome(shop, shop.ip, 8080) == "open", timeout=5)
        assert tcp_outcome(guest, shop.ip, 8080, timeout=1.0) == "dropped"
        assert listener.poll() is None
    finally:
        agent.stop()
        print(agent.logs()[-3000:])
