"""The router reports to the cloud over MQTT and takes its config and commands.

A real Mosquitto runs on loopback; the router reaches it only through its wan link (the
lab's uplink relay at 198.51.100.2:1883). The cloud side is a bare paho subscriber that
answers each event batch with a Receipt, as the cloud's ingest does once it has stored it.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.wire import (
    Ack,
    Channel,
    Command,
    CommandAction,
    Event,
    EventBatch,
    EventKind,
    Message,
    Receipt,
    RouterConfig,
    RouterState,
    SeqRange,
    Status,
    Topic,
    decode,
    device_id,
)
from lab import addresses as A
from lab.broker import Broker
from lab.client import connect, http_get
from lab.errors import LabError
from lab.polling import wait_until
from lab.router import LAB_ALLIANCE_KEY, LAB_ROUTER_ID, MQTT_PORT, RouterAgent, cloud_section
from lab.topology import Lab
from lab.uplink import start_uplink
from tests.lab.portal_steps import accept_terms, reaches_wan

pytestmark = pytest.mark.lab

M = TypeVar("M", bound=Message)
MakeAgent = Callable[..., RouterAgent]


def wait_for(condition: Callable[[], Any], timeout: float, step: float = 0.05) -> Any:
    """Poll `condition` until it returns something true, or fail after `timeout` seconds."""
    found = wait_until(condition, timeout, step)
    assert found, f"not within {timeout}s"
    return found


class CloudSide:
    """What the cloud sees of the lab router: every message under its prefix, as received.

    While `receipts` is true it answers each event batch with a Receipt naming its events.
    """

    def __init__(self, port: int, tls: tuple[Path, Path, Path] | None = None) -> None:
        self.received: list[tuple[str, bytes, bool]] = []
        self.receipts = True
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4()}")
        self.subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_disconnect = lambda *_: self.subscribed.clear()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        if tls is not None:
            ca, cert, key = tls
            self.client.tls_set(str(ca), str(cert), str(key))
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe(f"loopspot/v1/{LAB_ROUTER_ID}/up/#", qos=1)

    def _on_message(self, client: paho.Client, _userdata: Any, message: Any) -> None:
        with self._lock:
            self.received.append((message.topic, bytes(message.payload), bool(message.retain)))
        if self.receipts and message.topic == str(Topic(LAB_ROUTER_ID, Channel.EVENTS)):
            events = decode(bytes(message.payload), EventBatch).events
            ranges = tuple(SeqRange(e.boot_id, e.seq, e.seq) for e in events)
            receipt = Receipt(router_id=LAB_ROUTER_ID, ranges=ranges)
            client.publish(str(Topic(LAB_ROUTER_ID, Channel.RECEIPT)), receipt.encode(), 1)

    def on(self, channel: Channel, kind: type[M]) -> list[M]:
        """Every message received on `channel`, decoded."""
        topic = str(Topic(LAB_ROUTER_ID, channel))
        with self._lock:
            payloads = [p for t, p, _ in self.received if t == topic and p]
        return [decode(p, kind) for p in payloads]

    def events(self) -> list[Event]:
        """Every event received, in arrival order (repeats kept, to be counted)."""
        return [e for batch in self.on(Channel.EVENTS, EventBatch) for e in batch.events]

    def payloads(self) -> list[bytes]:
        """Every payload received."""
        with self._lock:
            return [p for _, p, _ in self.received]

    def send(self, channel: Channel, message: Message | bytes, retain: bool = False) -> None:
        """Publish to the router, as the cloud does."""
        payload = message if isinstance(message, bytes) else message.encode()
        info = self.client.publish(str(Topic(LAB_ROUTER_ID, channel)), payload, 1, retain)
        info.wait_for_publish(5)

    def close(self) -> None:
        """Disconnect."""
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A throwaway Mosquitto on loopback."""
    with Broker() as running:
        yield running


class Uplink:
    """The router's way to the broker: 198.51.100.2:1883 on the wan, relayed to loopback."""

    def __init__(self, lab: Lab, broker: Broker) -> None:
        self.lab = lab
        self.broker = broker
        self.relay: subprocess.Popen[bytes] | None = None

    def _listening(self) -> bool:
        try:
            connect(self.lab.router, A.WAN_IP, MQTT_PORT, timeout=0.5).close()
        except OSError:
            return False
        return True

    def start(self) -> None:
        """Relay the broker to the wan address; return once it listens."""
        self.relay = start_uplink(self.lab.wan, {MQTT_PORT: self.broker.port}, A.WAN_IP)
        wait_for(self._listening, timeout=10)

    def stop(self) -> None:
        """Cut the router off the broker (its connections drop)."""
        if self.relay is not None:
            self.relay.terminate()
            self.relay.wait(5)
            self.relay = None


