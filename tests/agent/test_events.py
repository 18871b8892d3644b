"""What the router reports: wire Events with a device_id, and never the MAC itself."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from agent.clients import Client
from agent.errors import GateError
from agent.events import Emitter
from agent.gate.gate import Gate
from agent.gate.nfnetlink import SetElement
from agent.ruleset import GateSpec
from agent.service import AgentService
from agent.sessions import Ended, EndReason, Session
from agent.settings import Settings
from agent.store import SessionStore
from agent.wire import DEVICE_ID_HEX, Event, EventKind, device_id

KEY = bytes(range(32))
MAC = "a6:5e:60:11:22:33"  # locally administered: a private (random) address
IP = IPv4Address("192.168.1.50")


def mac_forms(mac: str) -> list[str]:
    octets = mac.split(":")
    return [mac, "".join(octets), "-".join(octets), mac.upper(), "".join(octets).upper()]


def assert_no_mac(events: list[Event], mac: str) -> None:
    for event in events:
        text = event.encode().decode()
        assert not any(form in text for form in mac_forms(mac)), text
        assert bytes.fromhex(mac.replace(":", "")) not in event.encode()


def session(started: float = 100.0) -> Session:
    return Session(Client(MAC, IP), started, "2026-11", None, bytes_carried=5000)


def test_every_event_names_the_device_by_its_hmac_and_flags_a_random_mac() -> None:
    sent: list[Event] = []
    emitter = Emitter("shop-1", KEY, sent.append)
    emitter.device_seen(MAC, 10.0)
    emitter.session_started(session(), 100.0)
    emitter.terms_accepted(session(), 100.0)
    emitter.portal_viewed(MAC, 99.0)
    emitter.session_ended(Ended(session(), EndReason.QUOTA, 160.5))
    emitter.device_left(MAC, 170.0, dwell=160.0)
    assert [e.kind for e in sent] == [
        EventKind.DEVICE_SEEN, EventKind.SESSION_STARTED, EventKind.TERMS_ACCEPTED,
        EventKind.PORTAL_VIEWED, EventKind.SESSION_ENDED, EventKind.DEVICE_LEFT,
    ]  # fmt: skip
    assert {e.device_id for e in sent} == {device_id(KEY, MAC)}
    assert all(len(e.device_id) == DEVICE_ID_HEX and e.randomized for e in sent)
    assert_no_mac(sent, MAC)
    ended = sent[4]
    assert (ended.session_bytes, ended.duration, ended.reason) == (5000, 60.5, "quota")
    assert sent[2].terms_version == "2026-11"
    assert sent[5].duration == 160.0


def test_a_burned_in_mac_is_not_flagged_random() -> None:
    sent: list[Event] = []
    Emitter("shop-1", KEY, sent.append).device_seen("a4:5e:60:11:22:33", 1.0)
    assert not sent[0].randomized


class FakeNft:
    """An nftables that accepts every script."""

    name = "fake"

    def __init__(self) -> None:
        self.scripts: list[str] = []

    def run(self, script: str) -> None:
        self.scripts.append(script)


class NoTableYet:
    """A kernel without the agent's table."""

    def table_exists(self) -> bool:
        return False

    def elements(self, set_name: str) -> list[SetElement]:
        raise GateError(f"no set {set_name}")


def fake_gate(settings: Settings, nft: FakeNft | None = None) -> Gate:
    """A gate that records its scripts and reads an empty kernel."""
    return Gate(nft or FakeNft(), GateSpec.from_settings(settings), NoTableYet())


@pytest.fixture
def service(tmp_path: Path) -> tuple[AgentService, list[Event]]:
    arp = tmp_path / "arp"
    arp.write_text(
        "IP address       HW type     Flags       HW address            Mask     Device\n"
        f"{IP}     0x1         0x2         {MAC}     *        br-lan\n"
    )
    settings = Settings()
    sent: list[Event] = []
    now = [1000.0]
    agent = AgentService(
        settings,
        fake_gate(settings),
        SessionStore(tmp_path / "tmpfs", tmp_path / "flash"),
        clock=lambda: now[0],
        arp_table=arp,
        flush_conntrack=False,
        events=Emitter("shop-1", KEY, sent.append),
    )
    return agent, sent


async def test_accepting_reports_a_session_and_the_terms_then_revoking_ends_it(
    service: tuple[AgentService, list[Event]],
) -> None:
    agent, sent = service
    await agent.start()
    client = await agent.identify(IP)
    await agent.accept(client, "2026-11")
    await agent.accept(client, "2026-11")  # tapped twice: one session
    await agent.revoke(MAC)
    kinds = [e.kind for e in sent]
    assert kinds == [
        EventKind.SESSION_STARTED, EventKind.TERMS_ACCEPTED, EventKind.TERMS_ACCEPTED,
        EventKind.SESSION_ENDED,
    ]  # fmt: skip
    assert sent[-1].reason == "revoked"
    assert_no_mac(sent, MAC)


async def test_a_staff_grant_starts_a_session_without_accepting_terms(
    service: tuple[AgentService, list[Event]],
) -> None:
    agent, sent = service
    await agent.start()
    await agent.grant_mac(MAC, IP)
    assert [e.kind for e in sent] == [EventKind.SESSION_STARTED]


async def test_a_portal_view_is_reported_for_a_known_device_only(
    service: tuple[AgentService, list[Event]],
) -> None:
    agent, sent = service
    await agent.portal_viewed(IP)
    await agent.portal_viewed(IPv4Address("192.168.1.99"))  # not in the neighbour table
    assert [e.kind for e in sent] == [EventKind.PORTAL_VIEWED]


def test_the_event_json_is_the_wire_contract() -> None:
    sent: list[Event] = []
    Emitter("shop-1", KEY, sent.append).portal_viewed(MAC, 5.0)
    body = json.loads(sent[0].encode())
    assert body["type"] == "event" and body["kind"] == "portal_viewed"
    assert "boot_id" not in body and "seq" not in body  # the spool stamps them
