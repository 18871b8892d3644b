"""Router status through ingest: online and offline, stale statuses, last_seen, and acks."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from agent import wire
from cloud.models import Command, Router, RouterConfig
from lab.broker import Broker
from tests.cloud.conftest import Enrol, Publisher, WorkerFactory
from tests.cloud.test_ingest import dead_letters, event_batch

Eventually = Callable[..., Awaitable[object]]


def status(router_id: str, state: wire.RouterState, at: float, **fields: Any) -> tuple[str, bytes]:
    body = wire.Status(router_id=router_id, state=state, at=at, **fields).encode()
    return str(wire.Topic(router_id, wire.Channel.STATUS)), body


def ack(router_id: str, ref: str, id_: str, ok: bool, error: str = "") -> tuple[str, bytes]:
    body = wire.Ack(router_id=router_id, ref=ref, id=id_, ok=ok, error=error, at=5.0).encode()
    return str(wire.Topic(router_id, wire.Channel.ACK)), body


def router(engine: Engine, router_id: str) -> Router:
    with Session(engine) as session:
        found = session.get(Router, router_id)
        assert found is not None
        return found


ONLINE, OFFLINE = wire.RouterState.ONLINE, wire.RouterState.OFFLINE


async def test_a_router_goes_online_then_offline(
    engine: Engine,
    enrol: Enrol,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    enrol("r1")
    await make_worker()
    await publisher.publish(
        *status(
            "r1",
            ONLINE,
            1000.0,
            boot_id="boot-a",
            agent_version="0.3.1",
            clients=12,
            config_version=4,
            spool_depth=7,
            spool_dropped=2,
        )
    )
    await eventually(lambda: router(engine, "r1").state == "online")
    online = router(engine, "r1")
    assert (online.boot_id, online.agent_version, online.clients) == ("boot-a", "0.3.1", 12)
    assert (online.config_version, online.spool_depth, online.spool_dropped) == (4, 7, 2)
    assert online.last_seen is not None and online.status_at == 1000.0
    # The agent says offline itself when it stops, with the time it stopped.
    await publisher.publish(*status("r1", OFFLINE, 1060.0, boot_id="boot-a"))
    await eventually(lambda: router(engine, "r1").state == "offline")
    offline = router(engine, "r1")
    assert offline.last_seen == online.last_seen  # saying goodbye is not being seen
    assert (offline.boot_id, offline.agent_version) == ("boot-a", "0.3.1")


async def test_a_status_older_than_the_stored_one_is_ignored(
    engine: Engine,
    enrol: Enrol,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    enrol("r1")
    await make_worker()
    await publisher.publish(*status("r1", ONLINE, 2000.0, clients=5))
    await eventually(lambda: router(engine, "r1").status_at == 2000.0)
    await publisher.publish(*status("r1", OFFLINE, 1500.0))  # a late Last Will of an old link
    await publisher.publish(*status("r1", ONLINE, 2100.0, clients=6))
    await eventually(lambda: router(engine, "r1").status_at == 2100.0)
    stored = router(engine, "r1")
    assert (stored.state, stored.clients) == ("online", 6)


async def test_events_bump_last_seen(
    engine: Engine,
    enrol: Enrol,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    enrol("r1")
    await make_worker()
    assert router(engine, "r1").last_seen is None
    await publisher.publish(*event_batch("r1", range(3)))
    await eventually(lambda: router(engine, "r1").last_seen is not None)
    assert router(engine, "r1").state == "unknown"  # events say nothing about the state


async def test_a_status_from_an_unknown_router_is_dead_lettered(
    engine: Engine,
    enrol: Enrol,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    enrol("r1")
    await make_worker()
    await publisher.publish(*status("ghost", ONLINE, 10.0))
    await eventually(lambda: dead_letters(engine))
    assert dead_letters(engine)[0][2] == "router_id: 'ghost' is not enrolled"


async def test_the_brokers_last_will_marks_a_vanished_router_offline(
    engine: Engine,
    enrol: Enrol,
    broker: Broker,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    enrol("r1")
    await make_worker()
    topic, will = status("r1", OFFLINE, 0.0, boot_id="boot-a")  # no time, as agent.link does
    link = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"r1-{uuid.uuid4().hex[:6]}")
    link.will_set(topic, will, qos=1, retain=True)
    connected = threading.Event()
    link.on_connect = lambda *_: connected.set()
    link.connect(broker.host, broker.port)
    link.loop_start()
    assert connected.wait(10)
    link.publish(
        *status("r1", ONLINE, 3000.0, boot_id="boot-a"), qos=1, retain=True
    ).wait_for_publish(10)
    await eventually(lambda: router(engine, "r1").state == "online")
    sock = link.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)  # the router vanishes without saying goodbye
    link.loop_stop()
    await eventually(lambda: router(engine, "r1").state == "offline")


async def test_a_last_will_from_an_earlier_boot_is_ignored(
    engine: Engine,
    enrol: Enrol,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    enrol("r1")
    await make_worker()
    await publisher.publish(*status("r1", ONLINE, 4000.0, boot_id="boot-b"))
    await eventually(lambda: router(engine, "r1").state == "online")
    await publisher.publish(*status("r1", OFFLINE, 0.0, boot_id="boot-a"))  # delivered late
    await publisher.publish(*status("r1", ONLINE, 4001.0, boot_id="boot-b", clients=3))
    await eventually(lambda: router(engine, "r1").clients == 3)
    assert router(engine, "r1").state == "online"


async def test_a_last_will_overtaken_by_a_newer_connection_is_ignored(
    engine: Engine,
    enrol: Enrol,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    """The router reconnected (same boot); the broker's will for the old connection reaches
    the cloud after the new connection's status, as it may with two ingest workers."""
    enrol("r1")
    await make_worker()
    boot = {"boot_id": "boot-a"}
    await publisher.publish(*status("r1", ONLINE, 5000.0, connected_at=4990.0, **boot))
    await eventually(lambda: router(engine, "r1").state == "online")
    await publisher.publish(*status("r1", OFFLINE, 0.0, connected_at=4000.0, **boot))  # late
    await publisher.publish(*status("r1", ONLINE, 5001.0, connected_at=4990.0, clients=2, **boot))
    await eventually(lambda: router(engine, "r1").clients == 2)
    assert router(engine, "r1").state == "online"
    await publisher.publish(*status("r1", OFFLINE, 0.0, connected_at=4990.0, **boot))  # its own
    await eventually(lambda: router(engine, "r1").state == "offline")


