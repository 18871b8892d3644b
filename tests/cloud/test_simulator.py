"""The simulator on a real cloud: Mosquitto with the generated config (TLS, one certificate
per router), an ingest worker and SQLite. A short day of 3 routers lands exactly once."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from agent.wire import CommandAction, device_id
from cloud.broker_config import service_password
from cloud.db import make_engine, migrate, sessions
from cloud.fleet_push import broker_publisher, push_config, send_command
from cloud.ingest import IngestWorker
from cloud.models import Command, DeadLetter, Event, Router, RouterConfig
from cloud.settings import CloudSettings
from lab.sim_day import counts_by_kind
from lab.simulator import Simulator
from tests.cloud import test_broker_acl as acl
from tests.cloud.test_broker_acl import CloudBroker
from tests.lab.test_sim_day import has_three_peaks

cloud_broker = acl.cloud_broker  # the generated config, run for real
FIRST_DAY = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
SPEED = 20_000.0  # the day in about 3 s
WITHIN = 60.0
Eventually = Callable[[Callable[[], object], float], Awaitable[object]]


@pytest.fixture
async def cloud(cloud_broker: CloudBroker, tmp_path: Path) -> AsyncIterator[CloudSettings]:
    """The broker's settings with a migrated SQLite database and one ingest worker running."""
    settings = replace(
        cloud_broker.settings,
        database_url=f"sqlite:///{tmp_path}/cloud.db",
        ingest_flush_interval=0.05,
    )
    migrate(settings.database_url)
    worker = IngestWorker(replace(settings, broker_password=service_password(settings)), "ingest")
    await worker.start()
    yield settings
    await worker.stop()


@pytest.fixture
def engine(cloud: CloudSettings) -> Iterator[Engine]:
    made = make_engine(cloud.database_url)
    yield made
    made.dispose()


async def test_a_simulated_day_of_three_routers_lands_exactly_once_with_three_peaks(
    cloud: CloudSettings, engine: Engine, tmp_path: Path, eventually: Eventually
) -> None:
    sim = Simulator(cloud, tmp_path / "sim", routers=3, days=1, speed=SPEED, seed=11,
                    first_day=FIRST_DAY)  # fmt: skip
    await sim.start()
    try:
        ids = {shop.router.router_id for shop in sim.shops}
        await sim.play()
        async with asyncio.timeout(WITHIN):
            await sim.drain()  # every event receipted: the spools are empty

        with Session(engine) as session:
            counted = select(Event.kind, func.count()).group_by(Event.kind)
            kinds = {kind: n for kind, n in session.execute(counted)}
            rows = session.scalars(select(Event)).all()
            routers = session.scalars(select(Router).where(Router.id.in_(ids))).all()
            dead = session.scalar(select(func.count()).select_from(DeadLetter))
        assert kinds == dict(counts_by_kind(sim.happenings))
        assert len({(e.router_id, e.boot_id, e.seq) for e in rows}) == len(sim.happenings)
        assert dead == 0
        assert {e.router_id for e in rows} == ids
        hours = Counter(datetime.fromtimestamp(e.at, UTC).hour for e in rows
                        if e.kind == "device_seen")  # fmt: skip
        assert has_three_peaks(hours), sorted(hours.items())
        assert {(r.id, r.state) for r in routers} == {(i, "online") for i in ids}
        assert all(r.agent_version and r.enrolled_at is not None for r in routers)

        key = sim.shops[0].router.alliance_key
        macs = {h.mac for h in sim.happenings}
        stored = {e.device_id for e in rows}
        assert all(re.fullmatch(r"[0-9a-f]{32}", d) for d in stored)
        assert stored == {device_id(key, mac) for mac in macs}  # pseudonyms, never a MAC
    finally:
        await sim.stop()
    await eventually(lambda: _states(engine, ids) == {"offline"}, WITHIN)


def _states(engine: Engine, ids: set[str]) -> set[str]:
    with Session(engine) as session:
        return set(session.scalars(select(Router.state).where(Router.id.in_(ids))))


async def test_a_simulated_router_acknowledges_a_config_push_and_a_command(
    cloud: CloudSettings, engine: Engine, tmp_path: Path, eventually: Eventually
) -> None:
    sim = Simulator(cloud, tmp_path / "sim", routers=1, days=1, speed=SPEED, seed=2,
                    first_day=FIRST_DAY)  # fmt: skip
    await sim.start()
    try:
        router_id = sim.shops[0].router.router_id
        await asyncio.to_thread(push_config, sessions(engine), broker_publisher(cloud),
                                router_id, {"session_timeout": 1800})  # fmt: skip

        def acknowledged() -> bool:
            with Session(engine) as session:
                config = session.get(RouterConfig, (router_id, 1))
                router = session.get(Router, router_id)
                return bool(config and config.acked_at and router and router.config_version == 1)

        await eventually(acknowledged, WITHIN)
        assert sim.shops[0].local.configs[0].session_timeout == 1800
        command = await asyncio.to_thread(send_command, sessions(engine), broker_publisher(cloud),
                                          router_id, CommandAction.SEND_STATUS)  # fmt: skip

        def answered() -> bool:
            with Session(engine) as session:
                row = session.get(Command, command.id)
                return bool(row and row.acked_at and row.ok)

        await eventually(answered, WITHIN)
    finally:
        await sim.stop()
