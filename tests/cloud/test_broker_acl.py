"""The generated Mosquitto config, run for real: each router in its own prefix, services in all.

Negative checks need no sleeping: a client's messages are handled in order, so once a
later marker message arrives, a forbidden message sent before it would have arrived too.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from agent.enrol import certificate_request, new_key
from agent.wire import INGEST_SHARE
from cloud.broker_config import service_password, write_broker_config
from cloud.ca import CertificateAuthority, ca_directory, certificate_pem
from cloud.settings import CloudSettings
from lab.freeport import free_port, wait_for_port
from tests.cloud.conftest import unavailable

MOSQUITTO = "/usr/sbin/mosquitto"
WAIT = 10.0


@dataclass
class CloudBroker:
    """Mosquitto running the generated config; `router(id)` makes a certificate for a router."""

    settings: CloudSettings
    ca: CertificateAuthority
    log: Path
    process: subprocess.Popen[bytes]

    def router(self, router_id: str) -> tuple[Path, Path]:
        """(certificate, key) files for `router_id`, signed by the cloud CA."""
        key = new_key()
        cert = self.ca.sign_router_request(certificate_request(key), router_id, datetime.now(UTC))
        folder = self.settings.data_dir / "routers" / router_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "router.crt").write_text(certificate_pem(cert))
        (folder / "router.key").write_bytes(key)
        return folder / "router.crt", folder / "router.key"


def start_mosquitto(config: Path, settings: CloudSettings, log: Path) -> subprocess.Popen[bytes]:
    """Start mosquitto on `config` and return once both listeners accept connections."""
    process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stderr=subprocess.DEVNULL)
    for port in (settings.public_broker_port, settings.broker_port):
        if not wait_for_port("127.0.0.1", port, WAIT):
            process.kill()
            process.wait()
            raise RuntimeError(f"mosquitto did not listen on {port}:\n{log.read_text()}")
    return process


def stop_mosquitto(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (Mosquitto saves its persistence file), then wait."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def cloud_broker(tmp_path: Path) -> Iterator[CloudBroker]:
    """Mosquitto on free loopback ports with the config write_broker_config generates."""
    if not Path(MOSQUITTO).exists():
        unavailable(f"{MOSQUITTO} is missing: apt-get install mosquitto")
    settings = CloudSettings(
        data_dir=tmp_path / "data",
        broker_port=free_port(),
        public_broker_port=free_port(),
        public_broker_host="localhost",
    )
    ca = CertificateAuthority.load_or_create(ca_directory(settings.data_dir), datetime.now(UTC))
    log = tmp_path / "mosquitto.log"
    config = write_broker_config(settings, ca, public_bind="127.0.0.1", log_file=log)
    process = start_mosquitto(config, settings, log)
    yield CloudBroker(settings, ca, log, process)
    stop_mosquitto(process)


class Peer:
    """A paho client (MQTT 3.1.1); every step waits for the broker's answer, with a deadline."""

    def __init__(self, client_id: str = "", clean: bool = True) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"peer-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
            clean_session=clean,
        )
        self.client.reconnect_delay_set(60, 60)  # a dropped peer stays dropped during a test
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connack: ReasonCode | None = None
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.answered = threading.Event()  # CONNACK, a refusal, or a dropped connection
        self.granted: dict[int, list[ReasonCode]] = {}
        self.subscribed = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_: self._dropped()
        self.client.on_connect_fail = lambda *_: self._dropped()
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))

    def _on_connect(self, _c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        self.connack = rc
        self.connected.set()
        self.answered.set()

    def _dropped(self) -> None:
        self.disconnected.set()
        self.answered.set()

    def _on_subscribe(
        self, _c: object, _u: object, mid: int, codes: list[ReasonCode], _p: object
    ) -> None:
        with self.subscribed:
            self.granted[mid] = codes
            self.subscribed.notify_all()

    def as_router(self, broker: CloudBroker, files: tuple[Path, Path] | None) -> Peer:
        """Connect to the TLS listener with a router's (certificate, key), or with none."""
        certfile, keyfile = files if files else (None, None)
        self.client.tls_set(
            ca_certs=str(broker.ca.certificate_path),
            certfile=None if certfile is None else str(certfile),
            keyfile=None if keyfile is None else str(keyfile),
        )
        return self._connect("localhost", broker.settings.public_broker_port)

    def as_service(self, broker: CloudBroker, password: str | None = None) -> Peer:
        """Connect to the loopback listener as the cloud's services user."""
        settings = broker.settings
        secret = service_password(settings) if password is None else password
        self.client.username_pw_set(settings.broker_username, secret)
        return self._connect(settings.broker_host, settings.broker_port)

    def _connect(self, host: str, port: int) -> Peer:
        try:
            self.client.connect(host, port, keepalive=30)
        except OSError:
            self._dropped()
            return self
        self.client.loop_start()
        assert self.answered.wait(WAIT), f"no answer from {host}:{port}"
        return self

    @property
    def accepted(self) -> bool:
        """Whether the broker answered CONNACK success."""
        return self.connack is not None and not self.connack.is_failure

    def subscribe(self, topic: str) -> None:
        """Subscribe at QoS 1 and wait for the SUBACK."""
        _, mid = self.client.subscribe(topic, qos=1)
        with self.subscribed:
            assert self.subscribed.wait_for(lambda: mid in self.granted, WAIT), topic

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the PUBACK (sent even when the ACL drops it)."""
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT)

    def until(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        """Everything received up to and including (topic, payload); fails at the deadline."""
        seen: list[tuple[str, bytes]] = []
        while (topic, payload) not in seen:
            try:
                seen.append(self.messages.get(timeout=WAIT))
            except queue.Empty:
                raise AssertionError(f"{(topic, payload)} never came; got {seen}") from None
        return seen

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    """Peers made through this list are closed after the test."""
    made: list[Peer] = []
    yield made
    for peer in made:
        peer.close()


def up(router_id: str) -> str:
    return f"loopspot/v1/{router_id}/up/events"


def cmd(router_id: str) -> str:
    return f"loopspot/v1/{router_id}/down/cmd"


def test_router_publishes_and_subscribes_under_its_own_prefix(
    cloud_broker: CloudBroker, peers: list[Peer]
) -> None:
    service = Peer().as_service(cloud_broker)
    router = Peer("r-aaaaaaaaaa").as_router(cloud_broker, cloud_broker.router("r-aaaaaaaaaa"))
    peers += [service, router]
    service.subscribe(INGEST_SHARE)
    router.subscribe("loopspot/v1/r-aaaaaaaaaa/down/#")

    router.publish(up("r-aaaaaaaaaa"), b"events")
    service.publish(cmd("r-aaaaaaaaaa"), b"send_status")

    assert service.until(up("r-aaaaaaaaaa"), b"events") == [(up("r-aaaaaaaaaa"), b"events")]
    assert router.until(cmd("r-aaaaaaaaaa"), b"send_status") == [
        (cmd("r-aaaaaaaaaa"), b"send_status")
    ]


def test_router_cannot_publish_as_another_router(
    cloud_broker: CloudBroker, peers: list[Peer]
) -> None:
    a = Peer().as_router(cloud_broker, cloud_broker.router("r-aaaaaaaaaa"))
    b = Peer().as_router(cloud_broker, cloud_broker.router("r-bbbbbbbbbb"))
    service = Peer().as_service(cloud_broker)
    peers += [a, b, service]
    b.subscribe("loopspot/v1/r-bbbbbbbbbb/#")
    service.subscribe(INGEST_SHARE)

    a.publish(up("r-bbbbbbbbbb"), b"forged")
    a.publish(up("r-aaaaaaaaaa"), b"marker")
    b.publish(up("r-bbbbbbbbbb"), b"own")

    assert b.until(up("r-bbbbbbbbbb"), b"own") == [(up("r-bbbbbbbbbb"), b"own")]
    seen = service.until(up("r-aaaaaaaaaa"), b"marker") + service.until(up("r-bbbbbbbbbb"), b"own")
    assert (up("r-bbbbbbbbbb"), b"forged") not in seen


def test_router_cannot_read_another_routers_commands(
    cloud_broker: CloudBroker, peers: list[Peer]
) -> None:
    a = Peer().as_router(cloud_broker, cloud_broker.router("r-aaaaaaaaaa"))
    service = Peer().as_service(cloud_broker)
    peers += [a, service]
    for topic in (cmd("r-bbbbbbbbbb"), "loopspot/v1/+/down/#", "#", cmd("r-aaaaaaaaaa")):
        a.subscribe(topic)

    service.publish(cmd("r-bbbbbbbbbb"), b"revoke")
    service.publish(cmd("r-aaaaaaaaaa"), b"marker")

    assert {topic for topic, _ in a.until(cmd("r-aaaaaaaaaa"), b"marker")} == {cmd("r-aaaaaaaaaa")}


def test_a_router_reads_its_own_receipts_only(cloud_broker: CloudBroker, peers: list[Peer]) -> None:
    a = Peer().as_router(cloud_broker, cloud_broker.router("r-aaaaaaaaaa"))
    service = Peer().as_service(cloud_broker)
    peers += [a, service]
    for topic in ("loopspot/v1/+/down/receipt", "loopspot/v1/r-aaaaaaaaaa/down/receipt"):
        a.subscribe(topic)

    service.publish("loopspot/v1/r-bbbbbbbbbb/down/receipt", b"b's")
    service.publish("loopspot/v1/r-aaaaaaaaaa/down/receipt", b"a's")

    assert a.until("loopspot/v1/r-aaaaaaaaaa/down/receipt", b"a's") == [
        ("loopspot/v1/r-aaaaaaaaaa/down/receipt", b"a's")
    ]


def test_router_cannot_take_over_another_routers_session(
    cloud_broker: CloudBroker, peers: list[Peer]
) -> None:
    b = Peer("r-bbbbbbbbbb").as_router(cloud_broker, cloud_broker.router("r-bbbbbbbbbb"))
    service = Peer().as_service(cloud_broker)
    peers += [b, service]
    b.subscribe(cmd("r-bbbbbbbbbb"))

    impostor = Peer("r-bbbbbbbbbb").as_router(cloud_broker, cloud_broker.router("r-aaaaaaaaaa"))
    peers.append(impostor)
    impostor.subscribe("#")
    service.publish(cmd("r-bbbbbbbbbb"), b"for b")

    assert impostor.accepted  # connected, but as itself: the client id is the certificate's CN
    assert b.until(cmd("r-bbbbbbbbbb"), b"for b") == [(cmd("r-bbbbbbbbbb"), b"for b")]
    assert not b.disconnected.is_set()
    assert "as r-aaaaaaaaaa" in cloud_broker.log.read_text()


def test_command_queued_while_a_router_is_offline_arrives_when_it_returns(
    cloud_broker: CloudBroker, peers: list[Peer]
) -> None:
    files = cloud_broker.router("r-aaaaaaaaaa")
    first = Peer("r-aaaaaaaaaa", clean=False).as_router(cloud_broker, files)
    service = Peer().as_service(cloud_broker)
    peers += [service]
    first.subscribe(cmd("r-aaaaaaaaaa"))
    first.close()

    service.publish(cmd("r-aaaaaaaaaa"), b"queued")
    again = Peer("r-aaaaaaaaaa", clean=False).as_router(cloud_broker, files)
    peers.append(again)

    assert again.until(cmd("r-aaaaaaaaaa"), b"queued") == [(cmd("r-aaaaaaaaaa"), b"queued")]


def test_service_writes_retained_config_and_cannot_forge_router_events(
    cloud_broker: CloudBroker, peers: list[Peer]
) -> None:
    service = Peer().as_service(cloud_broker)
    listener = Peer().as_service(cloud_broker)
    peers += [service, listener]
    listener.subscribe(INGEST_SHARE)
    config = "loopspot/v1/r-aaaaaaaaaa/down/config"
    service.publish(config, b'{"version": 3}', retain=True)
    service.publish(up("r-aaaaaaaaaa"), b"forged")

    router = Peer().as_router(cloud_broker, cloud_broker.router("r-aaaaaaaaaa"))
    peers.append(router)
    router.subscribe(config)
    router.publish(up("r-aaaaaaaaaa"), b"real")

    assert router.until(config, b'{"version": 3}') == [(config, b'{"version": 3}')]
    assert listener.until(up("r-aaaaaaaaaa"), b"real") == [(up("r-aaaaaaaaaa"), b"real")]


def test_client_without_a_certificate_is_refused(
    cloud_broker: CloudBroker, peers: list[Peer]
) -> None:
    bare = Peer().as_router(cloud_broker, None)
    peers.append(bare)

    assert not bare.accepted
    assert bare.disconnected.is_set()


def test_certificate_from_another_ca_is_refused(
    cloud_broker: CloudBroker, peers: list[Peer], tmp_path: Path
) -> None:
    stranger = CertificateAuthority.create(tmp_path / "other-ca", datetime.now(UTC))
    forged = CloudBroker(cloud_broker.settings, stranger, cloud_broker.log, cloud_broker.process)
    files = forged.router("r-aaaaaaaaaa")
    peer = Peer()
    peer.client.tls_set(
        ca_certs=str(cloud_broker.ca.certificate_path),
        certfile=str(files[0]),
        keyfile=str(files[1]),
    )
    peer._connect("localhost", cloud_broker.settings.public_broker_port)
    peers.append(peer)

    assert not peer.accepted


@pytest.mark.parametrize("password", ["wrong", ""])
def test_services_listener_refuses_wrong_or_no_password(
    cloud_broker: CloudBroker, peers: list[Peer], password: str
) -> None:
    peer = Peer()
    if password:
        peer.as_service(cloud_broker, password)
    else:
        peer._connect(cloud_broker.settings.broker_host, cloud_broker.settings.broker_port)
    peers.append(peer)

    assert not peer.accepted


def test_generated_files_are_private_to_root(cloud_broker: CloudBroker) -> None:
    folder = cloud_broker.settings.data_dir / "broker"

    for name in ("passwd", "acl", "server.key", "service-password"):
        assert (folder / name).stat().st_mode & 0o777 == 0o600, name
    assert os.stat(folder).st_mode & 0o777 == 0o700
