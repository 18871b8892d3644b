"""Sessions end by time, idleness, data quota or staff, and survive agent and router restarts."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from lab import addresses as A
from lab.client import connect, http_get
from lab.polling import wait_until
from lab.router import RouterAgent
from lab.topology import Lab
from tests.lab.portal_steps import PORTAL, accept_terms, is_authorized, reaches_wan

pytestmark = pytest.mark.lab

MakeAgent = Callable[..., RouterAgent]


def download(phone_ns: str, n: int) -> int:
    """Bytes of a wan download the phone actually received."""
    page = http_get(phone_ns, f"http://{A.WEB_IP}/bytes?n={n}", timeout=10)
    return len(page.body) if page.status == 200 else 0


def test_phone_is_captive_again_when_the_session_time_is_up(
    lab: Lab, make_agent: MakeAgent
) -> None:
    make_agent(timeout="3s", idle_timeout="0")
    phone = lab.phones[0]
    accept_terms(phone)
    assert reaches_wan(phone)
    assert wait_until(lambda: not reaches_wan(phone, timeout=0.5), timeout=8)
    page = http_get(phone.ns, f"http://{A.WEB_IP}/")
    assert page.status == 302  # back on the portal


def test_phone_is_captive_again_after_the_idle_timeout(lab: Lab, make_agent: MakeAgent) -> None:
    agent = make_agent(timeout="1h", idle_timeout="2s")
    phone = lab.phones[0]
    accept_terms(phone)
    assert reaches_wan(phone)
    assert wait_until(lambda: not is_authorized(agent, phone), timeout=8)
    assert not reaches_wan(phone)


def test_traffic_keeps_an_idle_timeout_from_ending_the_session(
    lab: Lab, make_agent: MakeAgent
) -> None:
    agent = make_agent(timeout="1h", idle_timeout="3s")
    phone = lab.phones[0]
    accept_terms(phone)
    for _ in range(8):  # 4 s of steady traffic, longer than the idle timeout
        assert reaches_wan(phone)
        time.sleep(0.5)
    assert is_authorized(agent, phone)


def test_phone_is_captive_again_when_its_data_quota_is_used(
    lab: Lab, make_agent: MakeAgent
) -> None:
    agent = make_agent(data_quota="1M")
    phone = lab.phones[0]
    accept_terms(phone)
    before = json.loads(http_get(phone.ns, f"{PORTAL}/api/captive").body)
    assert before["bytes-remaining"] == 1024 * 1024
    assert download(phone.ns, 300_000) == 300_000
    assert wait_until(
        lambda: (
            json.loads(http_get(phone.ns, f"{PORTAL}/api/captive").body).get("bytes-remaining", 0)
            < 1024 * 1024 - 300_000
        ),
        timeout=5,
    )
    download(phone.ns, 900_000)
    assert wait_until(lambda: not is_authorized(agent, phone), timeout=5)
    assert not reaches_wan(phone)


def test_revoke_cuts_an_open_tcp_connection(lab: Lab, agent: RouterAgent) -> None:
    phone = lab.phones[0]
    accept_terms(phone)
    stream = connect(phone.ns, A.WEB_IP, 80, timeout=3)
    stream.sendall(f"GET /stream HTTP/1.1\r\nHost: {A.WEB_IP}\r\n\r\n".encode())
    assert stream.recv(4096)  # the stream is flowing
    assert agent.ctl("revoke", phone.mac).returncode == 0
    deadline = time.monotonic() + 5
    cut = False
    while time.monotonic() < deadline:
        try:
            if not stream.recv(65536):
                cut = True
                break
        except (ConnectionResetError, TimeoutError, OSError):
            cut = True
            break
    stream.close()
    assert cut, "the open connection kept flowing after revoke"
    assert not reaches_wan(phone)


def test_kill_9_and_restart_keeps_the_phone_online_with_time_and_bytes(
    lab: Lab, agent: RouterAgent
) -> None:
    phone = lab.phones[0]
    accept_terms(phone)
    assert download(phone.ns, 200_000) == 200_000
    time.sleep(1.2)  # one counter poll
    before = agent.ctl_json("clients")["clients"][0]
    agent.kill()
    assert reaches_wan(phone), "phones must stay online while the agent is down"
    agent.start()
    after = agent.ctl_json("clients")["clients"][0]
    assert after["mac"] == phone.mac
    assert after["bytes_used"] >= before["bytes_used"] >= 200_000
    assert (
        before["seconds_remaining"] - 10
        <= after["seconds_remaining"]
        <= before["seconds_remaining"]
    )
    assert reaches_wan(phone)


def test_a_router_reboot_restores_sessions_from_flash_without_extra_time(
    lab: Lab, agent: RouterAgent
) -> None:
    phone = lab.phones[0]
    accept_terms(phone)
    time.sleep(1.2)
    before = agent.ctl_json("clients")["clients"][0]
    agent.stop()  # a clean stop snapshots to flash
    # The reboot: the kernel forgets the table and tmpfs is empty.
    agent.nft("delete", "table", "inet", "loopspot")
    for stale in (agent.workdir / "tmpfs").glob("sessions.db*"):
        stale.unlink()
    time.sleep(1.0)
    agent.start()
    after = agent.ctl_json("clients")["clients"][0]
    assert after["mac"] == phone.mac
    assert after["seconds_remaining"] <= before["seconds_remaining"] - 1
    assert reaches_wan(phone)


def test_a_phone_spoofing_an_authorized_mac_with_another_ip_stays_captive(
    lab: Lab, agent: RouterAgent
) -> None:
    phone = lab.phones[0]
    accept_terms(phone)
    spoofer = lab.change_mac(lab.add_phone(), phone.mac)
    assert spoofer.ip != phone.ip
    assert reaches_wan(phone)
    assert not reaches_wan(spoofer)


def test_a_phone_in_the_kernel_set_without_a_record_is_adopted_at_start(
    lab: Lab, agent: RouterAgent
) -> None:
    phone = lab.phones[0]
    agent.kill()
    agent.nft(
        "add",
        "element",
        "inet",
        "loopspot",
        "clients",
        f"{{ {phone.mac} . {phone.ip} timeout 120s }}",
    )
    agent.nft("add", "element", "inet", "loopspot", "downloads", f"{{ {phone.ip} timeout 120s }}")
    agent.start()
    clients = agent.ctl_json("clients")["clients"]
    assert [c["mac"] for c in clients] == [phone.mac]
    assert 100 <= clients[0]["seconds_remaining"] <= 120
    assert reaches_wan(phone)


def test_a_session_that_expired_while_the_agent_was_down_ends_at_start(
    lab: Lab, make_agent: MakeAgent
) -> None:
    agent = make_agent(timeout="2s", idle_timeout="0")
    phone = lab.phones[0]
    accept_terms(phone)
    agent.kill()
    time.sleep(2.5)  # the session's time runs out while nobody watches
    agent.start()
    assert agent.ctl_json("clients")["clients"] == []
    assert not reaches_wan(phone)