@pytest.fixture
def uplink(lab: Lab, broker: Broker) -> Iterator[Uplink]:
    """The broker, reachable from the router at 198.51.100.2:1883 over its wan link."""
    relay = Uplink(lab, broker)
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


@pytest.fixture
def cloud(broker: Broker, uplink: Uplink) -> Iterator[CloudSide]:
    """The cloud's view, subscribed before the router connects."""
    side = CloudSide(broker.port)
    wait_for(side.subscribed.is_set, timeout=5)
    yield side
    side.close()


def start_linked(make_agent: MakeAgent, lab: Lab, **cloud_options: str) -> RouterAgent:
    """The agent with the cloud section on (and presence looking every second)."""
    workdir = lab.workdir / "agent"
    presence = {"interval": "1", "left_after": "10", "dhcp_leases": str(workdir / "leases")}
    sections = {"cloud": cloud_section(workdir, **cloud_options), "presence": presence}
    agent: RouterAgent = make_agent(sections=sections)
    return agent


def online(cloud: CloudSide, boot_id: str = "") -> Status | None:
    """The last status received, if it says online (for `boot_id`, when given)."""
    statuses = cloud.on(Channel.STATUS, Status)
    last = statuses[-1] if statuses else None
    if last is None or last.state is not RouterState.ONLINE:
        return None
    return last if not boot_id or last.boot_id == boot_id else None


def of_kind(cloud: CloudSide, *kinds: EventKind) -> list[Event]:
    """The events received of these kinds."""
    return [e for e in cloud.events() if e.kind in kinds]


def test_router_is_online_on_connect_and_offline_by_last_will_after_kill_9(
    lab: Lab, make_agent: MakeAgent, cloud: CloudSide, broker: Broker
) -> None:
    agent = start_linked(make_agent, lab, keepalive="5")
    status = wait_for(lambda: online(cloud), timeout=10)
    assert status.router_id == LAB_ROUTER_ID and status.boot_id and status.agent_version
    local = agent.ctl_json("status")["status"]
    assert (local["cloud"], local["boot_id"], local["spool_depth"]) == (
        "connected",
        status.boot_id,
        0,
    )
    late = CloudSide(broker.port)  # a subscriber arriving later still gets it: retained
    try:
        assert wait_for(lambda: late.on(Channel.STATUS, Status), timeout=5)[-1].state is (
            RouterState.ONLINE
        )
    finally:
        late.close()
    killed_at = time.monotonic()
    agent.kill()
    last = wait_for(
        lambda: [s for s in cloud.on(Channel.STATUS, Status) if s.state is RouterState.OFFLINE],
        timeout=1.5 * 5 + 2,
    )[-1]
    assert last.boot_id == status.boot_id
    assert time.monotonic() - killed_at < 1.5 * 5 + 2


def test_a_linked_agent_serving_phones_loads_no_library_it_does_not_need(
    lab: Lab, make_agent: MakeAgent, cloud: CloudSide
) -> None:
    agent = start_linked(make_agent, lab)
    wait_for(lambda: online(cloud), timeout=10)
    assert accept_terms(lab.phones[0]).status == 303  # a grant, over netlink
    assert reaches_wan(lab.phones[0])
    assert agent.process is not None
    mapped = Path(f"/proc/{agent.process.pid}/maps").read_text()
    # libnftables (grants go over netlink), cryptography (renewal runs as its own
    # process), SQLAlchemy (the cloud's): megabytes a router's agent never needs
    for library in ("libnftables", "cryptography", "sqlalchemy"):
        assert library not in mapped, f"the agent loaded {library}"


def test_accepting_the_terms_reports_session_and_terms_without_the_mac(
    lab: Lab, make_agent: MakeAgent, cloud: CloudSide
) -> None:
    start_linked(make_agent, lab)
    wait_for(lambda: online(cloud), timeout=10)
    phone = lab.phones[0]
    accept_terms(phone)
    started, accepted = wait_for(
        lambda: (
            (of_kind(cloud, EventKind.SESSION_STARTED) and of_kind(cloud, EventKind.TERMS_ACCEPTED))
            and (
                of_kind(cloud, EventKind.SESSION_STARTED)[0],
                of_kind(cloud, EventKind.TERMS_ACCEPTED)[0],
            )
        ),
        timeout=10,
    )
    phone_id = device_id(LAB_ALLIANCE_KEY, phone.mac)
    assert started.device_id == accepted.device_id == phone_id
    assert started.randomized  # the lab's MACs are locally administered
    assert accepted.terms_version == "2026-11"
    assert started.router_id == LAB_ROUTER_ID and started.boot_id and started.seq >= 1
    octets = phone.mac.split(":")
    forms = {phone.mac, "".join(octets), "-".join(octets)}
    for payload in cloud.payloads():
        text = payload.decode().lower()
        assert not any(form in text for form in forms), "a raw MAC left the router"
        assert bytes(int(o, 16) for o in octets) not in payload


