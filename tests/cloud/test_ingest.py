"""Ingest against a real Mosquitto and real SQLite and PostgreSQL: once, and only once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Connection, Engine, func, inspect, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from agent import wire
from cloud.broker_config import password_hash
from cloud.ingest import IngestError, IngestWorker
from cloud.ingest_core import Accepted, Inbound, read_message
from cloud.ingest_store import IngestStore, Written
from cloud.models import DeadLetter, Event
from cloud.settings import CloudSettings
from lab.broker import Broker
from tests.cloud.conftest import Enrol, Publisher, WorkerFactory
from tests.cloud.test_ingest_core import DEVICE, batch

Eventually = Callable[..., Awaitable[object]]


def event_batch(router_id: str, seqs: range, boot: str = "boot-a") -> tuple[str, bytes]:
    """An events message of `router_id` on its own topic."""
    payload = batch(router_id, seqs, boot, wire.EventKind.SESSION_STARTED)
    return str(wire.Topic(router_id, wire.Channel.EVENTS)), payload


def batches(router_id: str, count: int, size: int, boot: str = "boot-a") -> list[tuple[str, bytes]]:
    return [event_batch(router_id, range(i * size, (i + 1) * size), boot) for i in range(count)]


def count_events(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(Event)) or 0)


def distinct_origins(engine: Engine) -> int:
    with engine.connect() as connection:
        origins = connection.execute(select(Event.router_id, Event.boot_id, Event.seq)).all()
    return len(set(origins))


def dead_letters(engine: Engine) -> list[tuple[str, bytes, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(DeadLetter.topic, DeadLetter.payload, DeadLetter.reason).order_by(DeadLetter.id)
        )
        return [(t, bytes(p), r) for t, p, r in rows]


async def test_published_batches_become_rows_once(
    engine: Engine,
    enrol: Enrol,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    enrol("r1", "r2")
    await make_worker()
    await publisher.publish_all(batches("r1", 10, 50) + batches("r2", 5, 20))
    await eventually(lambda: count_events(engine) == 600)
    assert distinct_origins(engine) == 600


class RouterInbox:
    """What routers see on their receipt topics: every Receipt, decoded, as it came."""

    def __init__(self, broker: Broker, *router_ids: str) -> None:
        self.receipts: list[wire.Receipt] = []
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"box-{uuid.uuid4().hex}")
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe([(str(wire.Topic(r, wire.Channel.RECEIPT)), 1) for r in router_ids])
        if not subscribed.wait(10):
            raise TimeoutError("the router inbox could not subscribe")

    def _on_message(
        self, _client: paho.Client, _userdata: object, message: paho.MQTTMessage
    ) -> None:
        _, receipt = wire.decode_from(message.topic, bytes(message.payload))
        assert isinstance(receipt, wire.Receipt)
        with self._lock:
            self.receipts.append(receipt)

    def receipted(self, router_id: str) -> list[tuple[str, int]]:
        """(boot_id, seq) of every receipted event of `router_id`, repeats kept."""
        with self._lock:
            return [
                (r.boot_id, seq)
                for receipt in self.receipts
                if receipt.router_id == router_id
                for r in receipt.ranges
                for seq in range(r.first, r.last + 1)
            ]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_routers_get_receipts_for_stored_and_duplicate_events_never_for_dead_letters(
    engine: Engine,
    enrol: Enrol,
    broker: Broker,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    enrol("r1", "r2")
    inbox = RouterInbox(broker, "r1", "r2", "ghost")
    try:
        await make_worker()
        _, poisoned = event_batch("r1", range(100, 103))
        poisoned = poisoned.replace(b'"kind"', b'"reason":"' + b"x" * 100 + b'","kind"', 1)
        await publisher.publish_all(
            batches("r1", 2, 10)
            + batches("r2", 1, 5, boot="boot-b")
            + [
                (str(wire.Topic("r1", wire.Channel.EVENTS)), poisoned),
                event_batch("ghost", range(3)),
            ]
        )
        # seq 100 is refused on its own; 101 and 102, its batch-mates, are stored
        await eventually(lambda: count_events(engine) == 27 and len(dead_letters(engine)) == 2)
        await eventually(lambda: len(inbox.receipted("r1")) == 22)
        await eventually(lambda: len(inbox.receipted("r2")) == 5)
        stored_r1 = [*range(20), 101, 102]
        assert sorted(inbox.receipted("r1")) == [("boot-a", seq) for seq in stored_r1]
        assert sorted(inbox.receipted("r2")) == [("boot-b", seq) for seq in range(5)]
        await publisher.publish_all(batches("r1", 1, 10))  # sent again: already stored
        await eventually(lambda: len(inbox.receipted("r1")) == 32)
        assert count_events(engine) == 27
        assert not inbox.receipted("ghost")
        assert 100 not in {seq for _, seq in inbox.receipted("r1")}
    finally:
        inbox.close()


async def test_a_router_is_told_its_misfit_event_is_refused_and_the_rest_of_its_batch_stored(
    engine: Engine,
    enrol: Enrol,
    broker: Broker,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    enrol("r1")
    inbox = RouterInbox(broker, "r1")
    try:
        worker = await make_worker()
        events = tuple(
            wire.Event(
                router_id="r1",
                boot_id="boot-a",
                seq=seq,
                at=1_800_000_000.0,
                kind=wire.EventKind.SESSION_ENDED,
                device_id=DEVICE,
                reason="x" * 100 if seq == 8 else "idle",  # the events table keeps 64
            )
            for seq in (7, 8, 9)
        )
        topic = str(wire.Topic("r1", wire.Channel.EVENTS))
        payload = wire.EventBatch(router_id="r1", events=events).encode()
        await publisher.publish(topic, payload)
        await eventually(lambda: len(inbox.receipts) == 2)
        stored, refused = inbox.receipts
        assert stored.ranges == (wire.SeqRange("boot-a", 7, 7), wire.SeqRange("boot-a", 9, 9))
        assert refused.ranges == () and refused.refused == (wire.SeqRange("boot-a", 8, 8),)
        assert refused.reason.startswith("events[1].reason: is longer than the 64 characters")
        assert dead_letters(engine) == [(topic, events[1].encode(), refused.reason)]
        assert count_events(engine) == 2
        assert worker.stats.refused == 1
    finally:
        inbox.close()


async def test_the_same_batch_published_twice_is_stored_once(
    engine: Engine,
    enrol: Enrol,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    enrol("r1")
    worker = await make_worker()
    twice = batches("r1", 4, 25)
    await publisher.publish_all(twice)
    await eventually(lambda: worker.stats.events == 100)
    await publisher.publish_all(twice + twice)  # in later batches, and twice in one batch
    await eventually(lambda: worker.stats.events == 300)
    assert count_events(engine) == 100


async def test_what_is_published_while_the_worker_is_down_arrives_when_it_is_back(
    engine: Engine,
    enrol: Enrol,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    enrol("r1")
    first = await make_worker("ingest-a")
    await publisher.publish_all(batches("r1", 2, 10))
    await eventually(lambda: count_events(engine) == 20)
    await first.stop()
    await publisher.publish_all(batches("r1", 20, 10, boot="boot-b"))  # queued by the broker
    assert count_events(engine) == 20
    await make_worker("ingest-a")  # the same name: the same persistent session
    await eventually(lambda: count_events(engine) == 220)
    assert distinct_origins(engine) == 220


async def test_two_workers_on_the_shared_subscription_split_the_load(
    engine: Engine,
    enrol: Enrol,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    enrol("r1", "r2", "r3")
    one = await make_worker("ingest-a")
    two = await make_worker("ingest-b")
    messages = batches("r1", 20, 10) + batches("r2", 20, 10) + batches("r3", 20, 10)
    await publisher.publish_all(messages)
    await eventually(lambda: count_events(engine) == 600)
    assert one.stats.events > 0 and two.stats.events > 0
    assert one.stats.events + two.stats.events == 600  # each message went to one worker
    assert one.stats.messages + two.stats.messages == len(messages)
    assert distinct_origins(engine) == 600


async def test_messages_are_not_acknowledged_before_they_are_committed(
    engine: Engine,
    enrol: Enrol,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    """The database is down for a first worker; what it held reaches the database later."""
    enrol("r1")
    attempts: list[int] = []

    def database_down(*_: object) -> None:
        attempts.append(1)
        raise sa_exc.OperationalError("INSERT INTO events", {}, Exception("connection refused"))

    doomed = await make_worker("ingest-a")
    doomed._store.write = database_down  # type: ignore[assignment,method-assign]
    await publisher.publish_all(batches("r1", 5, 10))
    await eventually(lambda: len(attempts) >= 2)  # it retries with backoff, acknowledging nothing
    assert count_events(engine) == 0
    await doomed.stop()
    await make_worker("ingest-a")
    await eventually(lambda: count_events(engine) == 50)
    assert distinct_origins(engine) == 50


async def test_no_receipt_is_sent_for_what_is_not_committed(
    engine: Engine,
    enrol: Enrol,
    broker: Broker,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    enrol("r1")
    inbox = RouterInbox(broker, "r1")
    attempts: list[int] = []

    def database_down(*_: object) -> None:
        attempts.append(1)
        raise sa_exc.OperationalError("COMMIT", {}, Exception("connection refused"))

    try:
        doomed = await make_worker("ingest-a")
        doomed._store.write = database_down  # type: ignore[assignment,method-assign]
        await publisher.publish_all(batches("r1", 3, 10))
        await eventually(lambda: len(attempts) >= 2)
        await doomed.stop()
        assert inbox.receipts == []
        await make_worker("ingest-a")
        await eventually(lambda: len(inbox.receipted("r1")) == 30)
        assert count_events(engine) == 30
    finally:
        inbox.close()


async def test_a_database_outage_is_retried_without_losing_messages(
    engine: Engine,
    enrol: Enrol,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    enrol("r1")
    worker = await make_worker()
    real_write = worker._store.write
    failures = [2]

    def flaky(items: object, now: object) -> object:
        if failures[0]:
            failures[0] -= 1
            raise sa_exc.OperationalError("COMMIT", {}, Exception("server closed the connection"))
        return real_write(items, now)  # type: ignore[arg-type]

    worker._store.write = flaky  # type: ignore[assignment,method-assign]
    await publisher.publish_all(batches("r1", 5, 10))
    await eventually(lambda: count_events(engine) == 50)
    assert failures == [0]


async def test_malformed_and_unauthorised_messages_are_dead_lettered_and_the_worker_goes_on(
    engine: Engine,
    enrol: Enrol,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    enrol("r1")
    await make_worker()
    topic = str(wire.Topic("r1", wire.Channel.EVENTS))
    _, other_routers_body = event_batch("r2", range(3))
    _, unknown_body = event_batch("ghost", range(3))
    await publisher.publish_all(
        [
            (topic, b'{"v": 1, "type": "events", "events": [}'),
            (topic, other_routers_body),
            (str(wire.Topic("ghost", wire.Channel.EVENTS)), unknown_body),
            event_batch("r1", range(5)),
        ]
    )
    await eventually(lambda: count_events(engine) == 5 and len(dead_letters(engine)) == 3)
    stored = dead_letters(engine)
    assert stored[0][2].startswith("payload: is not JSON")
    assert stored[0][1] == b'{"v": 1, "type": "events", "events": [}'
    assert stored[1][2] == "router_id: 'r2' was published on 'r1''s topic"
    assert stored[2][2] == "router_id: 'ghost' is not enrolled"


async def test_no_raw_mac_is_stored_and_an_event_carrying_one_is_dead_lettered(
    engine: Engine,
    enrol: Enrol,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    columns = {column["name"] for column in inspect(engine).get_columns("events")}
    assert "device_id" in columns
    assert not {name for name in columns if "mac" in name}
    enrol("r1")
    await make_worker()
    topic, body = event_batch("r1", range(2))
    await publisher.publish(topic, body.replace(DEVICE.encode(), b"02:11:22:33:44:55"))
    await eventually(lambda: dead_letters(engine))
    assert "device_id" in dead_letters(engine)[0][2]
    assert count_events(engine) == 0


async def test_a_text_with_a_nul_character_is_dead_lettered_on_both_databases(
    engine: Engine,
    enrol: Enrol,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    """PostgreSQL cannot keep NUL in text; the message is refused the same way everywhere."""
    enrol("r1")
    await make_worker()
    topic, body = event_batch("r1", range(2))
    poisoned = body.replace(b'"kind"', b'"reason":"x\\u0000y","kind"', 1)
    await publisher.publish_all([(topic, poisoned), event_batch("r1", range(10, 13))])
    await eventually(lambda: count_events(engine) == 4 and dead_letters(engine))  # 1 + 3
    assert dead_letters(engine)[0][2].startswith("events[0].reason: contains a NUL")


class RefusingStore(IngestStore):
    """A store whose database refuses any transaction that holds the event with seq 666."""

    def _write(self, connection: Connection, items: Sequence[Inbound], now: datetime) -> Written:
        for item in items:
            message = item.message if isinstance(item, Accepted) else None
            if isinstance(message, wire.EventBatch) and any(e.seq == 666 for e in message.events):
                raise sa_exc.IntegrityError("INSERT INTO events", {}, Exception("check failed"))
        return super()._write(connection, items, now)


def test_a_message_the_database_refuses_is_dead_lettered_and_its_batch_still_stored(
    engine: Engine, enrol: Enrol
) -> None:
    enrol("r1")
    items = [
        read_message(*event_batch("r1", range(3))),
        read_message(*event_batch("r1", range(665, 668))),
        read_message(*event_batch("r1", range(3, 5))),
    ]
    written = RefusingStore(engine).write(items, datetime.now(UTC))
    assert (written.events, written.dead_letters) == (5, 1)
    assert sorted(seq for _, _, seq in written.stored) == [0, 1, 2, 3, 4]  # receipted
    assert count_events(engine) == 5
    assert dead_letters(engine)[0][2] == "database: check failed"


async def test_the_worker_reconnects_after_the_broker_restarts(
    engine: Engine,
    enrol: Enrol,
    broker: Broker,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    enrol("r1")
    worker = await make_worker()
    await asyncio.to_thread(broker.restart)
    await eventually(lambda: worker.subscribed)
    publisher = Publisher(broker)
    try:
        await publisher.publish_all(batches("r1", 3, 10))
    finally:
        publisher.close()
    await eventually(lambda: count_events(engine) == 30)


async def test_run_ingest_serves_until_sigterm(
    engine: Engine,
    enrol: Enrol,
    settings: CloudSettings,
    publisher: Publisher,
    eventually: Eventually,
) -> None:
    """The entry point `loopspot-cloud ingest` calls, in its own process, as in production."""
    enrol("r1")
    script = (
        "import logging; logging.basicConfig(level=logging.INFO);"
        "from cloud.ingest import run_ingest; from cloud.settings import load_cloud_settings;"
        "run_ingest(load_cloud_settings(), 'ingest-process')"
    )
    environ = {
        **os.environ,
        "LOOPSPOT_DATABASE_URL": settings.database_url,
        "LOOPSPOT_BROKER_HOST": settings.broker_host,
        "LOOPSPOT_BROKER_PORT": str(settings.broker_port),
        "LOOPSPOT_BROKER_PASSWORD": "",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, env=environ, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    try:
        async with asyncio.timeout(30):
            while b"subscribed to" not in await process.stderr.readline():
                pass
        await publisher.publish_all(batches("r1", 2, 10))
        await eventually(lambda: count_events(engine) == 20)
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_worker_logs_in_with_the_service_password_and_waits_on_a_wrong_one(
    engine: Engine, enrol: Enrol, settings: CloudSettings, tmp_path: Path, eventually: Eventually
) -> None:
    enrol("r1")
    (tmp_path / "passwd").write_text(f"loopspot-cloud:{password_hash('s3cret')}\n")
    with Broker(listener_config=f"password_file {tmp_path / 'passwd'}") as broker:
        at_broker = replace(settings, broker_port=broker.port, broker_password="s3cret")
        refused = IngestWorker(replace(at_broker, broker_password="wrong"), "ingest-wrong")
        with pytest.raises(IngestError, match="did not subscribe"):
            await refused.start(ready_timeout=1.0)
        await refused.stop()
        worker = IngestWorker(at_broker, "ingest-right")
        await worker.start()
        try:
            publisher = Publisher(broker, username="loopspot-cloud", password="s3cret")
            await publisher.publish_all(batches("r1", 2, 5))
            publisher.close()
            await eventually(lambda: count_events(engine) == 10)
        finally:
            await worker.stop()


async def test_a_retired_routers_messages_are_dead_lettered_and_its_status_stays_retired(
    engine: Engine,
    enrol: Enrol,
    publisher: Publisher,
    make_worker: WorkerFactory,
    eventually: Eventually,
) -> None:
    from cloud.enrol_fleet import retire_router
    from cloud.models import Router

    enrol("r1", "r2")
    with Session(engine) as session:
        retire_router(session, "r1")
        session.commit()
    await make_worker()
    status = wire.Status(router_id="r1", state=wire.RouterState.ONLINE, at=100.0)
    await publisher.publish_all(
        [
            event_batch("r1", range(3)),
            (str(wire.Topic("r1", wire.Channel.STATUS)), status.encode()),
            event_batch("r2", range(2)),
        ]
    )
    await eventually(lambda: count_events(engine) == 2 and len(dead_letters(engine)) == 2)
    assert {reason for _, _, reason in dead_letters(engine)} == {"router_id: 'r1' is not enrolled"}
    with Session(engine) as session:
        assert session.get_one(Router, "r1").state == "retired"
