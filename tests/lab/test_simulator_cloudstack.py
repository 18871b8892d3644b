"""The simulator beside the lab's CloudStack, as `make demo` will run it: its routers enrol
in the stack's database and reach its broker on loopback, next to the lab's real router."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.models import Event, Router
from lab.cloud import CloudStack
from lab.simulator import Simulator

pytestmark = pytest.mark.lab


async def test_the_simulator_plays_into_the_lab_cloud(cloud: CloudStack, tmp_path: Path) -> None:
    first_day = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
    await asyncio.to_thread(cloud.wait_subscribed)  # else its first batches wait for a resend
    sim = Simulator(cloud.settings, tmp_path / "sim", routers=2, days=1, speed=30_000.0,
                    seed=3, connect_host="127.0.0.1", first_day=first_day)  # fmt: skip
    await sim.start()
    try:
        await sim.play()
        async with asyncio.timeout(60):
            await sim.drain()
        ids = [shop.router.router_id for shop in sim.shops]
        with Session(cloud.engine) as session:
            stored = session.scalar(select(func.count()).select_from(Event))
            states = set(session.scalars(select(Router.state).where(Router.id.in_(ids))))
        assert stored == len(sim.happenings)
        assert states == {"online"}
    finally:
        await sim.stop()