def configs_and_commands(engine: Engine) -> tuple[list[Any], list[Any]]:
    with Session(engine) as session:
        configs = session.execute(
            select(RouterConfig.version, RouterConfig.acked_at, RouterConfig.ack_error).order_by(
                RouterConfig.version
            )
        ).all()
        commands = session.execute(
            select(Command.id, Command.acked_at, Command.ok, Command.error).order_by(Command.id)
        ).all()
    return list(configs), list(commands)


async def test_acks_mark_configs_and_commands(
    engine: Engine,
    enrol: Enrol,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    enrol("r1", "r2")
    with Session(engine) as session, session.begin():
        session.add_all(
            [
                RouterConfig(router_id="r1", version=3, body="{}"),
                RouterConfig(router_id="r1", version=4, body="{}"),
                Command(id="c-1", router_id="r1", action="revoke_device"),
                Command(id="c-2", router_id="r1", action="send_status"),
            ]
        )
    await make_worker()
    await publisher.publish_all(
        [
            ack("r1", "config", "3", ok=True),
            ack("r1", "config", "4", ok=False, error="quota: must be positive"),
            ack("r1", "cmd", "c-1", ok=True),
            ack("r2", "cmd", "c-2", ok=True),  # not r2's command: ignored
            ack("r1", "cmd", "c-1", ok=False, error="late"),  # the first answer stands
        ]
    )

    def settled() -> bool:
        configs, commands = configs_and_commands(engine)
        return all(c.acked_at is not None for c in configs) and commands[0].acked_at is not None

    await eventually(settled)
    configs, commands = configs_and_commands(engine)
    assert [(c.version, c.ack_error) for c in configs] == [
        (3, None),
        (4, "quota: must be positive"),
    ]
    assert (commands[0].id, commands[0].ok, commands[0].error) == ("c-1", True, None)
    assert (commands[1].id, commands[1].acked_at) == ("c-2", None)
