"""The lab itself, with no gate: phones reach the internet, DNS and probes answer truly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest

from agent.probes import PROBES, Probe
from lab import addresses as A
from lab import netns
from lab.client import connect, http_get, ping
from lab.dns import build_query, dns_query, parse_answer
from lab.errors import DnsError
from lab.pytest_plugin import LabFactory, build_lab, require_lab
from lab.topology import Lab, cleanup_stale

lab_test = pytest.mark.lab
TWO_HUNDRED_PHONES_BUDGET = 10.0


def our_namespaces(prefix: str) -> list[str]:
    return [n for n in netns.list_namespaces() if n.startswith(prefix)]


@lab_test
def test_phone_fetches_the_web_site(lab: Lab) -> None:
    status, _headers, body = http_get(lab.phones[0].ns, f"http://{A.WEB_IP}/")
    assert status == 200
    assert b"WAN OK" in body


@lab_test
def test_walled_garden_site_answers_on_its_own_address(lab: Lab) -> None:
    assert b"GARDEN OK" in http_get(lab.phones[0].ns, f"http://{A.GARDEN_IP}/").body


@lab_test
def test_wan_sees_the_phone_s_own_address_without_nat(lab: Lab) -> None:
    phone = lab.phones[0]
    assert http_get(phone.ns, f"http://{A.WEB_IP}/whoami").text.strip() == phone.ip


@lab_test
def test_phone_resolves_names_through_the_isp_dns(lab: Lab) -> None:
    ns = lab.phones[0].ns
    assert dns_query(ns, A.WEB_HOST, A.WAN_DNS_IP) == [A.WEB_IP]
    assert dns_query(ns, A.GARDEN_HOST, A.WAN_DNS_IP) == [A.GARDEN_IP]
    assert dns_query(ns, "no-such-shop.example", A.WAN_DNS_IP) == []
    assert http_get(ns, f"http://{A.WEB_HOST}/").status == 200


@lab_test
def test_programs_started_in_a_phone_use_the_isp_dns(lab: Lab) -> None:
    done = netns.run(lab.phones[0].ns, "curl", "-sS", "--max-time", "5", f"http://{A.WEB_HOST}/")
    assert "WAN OK" in done.stdout


@lab_test
@pytest.mark.parametrize("probe", PROBES, ids=lambda p: p.url)
def test_each_probe_url_gets_its_real_success_answer(lab: Lab, probe: Probe) -> None:
    ns = lab.phones[0].ns
    assert dns_query(ns, probe.host) == [A.WEB_IP]
    status, headers, body = http_get(ns, probe.url)
    assert (status, body) == (probe.success.status, probe.success.body)
    if status != 204:
        assert headers.get_content_type() == probe.success.content_type


@lab_test
def test_ipv6_ping_and_tcp_reach_the_wan(lab: Lab) -> None:
    phone = lab.phones[0]
    assert ping(phone.ns, A.WAN_IP6)
    assert ping(phone.ns, A.ROUTER_LAN_IP6)
    resp = http_get(phone.ns, f"http://[{A.WAN_IP6}]/whoami")
    assert resp.text.strip() == phone.ip6


@lab_test
def test_phone_has_an_ipv6_link_local_address_from_its_mac(lab: Lab) -> None:
    phone = lab.phones[0]
    shown = json.loads(netns.ip(phone.ns, "-j", "-6", "addr", "show", "dev", A.PHONE_IF).stdout)
    addresses = {a["local"] for a in shown[0]["addr_info"]}
    assert {phone.link_local, phone.ip6} <= addresses


@lab_test
def test_ipv4_ping_reaches_router_and_wan(lab: Lab) -> None:
    ns = lab.phones[0].ns
    assert ping(ns, A.ROUTER_LAN_IP)
    assert ping(ns, A.WAN_IP)
    assert not ping(ns, "198.51.100.99", timeout=0.3)


@lab_test
def test_https_port_accepts_then_closes_while_other_ports_refuse(lab: Lab) -> None:
    ns = lab.phones[0].ns
    with connect(ns, A.WEB_IP, 443) as sock:
        assert sock.recv(16) == b""
    with pytest.raises(ConnectionRefusedError):
        connect(ns, A.WEB_IP, 8443)


@lab_test
def test_stream_keeps_sending_until_the_client_leaves(lab: Lab) -> None:
    with connect(lab.phones[0].ns, A.WEB_IP, 80) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: lab\r\n\r\n")
        received = b""
        deadline = time.monotonic() + 5
        while len(received) < 8 * 1024 and time.monotonic() < deadline:
            received += sock.recv(65536)
    assert received.startswith(b"HTTP/1.1 200")
    assert len(received) >= 8 * 1024


@lab_test
def test_bytes_returns_exactly_n_bytes(lab: Lab) -> None:
    resp = http_get(lab.phones[0].ns, f"http://{A.WEB_IP}/bytes?n=1234567")
    assert resp.status == 200
    assert len(resp.body) == 1234567


@lab_test
def test_phones_get_the_macs_they_are_given(lab_factory: LabFactory) -> None:
    lab = lab_factory(phones=2, phone_macs=["02:AA:bb:cc:dd:01"], wan_services=False)
    first, second = lab.phones
    assert first.mac == "02:aa:bb:cc:dd:01"
    assert second.mac == A.phone_mac(1)
    for phone in lab.phones:
        shown = json.loads(netns.ip(phone.ns, "-j", "link", "show", "dev", A.PHONE_IF).stdout)
        assert shown[0]["address"] == phone.mac


@lab_test
def test_changed_mac_shows_on_the_router_and_phone_stays_online(lab: Lab) -> None:
    phone = lab.change_mac(lab.phones[0], "02:de:ad:be:ef:01")
    assert http_get(phone.ns, f"http://{A.WEB_IP}/").status == 200
    neigh = json.loads(netns.ip(lab.router, "-j", "neigh", "show", phone.ip).stdout)
    assert neigh[0]["lladdr"] == "02:de:ad:be:ef:01"


@lab_test
def test_a_multicast_mac_is_refused_before_anything_is_built() -> None:
    require_lab()
    before = our_namespaces(f"ls{os.getpid()}-")
    with pytest.raises(ValueError, match="multicast"):
        Lab.create(phones=1, phone_macs=["01:00:5e:00:00:01"])
    assert our_namespaces(f"ls{os.getpid()}-") == before


@lab_test
def test_two_hundred_phones_are_created_fast_and_each_reaches_the_wan(
    lab_factory: LabFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    lab = lab_factory(phones=200, wan_services=False)
    created = time.monotonic() - started
    lab.start_wan_services()
    seen = {p.ip: http_get(p.ns, f"http://{A.WEB_IP}/whoami").text.strip() for p in lab.phones}
    with capsys.disabled():
        print(f"\n[lab] 200 phones created in {created:.2f}s")
    assert created < TWO_HUNDRED_PHONES_BUDGET
    assert seen == {p.ip: p.ip for p in lab.phones}
    assert len({p.mac for p in lab.phones}) == 200


@lab_test
def test_close_removes_every_namespace_and_process() -> None:
    lab = build_lab(phones=3)
    names = lab.namespaces
    server_pids = netns.pids_in([lab.wan])[lab.wan]
    assert len(server_pids) == 2
    lab.close()
    lab.close()
    assert our_namespaces(lab.prefix) == []
    assert not any(netns.NETNS_ETC_DIR.joinpath(n).exists() for n in names)
    for pid in server_pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@lab_test
def test_namespaces_are_removed_when_the_test_body_raises() -> None:
    require_lab()
    prefix = ""
    with pytest.raises(RuntimeError, match="phone crashed"), Lab.create(phones=2) as lab:
        prefix = lab.prefix
        assert len(our_namespaces(prefix)) == 4
        raise RuntimeError("phone crashed")
    assert our_namespaces(prefix) == []


@lab_test
def test_cleanup_stale_removes_only_a_dead_run_s_namespaces() -> None:
    require_lab()
    dead = subprocess.Popen(["true"])
    dead.wait()
    dead_name, live_name = f"ls{dead.pid}-0r", f"ls{os.getpid()}-999w"
    netns.ip_batch([f"netns add {dead_name}", f"netns add {live_name}"])
    try:
        removed = cleanup_stale()
        assert dead_name in removed
        assert live_name not in removed
        assert dead_name not in netns.list_namespaces()
        assert live_name in netns.list_namespaces()
    finally:
        left = [n for n in (dead_name, live_name) if netns.exists(n)]
        netns.ip_batch([f"netns del {n}" for n in left])


@lab_test
def test_sockets_opened_in_a_phone_leave_the_thread_in_its_own_namespace(lab: Lab) -> None:
    own = os.readlink("/proc/thread-self/ns/net")
    with netns.socket_in(lab.phones[0].ns, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert os.readlink("/proc/thread-self/ns/net") == own
        sock.connect((A.WAN_DNS_IP, 53))
        assert sock.getsockname()[0] == lab.phones[0].ip


# Root-free checks of the lab's own parsers and plan.


def test_dns_answer_round_trip_through_the_parser() -> None:
    query = build_query("wan.lab.test", "A", qid=0x1234)
    answer = bytearray(query)
    answer[2:4] = (0x8180).to_bytes(2, "big")  # response, recursion available, no error
    answer[6:8] = (1).to_bytes(2, "big")
    answer += b"\xc0\x0c" + (1).to_bytes(2, "big") + (1).to_bytes(2, "big")
    answer += (60).to_bytes(4, "big") + (4).to_bytes(2, "big") + bytes([198, 51, 100, 10])
    assert parse_answer(bytes(answer), 0x1234) == ["198.51.100.10"]


@pytest.mark.parametrize(
    "data",
    [b"", b"\x12\x34\x81", b"\x12\x34\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00\x03wan"],
    ids=["empty", "short-header", "truncated-question"],
)
def test_hostile_dns_answers_raise_dns_error(data: bytes) -> None:
    with pytest.raises(DnsError):
        parse_answer(data, 0x1234)


def test_address_plan_gives_every_phone_distinct_addresses() -> None:
    count = 2000
    assert len({A.phone_ip(i) for i in range(count)}) == count
    assert len({A.phone_ip6(i) for i in range(count)}) == count
    assert len({A.phone_mac(i) for i in range(count)}) == count
    assert A.phone_ip(0) == "10.77.1.1"
    assert A.link_local("02:4c:53:00:00:05") == "fe80::4c:53ff:fe00:5"
