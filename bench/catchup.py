"""Catch-up: after an outage at 50 shops, how long until every spool is drained into the database.

`python -m bench.catchup [--shops 50] [--minutes 10] [--rates 2,10] [--rounds 3]`

Each shop is a real agent link in this one asyncio process: its own SpoolDB (state on tmpfs,
/dev/shm; snapshots in a temporary folder standing in for flash), a Spooler and a Link with
an idle stub router, connecting in plain TCP (no TLS) to a throwaway Mosquitto on loopback.
During the outage the links are not running: each shop's events of `--minutes` at `--rates`
events/s go through its Spooler into sqlite (not timed). Then the uplink comes back: every
link starts at once (a reconnect storm) while one or two ingest worker processes store into
PostgreSQL (a throwaway cluster) or SQLite, until the database holds every event and every
spool is empty (every receipt processed). Then one bare paho publisher sends as many events
in the same batches to the same workers: what many reconnecting routers cost against one.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from sqlalchemy import delete, func, insert, select, text

from agent.events import Emitter
from agent.link.identity import Identity
from agent.link.link import Link
from agent.link.spool import BATCH_SIZE
from agent.link.spool_db import SpoolDB
from agent.link.spooler import Spooler
from agent.settings import Settings
from agent.wire import Channel, Event, EventBatch, RouterConfig, Topic
from bench import common as C
from bench.ingest_rate import Workers, cpu_seconds, fresh_database, postgres_processes, publish
from cloud.db import make_engine
from cloud.models import DeadLetter, Router
from cloud.models import Event as StoredEvent
from cloud.settings import CloudSettings
from lab.broker import Broker
from lab.postgres import Postgres

ALLIANCE_KEY = bytes(range(16))
TMPFS = Path("/dev/shm") if Path("/dev/shm").is_dir() else None  # a router's spool is on tmpfs
POLL = 0.02  # seconds between looks at the database and at the spools
DRAIN_TIMEOUT = 300.0  # seconds a drain may take before the bench gives up
SCENARIOS = [(kind, workers) for kind in ("postgresql", "sqlite") for workers in (1, 2)]
Origins = dict[tuple[str, str], int]  # (router_id, boot_id): n, the events with seq 1 to n


class IdleRouter:
    """The LocalRouter of a shop nobody is using: config 0, no clients, every call a no-op."""

    config_version = 0

    def clients(self) -> int:
        return 0

    async def apply_config(self, config: RouterConfig) -> str:
        return ""

    async def revoke_device(self, device_id: str) -> str:
        return ""

    async def reload_config(self) -> str:
        return ""

    async def coupons_spent(self, coupon_ids: tuple[str, ...]) -> str:
        return ""


class Shop:
    """One router's cloud side as the agent wires it: spool writer and flusher, and the link."""

    def __init__(self, router_id: str, tmpfs: Path, flash: Path, broker: Broker) -> None:
        agent, self.router_id = Settings(), router_id
        spool = agent.spool_max_events, agent.spool_flush_interval
        self.spooler = Spooler(partial(SpoolDB, tmpfs, flash, router_id, *spool))
        identity = Identity(router_id, broker.host, broker.port, ALLIANCE_KEY, tls=None)
        self.link = Link(
            identity,
            self.spooler,
            IdleRouter(),
            keepalive=agent.cloud_keepalive,
            status_interval=agent.cloud_status_interval,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._link: asyncio.Task[None] | None = None

    async def spool(self, events: list[Event]) -> None:
        """Open the spool, start its writer and flusher; return once `events` are stored."""
        await self.spooler.open()
        name = self.router_id
        self._tasks = [
            asyncio.create_task(self.spooler.run_writer(), name=f"{name}:spool-writer"),
            asyncio.create_task(self.spooler.run_flusher(), name=f"{name}:spool-flusher"),
        ]
        for event in events:
            self.spooler.put(dataclasses.replace(event, router_id=name))
        while self.spooler.stats.depth < len(events):
            self.spooler.waiting.clear()
            await self.spooler.waiting.wait()

    def connect(self) -> None:
        """The uplink is back: start the link."""
        self._link = asyncio.create_task(self.link.run(), name=f"{self.router_id}:link")

    async def close(self) -> None:
        """Stop the link, the writer and the flusher; close the spool."""
        if self._link is not None:
            await self.link.stop(self._link)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.spooler.close()


class Database:
    """The bench's own queries on the cloud database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)

    def clear(self) -> None:
        """No events and no dead letters: the next drain starts from empty tables."""
        with self.engine.begin() as connection:
            if self.url.startswith("sqlite"):
                connection.execute(delete(StoredEvent))
            else:
                connection.execute(text("TRUNCATE events"))
            connection.execute(delete(DeadLetter))

    def count(self) -> int:
        """Rows in events."""
        with self.engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(StoredEvent)) or 0)

    def check(self, expected: Origins) -> str:
        """What is wrong, or "": events must be exactly `expected`, once each; no dead letter."""
        seq = StoredEvent.seq
        with self.engine.connect() as connection:
            dead = connection.scalar(select(func.count()).select_from(DeadLetter))
            groups = connection.execute(
                select(StoredEvent.router_id, StoredEvent.boot_id, func.count())
                .add_columns(func.count(seq.distinct()), func.min(seq), func.max(seq))
                .group_by(StoredEvent.router_id, StoredEvent.boot_id)
            ).all()
        rows, unique = sum(g[2] for g in groups), sum(g[3] for g in groups)
        found = {(r, b): n for r, b, n, _, low, high in groups if low == 1 and high == n}
        total = sum(expected.values())
        wrong = [
            f"{rows:,} rows for {total:,} events" if rows != total else "",
            f"{rows - unique:,} duplicates" if rows != unique else "",
            f"{dead} dead letters" if dead else "",
            "not the events spooled" if found != expected else "",
        ]
        return "; ".join(w for w in wrong if w)


@dataclass(frozen=True, slots=True)
class Cloud:
    """One setup's cloud: database, broker, ingest workers, and the PostgreSQL cluster if used."""

    database: Database
    broker: Broker
    workers: Workers
    cluster: Postgres | None

    def cpu(self) -> float:
        """CPU seconds the workers, the broker and PostgreSQL have used so far."""
        pids = [p.pid for p in self.workers.processes if p.pid is not None]
        pids += [self.broker.process.pid] if self.broker.process else []
        return cpu_seconds(pids + (postgres_processes(self.cluster) if self.cluster else []))


@dataclass(frozen=True, slots=True)
class Drain:
    """One catch-up and, in the same setup, the bare publisher's run of as many events."""

    events: int
    connected: float  # s until every link was connected
    stored: float  # s until the database held every event
    emptied: float  # s until every spool was empty: every receipt processed
    bare: float = 0.0  # s until the database held the bare publisher's events
    resent: int = 0  # events the workers were offered again (redeliveries, resends)
    cpu: float = 0.0  # CPU s of this process (all the routers) per second of the catch-up
    cloud_us: float = 0.0  # CPU µs of workers, broker and PostgreSQL per event, catch-up
    bare_cloud_us: float = 0.0  # the same for the bare publisher's run
    wrong: str = ""  # "" when the database held exactly what was spooled and published


async def stored_all(cloud: Cloud, since: int, total: int) -> float:
    """Seconds until the database holds `total` events (COUNT looked at every POLL s)."""
    # COUNT only once the workers have written that many: COUNT(*) of 300,000 rows takes
    # PostgreSQL 14 ms, and that every 20 ms would take CPU the drain needs.
    started, database, workers = time.perf_counter(), cloud.database, cloud.workers
    while workers.written() - since < total or await asyncio.to_thread(database.count) < total:
        if time.perf_counter() - started > DRAIN_TIMEOUT:
            raise C.BenchError(f"{database.count():,} of {total:,} events after {DRAIN_TIMEOUT} s")
        await asyncio.sleep(POLL)
    return time.perf_counter() - started


async def catch_up(cloud: Cloud, shops: list[Shop], events: list[Event]) -> Drain:
    """Spool `events` in every shop while the links are down, then start them all; time it."""
    await asyncio.gather(*(shop.spool(events) for shop in shops))
    total, since = len(events) * len(shops), cloud.workers.written()
    cloud_cpu = await asyncio.to_thread(cloud.cpu)
    cpu, started = time.process_time(), time.perf_counter()
    for shop in shops:
        shop.connect()
    stored = asyncio.create_task(stored_all(cloud, since, total), name="stored")
    connected = emptied = -1.0
    while emptied < 0:
        await asyncio.sleep(POLL)
        elapsed = time.perf_counter() - started
        if connected < 0 and all(shop.link.connected.is_set() for shop in shops):
            connected = elapsed
        if all(shop.spooler.stats.depth == 0 for shop in shops):
            emptied = elapsed
        elif elapsed > DRAIN_TIMEOUT:
            raise C.BenchError(f"catch-up: spools not empty after {DRAIN_TIMEOUT:.0f} s")
    held = await stored
    cpu = (time.process_time() - cpu) / max(held, emptied)
    cloud_us = (await asyncio.to_thread(cloud.cpu) - cloud_cpu) * 1e6 / total
    expected = {(shop.router_id, shop.spooler.boot_id): len(events) for shop in shops}
    wrong = await asyncio.to_thread(cloud.database.check, expected)
    await asyncio.sleep(0.1)  # the workers report what they wrote every 20 ms
    resent = cloud.workers.written() - since - total
    return Drain(total, connected, held, emptied, 0.0, resent, cpu, cloud_us, 0.0, wrong)


@dataclass(frozen=True, slots=True)
class Outage:
    """What each shop spools, and the same events as the bare publisher's messages."""

    shops: list[str]
    events: list[Event]
    messages: list[tuple[str, bytes]]  # EventBatches of BATCH_SIZE, the shops' interleaved
    origins: Origins  # of the bare publisher's events


def outage(shops: int, rate: int, minutes: float) -> Outage:
    """A shop's events of `minutes` at `rate` a second, as shoppers make them: seen, portal,
    left; and the same for the bare publisher, stamped and batched."""
    events: list[Event] = []
    emitter, count = Emitter("", ALLIANCE_KEY, events.append), round(rate * minutes * 60)
    for number in range(count):
        at, visitor = time.time() - minutes * 60 + number / rate, (number // 3).to_bytes(4, "big")
        mac = "02:00:" + ":".join(f"{octet:02x}" for octet in visitor)
        if number % 3 == 0:
            emitter.device_seen(mac, at)
        elif number % 3 == 1:
            emitter.portal_viewed(mac, at)
        else:
            emitter.device_left(mac, at, 2 / rate)
    per_shop: list[list[tuple[str, bytes]]] = []
    origins: Origins = {}
    for shop in (f"bare-{n:02d}" for n in range(shops)):
        boot, topic = uuid.uuid4().hex[:16], str(Topic(shop, Channel.EVENTS))
        stamped = [
            dataclasses.replace(event, router_id=shop, boot_id=boot, seq=seq)
            for seq, event in enumerate(events, start=1)
        ]
        batches = [stamped[i : i + BATCH_SIZE] for i in range(0, len(stamped), BATCH_SIZE)]
        per_shop.append([(topic, EventBatch(shop, tuple(b)).encode()) for b in batches])
        origins[shop, boot] = len(events)
    interleaved = itertools.chain.from_iterable(itertools.zip_longest(*per_shop))
    names = [f"shop-{n:02d}" for n in range(shops)]
    return Outage(names, events, [m for m in interleaved if m is not None], origins)


async def measure(cloud: Cloud, work: Outage, tmpfs: Path, flash: Path) -> Drain:
    """A catch-up of the shops, then a bare publisher's run of as many events; each from empty."""
    shops = [Shop(name, tmpfs / name, flash / name, cloud.broker) for name in work.shops]
    try:
        await asyncio.to_thread(cloud.database.clear)
        drain = await catch_up(cloud, shops, work.events)
    finally:
        await asyncio.gather(*(shop.close() for shop in shops), return_exceptions=True)
    await asyncio.to_thread(cloud.database.clear)
    total, since = sum(work.origins.values()), cloud.workers.written()
    cpu = await asyncio.to_thread(cloud.cpu)
    with ThreadPoolExecutor(1, thread_name_prefix="bare-publisher") as pool:
        loop = asyncio.get_running_loop()
        sent = loop.run_in_executor(pool, publish, cloud.broker, work.messages)
        seconds = await stored_all(cloud, since, total)
        bare_cloud_us = (await asyncio.to_thread(cloud.cpu) - cpu) * 1e6 / total
        await sent
    wrong = await asyncio.to_thread(cloud.database.check, work.origins)
    wrong = "; ".join(filter(None, [drain.wrong, wrong]))
    return dataclasses.replace(drain, bare=seconds, bare_cloud_us=bare_cloud_us, wrong=wrong)


def one_setup(
    url: str, cluster: Postgres | None, workers: int, batch: int, outages: dict[int, Outage]
) -> dict[int, Drain]:
    """One broker, database and set of workers; a catch-up and a bare run at every rate."""
    measured: dict[int, Drain] = {}
    names = {n for work in outages.values() for n in [*work.shops, *(r for r, _ in work.origins)]}
    with Broker() as broker:
        database = Database(url)
        with database.engine.begin() as connection:  # enrolled, under the ingest bench's site
            connection.execute(insert(Router), [{"id": name, "site_id": 1} for name in names])
        settings = CloudSettings(database_url=url, ingest_batch=batch)  # no password: anonymous
        settings = dataclasses.replace(settings, broker_host=broker.host, broker_port=broker.port)
        pool = Workers(settings, workers)
        try:
            pool.arm()
            pool.go.set()
            if not all(signals.ready.wait(30) for signals in pool.signals):
                raise C.BenchError("an ingest worker did not subscribe")
            for rate, work in outages.items():
                with (
                    tempfile.TemporaryDirectory(prefix="loopspot-catchup-", dir=TMPFS) as tmpfs,
                    tempfile.TemporaryDirectory(prefix="loopspot-catchup-flash-") as flash,
                ):
                    cloud = Cloud(database, broker, pool, cluster)
                    measured[rate] = asyncio.run(measure(cloud, work, Path(tmpfs), Path(flash)))
        finally:
            pool.stop()
            database.engine.dispose()
    return measured


def median_drain(drains: list[Drain]) -> Drain:
    """Each figure's median over rounds; `resent` the most, `wrong` every round's fault."""
    timed = ("connected", "stored", "emptied", "bare", "cpu", "cloud_us", "bare_cloud_us")
    medians = {name: C.median(getattr(d, name) for d in drains) for name in timed}
    wrong = "; ".join(d.wrong for d in drains if d.wrong)
    return Drain(drains[0].events, resent=max(d.resent for d in drains), wrong=wrong, **medians)


HEADERS = [
    "events/s per shop", "events", "database, workers", "all links connected",
    "database holds all", "spools empty", "events/s stored", "bare publisher: stored",
    "bare events/s", "catch-up / bare", "cloud CPU µs/event: catch-up / bare", "re-sent (max)",
    "routers' CPU (cores)", "exactly once",
]  # fmt: skip


def row(rate: int, label: str, d: Drain) -> list[object]:
    """One line of the table: seconds, rates, and the catch-up against the bare publisher."""
    return [
        rate, f"{d.events:,}", label, f"{d.connected:.2f}", f"{d.stored:.2f}", f"{d.emptied:.2f}",
        f"{d.events / d.stored:,.0f}", f"{d.bare:.2f}", f"{d.events / d.bare:,.0f}",
        f"{d.stored / d.bare:.2f}x", f"{d.cloud_us:.0f} / {d.bare_cloud_us:.0f}", f"{d.resent:,}",
        f"{d.cpu:.2f}", "yes" if not d.wrong else f"**no**: {d.wrong}",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Catch up at every rate into each database with one and two workers; print medians."""
    parser = argparse.ArgumentParser(prog="python -m bench.catchup", description=__doc__)
    parser.add_argument("--shops", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=10.0, help="the outage's length")
    parser.add_argument("--rates", type=C.parse_counts, default=[2, 10], help="events/s a shop")
    parser.add_argument("--batch", type=int, default=CloudSettings().ingest_batch)
    parser.add_argument("--rounds", type=int, default=3, help="figures are medians over rounds")
    args = parser.parse_args(argv)
    capacity = Settings().spool_max_events
    C.progress(C.setting())
    C.progress(f"{args.shops} shops, {args.minutes:g} min, spool capacity {capacity:,}")
    fitting = [rate for rate in args.rates if rate * args.minutes * 60 <= capacity]
    if fitting != args.rates:
        C.progress(f"skipped {sorted(set(args.rates) - set(fitting))}/s: more than a spool holds")
    outages = {rate: outage(args.shops, rate, args.minutes) for rate in fitting}
    results: dict[tuple[int, str, int], list[Drain]] = {}
    folder, cluster = tempfile.mkdtemp(prefix="loopspot-bench-"), Postgres().start()
    try:
        for number in range(args.rounds):
            for kind, workers in SCENARIOS[number:] + SCENARIOS[:number]:
                url = fresh_database(kind, folder, cluster)
                used = cluster if kind == "postgresql" else None
                for rate, d in one_setup(url, used, workers, args.batch, outages).items():
                    results.setdefault((rate, kind, workers), []).append(d)
                    C.progress(
                        f"round {number + 1}: {kind}, {workers} worker(s), {rate}/s: stored "
                        f"{d.stored:.2f} s, spools empty {d.emptied:.2f} s, bare {d.bare:.2f} s "
                        + (f"WRONG: {d.wrong}" if d.wrong else "")
                    )
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
    medians = {key: median_drain(drains) for key, drains in sorted(results.items())}
    label = {key: f"{key[1]}, {key[2]} worker{'s' if key[2] > 1 else ''}" for key in medians}
    title = f"Catch-up of {args.shops} shops after {args.minutes:g} min"
    rows = [row(key[0], label[key], d) for key, d in medians.items()]
    C.report(f"{title} (seconds, median of {args.rounds} rounds)", HEADERS, rows)
    return {f"{key[0]}/s, {label[key]}": dataclasses.asdict(d) for key, d in medians.items()}


if __name__ == "__main__":
    main()
