"""Fixtures of the cloud tests: both databases for real, a real Mosquitto, enrolled routers.

`database_url` runs each test on SQLite (a file in tmp_path) and on PostgreSQL (a fresh
database in one cluster per session), both migrated with cloud.db.migrate. A service that
cannot start here skips the test, except under CI=true, where it fails.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Protocol

import paho.mqtt.client as paho
import pytest
from aiohttp.test_utils import TestClient, TestServer
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from cloud.db import make_engine, migrate
from cloud.ingest import IngestWorker
from cloud.models import Merchant, Router, Site
from cloud.settings import CloudSettings
from lab.broker import Broker
from lab.errors import LabError
from lab.postgres import Postgres
from tests.cloud.dashboard_world import World, dashboard_app, make_world

BROKER_IN_FLIGHT = 100  # lab.broker's max_inflight_messages


def race(attempt: Callable[[], object], refused: type[Exception], times: int = 2) -> list[object]:
    """Run `attempt` in `times` threads released at once; each result, or the `reason` of
    the `refused` it raised."""
    start = threading.Barrier(times)
    outcomes: list[object] = []

    def one() -> None:
        start.wait()
        try:
            outcomes.append(attempt())
        except refused as exc:
            outcomes.append(getattr(exc, "reason", str(exc)))

    threads = [threading.Thread(target=one) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes


def unavailable(reason: str) -> None:
    """Skip, or fail under CI=true, when a service the test needs cannot run here."""
    if os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}:
        pytest.fail(f"service unavailable under CI=true: {reason}", pytrace=False)
    pytest.skip(f"service unavailable: {reason}")


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Postgres]:
    """One throwaway PostgreSQL cluster for the whole session."""
    cluster = Postgres()
    try:
        cluster.start()
    except (LabError, OSError) as exc:
        cluster.stop()
        unavailable(f"PostgreSQL: {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> Iterator[str]:
    """A freshly migrated database: SQLite in tmp_path, or a new database in the cluster."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/cloud.db"
        migrate(url)
        yield url
        return
    cluster: Postgres = request.getfixturevalue("postgres_cluster")
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(cluster.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = cluster.url.rsplit("/", 1)[0] + f"/{name}"
    try:
        migrate(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on the test's database, for the test's own queries."""
    made = make_engine(database_url)
    yield made
    made.dispose()


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A started, anonymous Mosquitto on loopback, removed after the test."""
    started = Broker()
    try:
        started.start()
    except (LabError, OSError) as exc:
        started.remove()
        unavailable(f"Mosquitto: {exc}")
    yield started
    started.remove()


@pytest.fixture
def settings(database_url: str, broker: Broker) -> CloudSettings:
    """Cloud settings pointing at the test's database and broker (anonymous)."""
    return CloudSettings(
        database_url=database_url,
        broker_host=broker.host,
        broker_port=broker.port,
        broker_password="",
        ingest_batch=500,
        ingest_flush_interval=0.05,
    )


class Enrol(Protocol):
    """Gives routers rows, as enrolment would; returns their ids."""

    def __call__(self, *router_ids: str) -> list[str]: ...


@pytest.fixture
def enrol(engine: Engine) -> Enrol:
    """Insert Router rows (under one merchant and site) for the given ids."""

    def insert(*router_ids: str) -> list[str]:
        with Session(engine) as session, session.begin():
            merchant = Merchant(name=f"merchant-{uuid.uuid4().hex[:8]}")
            site = Site(name="shop")
            session.add(merchant)
            session.flush()
            site.merchant_id = merchant.id
            session.add(site)
            session.flush()
            session.add_all(Router(id=router_id, site_id=site.id) for router_id in router_ids)
        return list(router_ids)

    return insert


class Publisher:
    """A bare paho client that publishes as routers would and returns after each PUBACK."""

    def __init__(self, broker: Broker, username: str = "", password: str = "") -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex}")
        if username:
            self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self._connected = threading.Event()
        self.client.on_connect = lambda *_: self._connected.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise TimeoutError("publisher could not connect")

    def publish_many(self, messages: list[tuple[str, bytes]], retain: bool = False) -> None:
        """Publish every (topic, payload) at QoS 1; return when the broker has them all."""
        infos = [self.client.publish(t, p, qos=1, retain=retain) for t, p in messages]
        for info in infos:
            info.wait_for_publish(30)

    async def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish one message at QoS 1 from a thread, off the event loop."""
        await asyncio.to_thread(self.publish_many, [(topic, payload)], retain)

    async def publish_all(self, messages: list[tuple[str, bytes]]) -> None:
        """Publish many messages from a thread, off the event loop."""
        await asyncio.to_thread(self.publish_many, messages)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(broker: Broker) -> Iterator[Publisher]:
    """A connected paho publisher on the test's broker."""
    made = Publisher(broker)
    yield made
    made.close()


WorkerFactory = Callable[..., Awaitable[IngestWorker]]


@pytest.fixture
async def make_worker(settings: CloudSettings) -> AsyncIterator[WorkerFactory]:
    """Start IngestWorkers by name (each with its own engine); stop them after the test."""
    started: list[IngestWorker] = []

    async def start(name: str = "ingest-test", **options: object) -> IngestWorker:
        worker = IngestWorker(settings, name, in_flight=BROKER_IN_FLIGHT, **options)  # type: ignore[arg-type]
        started.append(worker)
        await worker.start()
        return worker

    yield start
    for worker in started:
        await worker.stop()


Check = Callable[[], object]


@pytest.fixture
def eventually() -> Callable[[Check, float], Awaitable[object]]:
    """Poll `check` (run in a thread) until it returns a truthy value, for `within` s at most."""

    async def poll(check: Check, within: float = 15.0) -> object:
        deadline = time.monotonic() + within
        while True:
            value = await asyncio.to_thread(check)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"still {value!r} after {within} s")
            await asyncio.sleep(0.02)

    return poll


@pytest.fixture
def world(engine: Engine) -> World:
    """Merchants A and B, a site and a router with history each, and the users."""
    return make_world(engine)


@pytest.fixture
async def client(
    database_url: str, engine: Engine, world: World
) -> AsyncIterator[TestClient[Any, Any]]:
    """The dashboard app over `world`, for aiohttp's test client."""
    async with TestClient(TestServer(dashboard_app(database_url, engine))) as made:
        yield made
