"""The cloud pushes versioned configs and allow-listed commands to one router over MQTT."""

from __future__ import annotations

import queue
import threading

import paho.mqtt.client as mqtt
import paho.mqtt.publish as mqtt_publish
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from agent import wire
from cloud.db import sessions
from cloud.fleet_push import Publish, PushError, push_config, send_command
from cloud.models import Command, RouterConfig
from lab.broker import Broker
from tests.cloud.conftest import Enrol


@pytest.fixture
def publish(broker: Broker) -> Publish:
    def send(topic: str, payload: bytes, retain: bool) -> None:
        mqtt_publish.single(
            topic, payload, qos=1, retain=retain, hostname=broker.host, port=broker.port
        )

    return send


def received(broker: Broker, topic: str, timeout: float = 5.0) -> bytes:
    """The first message a fresh subscriber gets on `topic` (retained ones included)."""
    inbox: queue.Queue[bytes] = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.on_message = lambda _c, _u, message: inbox.put(message.payload)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        return inbox.get(timeout=timeout)
    finally:
        client.loop_stop()
        client.disconnect()


def test_each_push_is_the_next_version_stored_and_retained_for_the_router(
    engine: Engine, enrol: Enrol, broker: Broker, publish: Publish
) -> None:
    (router_id,) = enrol("r-push")
    factory = sessions(engine)
    first = push_config(factory, publish, router_id, {"session_timeout": 1800})
    second = push_config(
        factory, publish, router_id, {"walled_garden_addresses": ["198.51.100.10/32"]}
    )
    assert (first.version, second.version) == (1, 2)
    on_wire = wire.decode(
        received(broker, f"loopspot/v1/{router_id}/down/config"), wire.RouterConfig
    )
    assert on_wire == second
    with Session(engine) as session:
        stored = session.scalars(select(RouterConfig.version)).all()
    assert sorted(stored) == [1, 2]


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"session_timout": 60}, "session_timout"),
        ({"session_timeout": "an hour"}, "session_timeout"),
        ({"walled_garden_addresses": "198.51.100.10"}, "walled_garden_addresses"),
    ],
)
def test_a_bad_config_is_refused_naming_the_field_and_nothing_is_sent(
    engine: Engine, enrol: Enrol, publish: Publish, changes: dict[str, object], named: str
) -> None:
    (router_id,) = enrol("r-bad")
    with pytest.raises(PushError, match=named):
        push_config(sessions(engine), publish, router_id, changes)
    with Session(engine) as session:
        assert session.scalars(select(RouterConfig)).all() == []


def test_pushing_to_an_unknown_router_is_refused(engine: Engine, publish: Publish) -> None:
    with pytest.raises(PushError, match="no router 'r-ghost'"):
        push_config(sessions(engine), publish, "r-ghost", {"session_timeout": 60})


def test_a_command_is_stored_and_published_with_its_id(
    engine: Engine, enrol: Enrol, broker: Broker, publish: Publish
) -> None:
    (router_id,) = enrol("r-cmd")
    inbox: queue.Queue[bytes] = queue.Queue()
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, message: inbox.put(message.payload)
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(broker.host, broker.port)
    client.subscribe(f"loopspot/v1/{router_id}/down/cmd", qos=1)
    client.loop_start()
    try:
        assert subscribed.wait(5)  # the command is not retained: subscribe first
        command = send_command(
            sessions(engine),
            publish,
            router_id,
            wire.CommandAction.REVOKE_DEVICE,
            device_id="a" * 32,
        )
        got = wire.decode(inbox.get(timeout=5), wire.Command)
    finally:
        client.loop_stop()
        client.disconnect()
    assert got == command
    with Session(engine) as session:
        row = session.get(Command, command.id)
    assert row is not None and row.action == "revoke_device"


def test_revoke_without_a_device_is_refused(engine: Engine, enrol: Enrol, publish: Publish) -> None:
    (router_id,) = enrol("r-norev")
    with pytest.raises(PushError, match="--device"):
        send_command(sessions(engine), publish, router_id, wire.CommandAction.REVOKE_DEVICE)
