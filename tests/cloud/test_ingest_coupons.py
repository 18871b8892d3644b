"""The ingest worker with a real Mosquitto: wallet replies at once, spent coupons and plans sent."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine

from agent import wire
from cloud.cli import main
from cloud.ingest_store import IngestStore
from lab.broker import Broker
from tests.cloud.conftest import Publisher, WorkerFactory
from tests.cloud.coupon_fleet import PHONE, Fleet, make_fleet
from tests.cloud.test_coupon_ingest import issued, redeemed, send

Eventually = Callable[..., Awaitable[object]]


class Routers:
    """What routers receive on their down/ topics, decoded, with the time each came."""

    def __init__(self, broker: Broker, *channels: tuple[str, wire.Channel]) -> None:
        self.got: list[tuple[float, str, wire.Message]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"rt-{uuid.uuid4().hex}")
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe([(str(wire.Topic(r, c)), 1) for r, c in channels])
        if not subscribed.wait(10):
            raise TimeoutError("could not subscribe")

    def _on_message(self, _c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        _, decoded = wire.decode_from(message.topic, bytes(message.payload))
        with self._lock:
            self.got.append((time.monotonic(), message.topic, decoded))

    def on(self, router_id: str, channel: wire.Channel) -> list[tuple[float, wire.Message]]:
        topic = str(wire.Topic(router_id, channel))
        with self._lock:
            return [(at, m) for at, t, m in self.got if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def fleet(engine: Engine) -> Fleet:
    return make_fleet(engine)


async def test_a_wallet_request_is_answered_within_a_second_with_the_alliance_wide_wallet(
    engine: Engine,
    fleet: Fleet,
    broker: Broker,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    spa = fleet.coupon("r-restaurant", fleet.campaign("spa", reach="partners"), "spa")
    send(IngestStore(engine), issued(fleet, "r-restaurant", spa))
    routers = Routers(broker, ("r-gym", wire.Channel.REPLY))
    try:
        await make_worker()
        request = wire.WalletRequest(router_id="r-gym", id="ask-1", device_id=PHONE)
        asked = time.monotonic()
        await publisher.publish(str(wire.Topic("r-gym", wire.Channel.REQUEST)), request.encode())
        await eventually(lambda: routers.on("r-gym", wire.Channel.REPLY), 5.0)
        [(answered, reply)] = routers.on("r-gym", wire.Channel.REPLY)
    finally:
        routers.close()
    assert isinstance(reply, wire.WalletReply)
    assert (reply.id, reply.coupons, reply.spent) == ("ask-1", (spa.to_text(),), ())
    assert answered - asked < 1.0


async def test_a_redemption_reaches_the_merchants_other_router_as_a_spent_command(
    engine: Engine,
    fleet: Fleet,
    broker: Broker,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    coupon = fleet.coupon("r-restaurant", fleet.campaign("spa", reach="partners"), "spa")
    send(IngestStore(engine), issued(fleet, "r-restaurant", coupon))
    channels = [(r, wire.Channel.COMMAND) for r in ("r-spa", "r-spa-2", "r-gym")]
    routers = Routers(broker, *channels)
    try:
        worker = await make_worker()
        event = redeemed(fleet, "r-spa", coupon, 1_800_000_100.0)
        batch = wire.EventBatch(router_id="r-spa", events=(event,))
        await publisher.publish(str(wire.Topic("r-spa", wire.Channel.EVENTS)), batch.encode())
        await eventually(lambda: routers.on("r-spa-2", wire.Channel.COMMAND), 10.0)
        await publisher.publish(str(wire.Topic("r-spa", wire.Channel.EVENTS)), batch.encode())
        await eventually(lambda: worker.stats.batches >= 2, 10.0)
        await asyncio.sleep(0.5)  # a redelivered batch would announce again, if it could
        commands = [m for _, m in routers.on("r-spa-2", wire.Channel.COMMAND)]
        others = routers.on("r-spa", wire.Channel.COMMAND) + routers.on(
            "r-gym", wire.Channel.COMMAND
        )
    finally:
        routers.close()
    assert len(commands) == 1 and isinstance(commands[0], wire.Command)
    assert commands[0].action is wire.CommandAction.COUPONS_SPENT
    assert commands[0].coupons == (coupon.coupon_id,)
    assert others == []


async def test_a_status_with_a_new_issuing_key_gets_the_router_its_plan(
    engine: Engine,
    fleet: Fleet,
    broker: Broker,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    offer = fleet.campaign("gym")
    routers = Routers(broker, ("r-gym", wire.Channel.CONFIG))
    try:
        await make_worker()
        key = "ab" * 32
        status = wire.Status(
            router_id="r-gym", state=wire.RouterState.ONLINE, at=1.8e9, issuer_key=key
        )
        await publisher.publish(str(wire.Topic("r-gym", wire.Channel.STATUS)), status.encode())
        await eventually(lambda: routers.on("r-gym", wire.Channel.CONFIG), 10.0)
        [(_, config)] = routers.on("r-gym", wire.Channel.CONFIG)
    finally:
        routers.close()
    assert isinstance(config, wire.RouterConfig) and config.coupons is not None
    assert [c.id for c in config.coupons.campaigns] == [offer]
    assert fleet.certificate("r-gym").public_key.hex() == key


def test_an_operator_pushes_every_router_its_coupon_plan(
    database_url: str,
    fleet: Fleet,
    broker: Broker,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    offer = fleet.campaign("gym")
    config = tmp_path / "cloud.toml"
    config.write_text(
        f'database_url = "{database_url}"\ndata_dir = "{tmp_path}/data"\n'
        f'broker_host = "{broker.host}"\nbroker_port = {broker.port}\n'
    )
    routers = Routers(broker, *((r, wire.Channel.CONFIG) for r in ("r-gym", "r-spa")))
    try:
        assert main(["--config", str(config), "--json", "coupons", "push"]) == 0
        pushed = json.loads(capsys.readouterr().out)["pushed"]
        deadline = time.monotonic() + 10
        while len(routers.on("r-gym", wire.Channel.CONFIG)) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        [(_, gym)] = routers.on("r-gym", wire.Channel.CONFIG)
        code = main(["--config", str(config), "coupons", "push", "--router", "r-nowhere"])
        assert code == 1 and "no router 'r-nowhere'" in capsys.readouterr().err
    finally:
        routers.close()
    assert set(pushed) == {"r-restaurant", "r-spa", "r-spa-2", "r-gym"}
    assert isinstance(gym, wire.RouterConfig) and gym.coupons is not None
    assert [(c.id, c.allotted) for c in gym.coupons.campaigns] == [(offer, 10)]


def test_a_campaign_made_with_push_reaches_the_alliances_routers(
    database_url: str,
    fleet: Fleet,
    broker: Broker,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "cloud.toml"
    config.write_text(
        f'database_url = "{database_url}"\ndata_dir = "{tmp_path}/data"\n'
        f'broker_host = "{broker.host}"\nbroker_port = {broker.port}\n'
    )
    routers = Routers(broker, ("r-spa", wire.Channel.CONFIG))
    argv = ["--config", str(config), "--json", "campaign", "create", "--merchant", "spa"]
    argv += ["--title-en", "Massage", "--title-zh", "按摩", "--budget", "50", "--push"]
    argv += ["--starts-at", "2027-01-01", "--ends-at", "2099-01-01"]
    try:
        assert main(argv) == 0
        made = json.loads(capsys.readouterr().out)
        deadline = time.monotonic() + 10
        while not routers.on("r-spa", wire.Channel.CONFIG) and time.monotonic() < deadline:
            time.sleep(0.05)
        [(_, spa)] = routers.on("r-spa", wire.Channel.CONFIG)
    finally:
        routers.close()
    assert sorted(made["pushed"]) == ["r-gym", "r-restaurant", "r-spa", "r-spa-2"]
    assert isinstance(spa, wire.RouterConfig) and spa.coupons is not None
    assert [c.id for c in spa.coupons.campaigns] == [made["campaign"]["id"]]


async def test_a_spent_coupon_command_no_router_answered_is_sent_again_at_connect(
    engine: Engine,
    fleet: Fleet,
    broker: Broker,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy.orm import Session

    from cloud.models import Command

    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    with Session(engine) as session, session.begin():
        for number, answered in (("lost", None), ("answered", long_ago)):
            session.add(
                Command(
                    id=number,
                    router_id="r-spa-2",
                    action="coupons_spent",
                    coupons="ab" * 16,
                    issued_at=long_ago,
                    acked_at=answered,
                )
            )
    routers = Routers(broker, ("r-spa-2", wire.Channel.COMMAND))
    try:
        await make_worker()
        await eventually(lambda: routers.on("r-spa-2", wire.Channel.COMMAND), 10.0)
        await asyncio.sleep(0.3)
        got = [m for _, m in routers.on("r-spa-2", wire.Channel.COMMAND)]
    finally:
        routers.close()
    assert [(c.id, c.coupons) for c in got if isinstance(c, wire.Command)] == [
        ("lost", ("ab" * 16,))
    ]
