"""A phone joins the shop Wi-Fi, is captive, accepts the terms and is online."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from agent.ruleset import PORTAL_MARK, PORTAL_ROUTE_TABLE, TABLE
from lab import addresses as A
from lab import netns
from lab.client import http_get, http_post_form
from lab.dns import dns_query
from lab.router import RouterAgent
from lab.topology import Lab
from tests.lab.portal_steps import (
    PORTAL,
    WAN_PAGE,
    accept_terms,
    csrf_of,
    open_portal,
    reaches_wan,
    tcp_outcome,
)

pytestmark = pytest.mark.lab

# Each OS's probe, with the User-Agent that OS really sends.
PROBES = [
    ("http://captive.apple.com/hotspot-detect.html", "CaptiveNetworkSupport-443.40.1 wispr"),
    (
        "http://connectivitycheck.gstatic.com/generate_204",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/60.0.3112.32 Safari/537.36",
    ),
    ("http://www.msftconnecttest.com/connecttest.txt", "Microsoft NCSI"),
    (
        "http://detectportal.firefox.com/canonical.html",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    ),
    (
        "http://detectportal.firefox.com/success.txt",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    ),
]
SUCCESS = {
    "captive.apple.com": (
        200,
        b"<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>",
    ),
    "connectivitycheck.gstatic.com": (204, b""),
    "www.msftconnecttest.com": (200, b"Microsoft Connect Test"),
    "detectportal.firefox.com/success.txt": (200, b"success\n"),
}


def _expected(url: str) -> tuple[int, bytes] | None:
    host_path = url.removeprefix("http://")
    for key, answer in SUCCESS.items():
        if host_path.startswith(key):
            return answer
    return None


@pytest.mark.parametrize(("url", "user_agent"), PROBES)
def test_every_os_probe_is_sent_to_the_portal_before_accepting(
    lab: Lab, agent: RouterAgent, url: str, user_agent: str
) -> None:
    phone = lab.phones[0]
    answer = http_get(phone.ns, url, headers={"User-Agent": user_agent})
    assert answer.status == 302
    assert answer.headers["Location"] == f"{PORTAL}/portal"


def test_a_captive_phone_gets_dns_and_the_portal_but_not_the_internet(
    lab: Lab, agent: RouterAgent
) -> None:
    phone = lab.phones[0]
    assert dns_query(phone.ns, A.WEB_HOST, A.WAN_DNS_IP) == [A.WEB_IP]
    page = http_get(phone.ns, WAN_PAGE)
    assert page.status == 302 and b"WAN OK" not in page.body
    assert tcp_outcome(phone, A.WEB_IP, 443) == "reset"
    assert tcp_outcome(phone, A.WEB_IP, 8080) == "dropped"
    assert tcp_outcome(phone, A.WAN_IP6, 80) == "dropped"  # IPv6 of a captive phone


def test_the_gate_takes_phones_to_the_portal_without_tracking_connections(
    lab: Lab, agent: RouterAgent
) -> None:
    """tproxy, not NAT: forwarded traffic pays for no conntrack lookup (docs/benchmarks.md §2)."""
    phone = lab.phones[0]
    assert http_get(phone.ns, WAN_PAGE).status == 302  # captive: answered by the portal
    accept_terms(phone)
    assert reaches_wan(phone)
    assert netns.run(lab.router, "conntrack", "-C").stdout.strip() == "0"
    rules = netns.run(lab.router, "ip", "rule").stdout
    assert f"fwmark {PORTAL_MARK:#x}/{PORTAL_MARK:#x} lookup {PORTAL_ROUTE_TABLE}" in rules


def test_walled_garden_is_reachable_before_accepting(lab: Lab, agent: RouterAgent) -> None:
    phone = lab.phones[0]
    page = http_get(phone.ns, f"http://{A.GARDEN_IP}/")
    assert page.status == 200
    assert tcp_outcome(phone, A.GARDEN_IP, 443) != "dropped"


def test_accepting_the_terms_opens_the_internet_and_probes_succeed(
    lab: Lab, agent: RouterAgent
) -> None:
    phone = lab.phones[0]
    answer = accept_terms(phone)
    assert answer.status == 303
    assert answer.headers["Location"].startswith("/portal/online")
    assert reaches_wan(phone)
    assert tcp_outcome(phone, A.WEB_IP, 443) == "open"
    for url, user_agent in PROBES:
        got = http_get(phone.ns, url, headers={"User-Agent": user_agent})
        expected = _expected(url)
        if expected is not None:
            assert (got.status, got.body) == expected, url
        else:
            assert got.status == 200, url


def test_a_probe_still_routed_to_the_portal_gets_the_success_answer_once_online(
    lab: Lab, agent: RouterAgent
) -> None:
    """An OS re-probing over its kept-alive, redirected connection must see success."""
    phone = lab.phones[0]
    accept_terms(phone)
    for url, _ in PROBES:
        host_path = url.removeprefix("http://")
        host, path = host_path.split("/", 1)
        got = http_get(phone.ns, f"{PORTAL}/{path}", headers={"Host": host})
        expected = _expected(url)
        assert got.status == (expected[0] if expected else 200), url
        if expected:
            assert got.body == expected[1], url


def test_the_online_page_shows_time_and_data_left(lab: Lab, agent: RouterAgent) -> None:
    phone = lab.phones[0]
    accept_terms(phone)
    page = http_get(phone.ns, f"{PORTAL}/portal/online?lang=en")
    assert page.status == 200
    assert b'id="online"' in page.body
    assert b'id="seconds-remaining"' in page.body
    assert b'data-seconds="3600"' in page.body or b'data-seconds="3599"' in page.body


def test_the_portal_speaks_chinese_to_a_chinese_phone_and_can_switch(
    lab: Lab, agent: RouterAgent
) -> None:
    phone = lab.phones[0]
    zh = http_get(phone.ns, f"{PORTAL}/portal", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert 'lang="zh' in zh.text
    en = http_get(
        phone.ns, f"{PORTAL}/portal?lang=en", headers={"Accept-Language": "zh-CN,zh;q=0.9"}
    )
    assert 'lang="en' in en.text


def test_terms_acceptance_is_recorded_with_its_version(lab: Lab, agent: RouterAgent) -> None:
    phone = lab.phones[0]
    accept_terms(phone)
    clients = agent.ctl_json("clients")["clients"]
    assert [(c["mac"], c["terms_version"]) for c in clients] == [(phone.mac, "2026-11")]


def test_outdated_terms_version_is_not_accepted(lab: Lab, agent: RouterAgent) -> None:
    phone = lab.phones[0]
    answer = accept_terms(phone, terms_version="2025-01")
    assert answer.status == 303 and answer.headers["Location"].startswith("/portal?")
    assert not reaches_wan(phone)


def test_a_forged_or_missing_csrf_token_is_refused(lab: Lab, agent: RouterAgent) -> None:
    phone = lab.phones[0]
    token = csrf_of(open_portal(phone))
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for fields in ({"terms_version": "2026-11"}, {"csrf": forged, "terms_version": "2026-11"}):
        answer = http_post_form(phone.ns, f"{PORTAL}/portal/accept", fields)
        assert answer.status == 403
    assert not reaches_wan(phone)


def test_a_token_served_to_another_phone_is_refused(lab: Lab, agent: RouterAgent) -> None:
    other = lab.add_phone()
    phone = lab.phones[0]
    stolen = csrf_of(open_portal(other))
    answer = http_post_form(
        phone.ns, f"{PORTAL}/portal/accept", {"csrf": stolen, "terms_version": "2026-11"}
    )
    assert answer.status == 403


def test_an_oversized_body_is_refused(lab: Lab, agent: RouterAgent) -> None:
    phone = lab.phones[0]
    answer = http_post_form(phone.ns, f"{PORTAL}/portal/accept", {"csrf": "x" * 100_000})
    assert answer.status == 413


def test_a_client_flooding_the_portal_is_rate_limited(lab: Lab, agent: RouterAgent) -> None:
    phone = lab.phones[0]
    statuses = [http_get(phone.ns, f"{PORTAL}/portal").status for _ in range(150)]
    assert 429 in statuses
    assert statuses[0] == 200


def test_a_client_without_a_neighbour_entry_sees_a_clear_page(lab: Lab, agent: RouterAgent) -> None:
    """The router itself has no ARP entry for its own address: the 'unknown client' page."""
    page = http_get(lab.router, f"{PORTAL}/portal")
    assert page.status == 503
    assert b'id="try-again"' in page.body


def test_rfc8908_api_says_captive_then_counts_down(lab: Lab, agent: RouterAgent) -> None:
    phone = lab.phones[0]
    before = http_get(phone.ns, f"{PORTAL}/api/captive")
    assert before.headers["Content-Type"] == "application/captive+json"
    assert json.loads(before.body) == {"captive": True, "user-portal-url": f"{PORTAL}/portal"}
    accept_terms(phone)
    first = json.loads(http_get(phone.ns, f"{PORTAL}/api/captive").body)
    time.sleep(1.2)
    second = json.loads(http_get(phone.ns, f"{PORTAL}/api/captive").body)
    assert first["captive"] is False and second["captive"] is False
    assert first["user-portal-url"] == f"{PORTAL}/portal"
    assert isinstance(first["seconds-remaining"], int)
    assert second["seconds-remaining"] < first["seconds-remaining"] <= 3600
    assert first["can-extend-session"] is False


@pytest.mark.parametrize("backend", ["netlink", "libnftables", "nft"])
def test_grant_and_revoke_work_through_each_nft_backend(
    lab: Lab, make_agent: Callable[..., RouterAgent], backend: str
) -> None:
    agent = make_agent(nft_backend=backend)
    assert agent.ctl_json("status")["status"]["nft_backend"] == backend
    phone = lab.phones[0]
    assert accept_terms(phone).status == 303
    assert reaches_wan(phone)
    # IPv4 carries the session; IPv6 is refused at once, so the phone falls back without a wait
    assert tcp_outcome(phone, A.WAN_IP6, 80) == "reset"
    assert agent.ctl("revoke", phone.mac).returncode == 0
    assert not reaches_wan(phone)
    assert tcp_outcome(phone, A.WAN_IP6, 80) == "dropped"  # captive again: silence
    assert agent.ctl("grant", phone.mac).returncode == 0
    assert reaches_wan(phone)


def test_an_accept_the_kernel_refuses_shows_a_page_to_try_again_not_a_crash(
    lab: Lab, make_agent: Callable[..., RouterAgent]
) -> None:
    agent = make_agent(counter_poll_interval="60")  # no poll puts the table back meanwhile
    phone = lab.phones[0]
    netns.run(lab.router, "nft", "delete", "table", *TABLE.split())
    answer = accept_terms(phone)
    assert answer.status == 503
    assert "tap the button again" in answer.text
    assert "could not let" in agent.logs()