def back_with_the_cloud_listening(broker: Broker, uplink: Uplink, cloud: CloudSide) -> None:
    """Restart the broker and let the router reach it only once the cloud has subscribed again
    (the lab broker keeps no sessions across a restart)."""
    uplink.stop()
    broker.start()
    wait_for(cloud.subscribed.is_set, timeout=10)
    uplink.start()


def test_events_made_while_the_broker_is_down_arrive_once_it_is_back(
    lab: Lab, make_agent: MakeAgent, cloud: CloudSide, broker: Broker, uplink: Uplink
) -> None:
    agent = start_linked(make_agent, lab)
    wait_for(lambda: online(cloud), timeout=10)
    broker.stop()
    phone = lab.phones[0]
    accept_terms(phone)
    assert agent.ctl("revoke", phone.mac).returncode == 0
    back_with_the_cloud_listening(broker, uplink, cloud)
    wanted = {EventKind.SESSION_STARTED, EventKind.TERMS_ACCEPTED, EventKind.SESSION_ENDED}
    wait_for(lambda: wanted <= {e.kind for e in cloud.events()}, timeout=45, step=0.2)
    time.sleep(1.0)  # anything doubled would arrive right behind
    keys = [(e.boot_id, e.seq) for e in cloud.events()]
    assert len(keys) == len(set(keys)), "an event arrived twice"
    ended = of_kind(cloud, EventKind.SESSION_ENDED)[0]
    assert ended.reason == "revoked" and ended.duration >= 0


def test_a_pushed_walled_garden_address_is_applied_and_acked_within_2s(
    lab: Lab, make_agent: MakeAgent, cloud: CloudSide
) -> None:
    agent = start_linked(make_agent, lab)
    wait_for(lambda: online(cloud), timeout=10)
    phone = lab.phones[0]
    assert http_get(phone.ns, f"http://{A.WEB_IP}/").status == 302  # captive
    pushed = time.monotonic()
    config = RouterConfig(version=7, walled_garden_addresses=(f"{A.WEB_IP}/32",))
    cloud.send(Channel.CONFIG, config, retain=True)
    ack = wait_for(lambda: cloud.on(Channel.ACK, Ack), timeout=2)[-1]
    assert time.monotonic() - pushed < 2
    assert (ack.ref, ack.id, ack.ok) == ("config", "7", True)
    assert reaches_wan(phone), "the pushed walled-garden address is not reachable"
    assert wait_for(lambda: online(cloud) and online(cloud).config_version == 7, timeout=5)  # type: ignore[union-attr]
    assert (agent.workdir / "flash" / "cloud-config.json").exists()

    cloud.send(Channel.CONFIG, RouterConfig(version=8, walled_garden_addresses=("0.0.0.0/4",)))
    refused = wait_for(lambda: [a for a in cloud.on(Channel.ACK, Ack) if a.id == "8"], timeout=2)
    assert not refused[0].ok and "walled_garden_addresses" in refused[0].error
    assert reaches_wan(phone), "a refused config changed something"


def test_the_cloud_revokes_a_device_by_its_device_id(
    lab: Lab, make_agent: MakeAgent, cloud: CloudSide
) -> None:
    start_linked(make_agent, lab)
    wait_for(lambda: online(cloud), timeout=10)
    phone = lab.phones[0]
    accept_terms(phone)
    assert reaches_wan(phone)
    revoke = Command(
        id="cmd-1",
        action=CommandAction.REVOKE_DEVICE,
        device_id=device_id(LAB_ALLIANCE_KEY, phone.mac),
    )
    cloud.send(Channel.COMMAND, revoke)
    ack = wait_for(lambda: [a for a in cloud.on(Channel.ACK, Ack) if a.id == "cmd-1"], timeout=5)[0]
    assert ack.ref == "cmd" and ack.ok, ack.error
    assert not reaches_wan(phone)
    shell = b'{"v":1,"type":"command","id":"cmd-2","action":"shell","device_id":""}'
    cloud.send(Channel.COMMAND, shell)
    ack = wait_for(lambda: [a for a in cloud.on(Channel.ACK, Ack) if a.id == "cmd-2"], timeout=5)[0]
    assert not ack.ok and ack.error == "unknown action"


