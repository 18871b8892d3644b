"""Rollup upkeep: events/s through IngestStore with the visitor rollups and without, same run.

`python -m bench.rollup_rate [--events 100000] [--rounds 3] [--databases postgresql,sqlite]`

Each round writes the same shop days (20 routers at 10 sites, 5,000 devices over 7 days;
per visit a device_seen and a device_left, and for 40% a portal view, terms, a session
start and end) into a fresh, migrated database, in batches of 500 events (the shipped
ingest_batch) of messages of 100 (a router spool's), once with rollups and once without,
alternating which goes first. Messages are decoded before the clock starts, so both
times are the store's: planning, SQL and commit. The rollups' own rate is the events
divided by the time they add; the goal is that it is at least the ingest's rate without
them, so the rollups never hold ingest up. PostgreSQL is a throwaway cluster (lab.postgres,
`fsync` off).
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session

from agent import wire
from bench import common as C
from cloud.db import make_engine, migrate
from cloud.ingest_core import Accepted, Inbound, read_message
from cloud.ingest_store import IngestStore
from cloud.models import Event, Merchant, Router, Site, SiteHour
from lab.postgres import Postgres

ROUTERS, SITES, DEVICES, DAYS = 20, 10, 5000, 7
DAY0 = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
PER_MESSAGE, PER_WRITE = 100, 5  # events per message, messages per write (500 events)


def shop_days(total: int, seed: int = 1) -> list[list[Inbound]]:
    """About `total` events of shop days, as writes of decoded EventBatch messages."""
    chance = random.Random(seed)
    events: defaultdict[str, list[wire.Event]] = defaultdict(list)

    def emit(router_id: str, kind: wire.EventKind, at: float, **details: Any) -> None:
        seq = len(events[router_id])
        events[router_id].append(
            wire.Event(router_id=router_id, boot_id="b", seq=seq, at=at, kind=kind, **details)
        )

    made = 0
    while made < total:
        router_id = f"bench-{chance.randrange(ROUTERS)}"
        who = f"{chance.randrange(DEVICES):032x}"
        start = DAY0 + chance.randrange(DAYS) * 86400 + chance.uniform(8 * 3600, 22 * 3600)
        dwell = chance.choice((60.0, 200.0, 600.0, 1500.0, 3000.0, 5000.0))
        emit(router_id, wire.EventKind.DEVICE_SEEN, start, device_id=who)
        made += 2
        if chance.random() < 0.4:
            emit(router_id, wire.EventKind.PORTAL_VIEWED, start + 3, device_id=who)
            emit(
                router_id,
                wire.EventKind.TERMS_ACCEPTED,
                start + 8,
                device_id=who,
                terms_version="v1",
            )
            emit(router_id, wire.EventKind.SESSION_STARTED, start + 9, device_id=who)
            emit(
                router_id,
                wire.EventKind.SESSION_ENDED,
                start + dwell - 1,
                device_id=who,
                session_bytes=chance.randrange(10**8),
                duration=dwell - 10,
            )
            made += 4
        emit(router_id, wire.EventKind.DEVICE_LEFT, start + dwell, device_id=who, duration=dwell)
    messages: list[Inbound] = []
    for router_id, own in sorted(events.items()):
        own.sort(key=lambda e: e.at)  # a spool sends in the order things happened
        own = [replace(e, seq=seq) for seq, e in enumerate(own)]
        topic = str(wire.Topic(router_id, wire.Channel.EVENTS))
        for i in range(0, len(own), PER_MESSAGE):
            body = wire.EventBatch(router_id=router_id, events=tuple(own[i : i + PER_MESSAGE]))
            messages.append(read_message(topic, body.encode()))
    chance.shuffle(messages)  # routers interleave at the broker
    return [messages[i : i + PER_WRITE] for i in range(0, len(messages), PER_WRITE)]


@contextmanager
def fresh_database(kind: str, cluster: Postgres | None, folder: Path) -> Iterator[str]:
    """A migrated, empty database with the bench's sites and routers; its URL."""
    if kind == "sqlite":
        url = f"sqlite:///{folder}/bench-{uuid.uuid4().hex[:8]}.db"
        migrate(url)
    else:
        assert cluster is not None
        name = f"bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(cluster.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = cluster.url.rsplit("/", 1)[0] + f"/{name}"
        migrate(url)
    engine = make_engine(url)
    with Session(engine) as session, session.begin():
        merchant = Merchant(name="bench")
        session.add(merchant)
        session.flush()
        sites = [Site(name=f"shop-{n}", merchant_id=merchant.id) for n in range(SITES)]
        session.add_all(sites)
        session.flush()
        session.add_all(
            Router(id=f"bench-{n}", site_id=sites[n % SITES].id) for n in range(ROUTERS)
        )
    engine.dispose()
    try:
        yield url
    finally:
        if kind == "postgresql":
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def one_run(url: str, writes: list[list[Inbound]], rollups: bool) -> tuple[float, int, int]:
    """Seconds to write every batch; events stored; rollup hours stored."""
    engine = make_engine(url)
    try:
        store = IngestStore(engine, rollups=rollups)
        started = time.perf_counter()
        for batch in writes:
            store.write(batch, datetime.now(UTC))
        seconds = time.perf_counter() - started
        with engine.connect() as connection:
            events = int(connection.scalar(select(func.count()).select_from(Event)) or 0)
            hours = int(connection.scalar(select(func.count()).select_from(SiteHour)) or 0)
    finally:
        engine.dispose()
    return seconds, events, hours


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run the comparison and print it; the figures, by database."""
    parser = argparse.ArgumentParser(prog="python -m bench.rollup_rate", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--databases", type=C.parse_names, default=["postgresql", "sqlite"])
    args = parser.parse_args(argv)
    print(f"  .. {C.setting()}", flush=True)
    writes = shop_days(args.events)
    total = sum(events_in(batch) for batch in writes)
    figures: dict[str, object] = {}
    rows = []
    cluster = Postgres().start() if "postgresql" in args.databases else None
    try:
        with TemporaryDirectory(prefix="loopspot-bench-") as folder:
            for kind in args.databases:
                times: dict[bool, list[float]] = {True: [], False: []}
                for index in range(args.rounds):
                    C.progress(f"{kind} round {index + 1}/{args.rounds}")
                    for rollups in (index % 2 == 0, index % 2 == 1):
                        with fresh_database(kind, cluster, Path(folder)) as url:
                            seconds, stored, hours = one_run(url, writes, rollups)
                        if stored != total or (rollups and not hours):
                            raise C.BenchError(f"{kind}: stored {stored} of {total} events")
                        times[rollups].append(seconds)
                without, with_ = C.median(times[False]), C.median(times[True])
                added = max(with_ - without, 1e-9)
                figure = {
                    "events": total,
                    "without_per_s": total / without,
                    "with_per_s": total / with_,
                    "ratio": without / with_,
                    "rollups_alone_per_s": total / added,
                }
                figures[kind] = figure
                rows.append(
                    (
                        kind,
                        f"{total:,}",
                        f"{figure['without_per_s']:,.0f}",
                        f"{figure['with_per_s']:,.0f}",
                        f"{figure['ratio']:.2f}x",
                        f"{figure['rollups_alone_per_s']:,.0f}",
                        "yes" if total / added >= total / without else "no",
                    )
                )
    finally:
        if cluster is not None:
            cluster.stop()
    C.report(
        f"Rollup upkeep, median of {args.rounds} rounds",
        (
            "database",
            "events",
            "ingest without rollups (events/s)",
            "with rollups (events/s)",
            "with / without",
            "rollups alone (events/s)",
            "rollups alone >= ingest",
        ),
        rows,
    )
    return figures


def events_in(batch: list[Inbound]) -> int:
    """Events in one write."""
    return sum(
        len(item.message.events)
        for item in batch
        if isinstance(item, Accepted) and isinstance(item.message, wire.EventBatch)
    )


if __name__ == "__main__":
    main()