def test_a_full_spool_drops_the_oldest_events_and_reports_how_many(
    lab: Lab, make_agent: MakeAgent, cloud: CloudSide, broker: Broker, uplink: Uplink
) -> None:
    agent = start_linked(make_agent, lab, spool_max_events="10")
    first = wait_for(lambda: online(cloud), timeout=10)
    broker.stop()
    for n in range(12):  # 24 events for a spool of 10
        mac, ip = f"02:00:00:00:01:{n:02x}", f"10.77.200.{n + 1}"
        if agent.ctl("grant", mac, "--ip", ip).returncode or agent.ctl("revoke", mac).returncode:
            raise LabError(f"staff grant/revoke failed:\n{agent.logs()[-2000:]}")
    back_with_the_cloud_listening(broker, uplink, cloud)
    reports: list[Event] = wait_for(
        lambda: of_kind(cloud, EventKind.EVENTS_DROPPED), timeout=45, step=0.2
    )
    dropped = sum(r.count for r in reports)
    assert dropped >= 14
    status = wait_for(lambda: online(cloud, first.boot_id), timeout=10)
    assert status.spool_dropped >= dropped
    # Nothing lost silently: every seq of this boot arrives or is counted in a report.

    def unaccounted() -> int:
        arrived = {e.seq for e in cloud.events() if e.boot_id == first.boot_id}
        return len(set(range(1, max(arrived) + 1)) - arrived) - dropped

    wait_for(lambda: unaccounted() == 0, timeout=10)


def spool(agent: RouterAgent) -> tuple[int, int]:
    """The agent's spool: (events kept, of which the broker has and the cloud did not receipt)."""
    local = agent.ctl_json("status")["status"]
    return local["spool_depth"], local["spool_unconfirmed"]


def test_events_are_kept_until_the_cloud_receipts_them_and_sent_again_after_a_reconnect(
    lab: Lab, make_agent: MakeAgent, cloud: CloudSide, uplink: Uplink
) -> None:
    cloud.receipts = False  # the broker acknowledges, but the cloud never says it stored them
    agent = start_linked(make_agent, lab)
    wait_for(lambda: online(cloud), timeout=10)
    accept_terms(lab.phones[0])
    started = wait_for(lambda: of_kind(cloud, EventKind.SESSION_STARTED), timeout=10)[0]
    kept = wait_for(lambda: spool(agent)[1] and spool(agent), timeout=5)
    assert kept[0] >= 2 and kept[1] == kept[0]  # PUBACKed, still kept
    cloud.receipts = True
    uplink.stop()  # the connection drops: what no receipt came for goes again
    uplink.start()
    again = wait_for(lambda: of_kind(cloud, EventKind.SESSION_STARTED)[1:], timeout=20)[0]
    assert (again.boot_id, again.seq) == (started.boot_id, started.seq)
    wait_for(lambda: spool(agent) == (0, 0), timeout=10)  # receipted now: gone


def test_a_restarted_agent_does_not_report_a_phone_still_in_the_shop_as_arriving_again(
    lab: Lab, make_agent: MakeAgent, cloud: CloudSide
) -> None:
    agent = start_linked(make_agent, lab)
    phone = lab.phones[0]
    phone_id = device_id(LAB_ALLIANCE_KEY, phone.mac)

    def arrivals() -> set[tuple[str, int]]:
        # by origin: the wire may carry an event twice (resent until receipted); the cloud
        # stores it once
        seen = of_kind(cloud, EventKind.DEVICE_SEEN)
        return {(e.boot_id, e.seq) for e in seen if e.device_id == phone_id}

    accept_terms(phone)  # traffic: the router's neighbour table has the phone now
    wait_for(arrivals, timeout=10)
    statuses = len(cloud.on(Channel.STATUS, Status))
    agent.stop()
    agent.start()
    wait_for(lambda: len(cloud.on(Channel.STATUS, Status)) > statuses + 1, timeout=10)
    assert online(cloud), "the restarted agent is online again"
    assert reaches_wan(phone)  # a fresh sign of life, seen by the new run
    time.sleep(3)  # three presence rounds of the new run
    assert len(arrivals()) == 1
    assert not [e for e in of_kind(cloud, EventKind.DEVICE_LEFT) if e.device_id == phone_id]
