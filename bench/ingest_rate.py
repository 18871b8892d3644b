"""Ingest rate: events/s into SQLite and PostgreSQL with one and two workers, and the raw rate.

`python -m bench.ingest_rate [--events 200000] [--per-message 100] [--batch 2000] [--rounds 3]`

Each run drains one backlog, published while the workers' persistent sessions are away: the
workers (a process each, as in production) come back and the clock runs until every event is
committed. The workers send the routers a Receipt after each commit (before acknowledging);
one subscriber stands in for the routers and takes them at QoS 1, so the broker delivers
them as it would, and the run checks that every event was receipted. The raw rate: a bare
paho subscriber drains the same backlog the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.context import SpawnProcess
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import create_engine, func, insert, select, text

from agent import wire
from cloud.db import make_engine, migrate
from cloud.ingest import IngestWorker
from cloud.models import Event, Merchant, Router, Site
from cloud.settings import CloudSettings
from lab.broker import Broker
from lab.postgres import Postgres

BROKER_IN_FLIGHT = 100  # lab.broker's max_inflight_messages
ROUTERS = 20
_SPAWN = multiprocessing.get_context("spawn")


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def busy_since(start: tuple[int, int]) -> float:
    """The share of all CPUs that was busy since `start` (from cpu_ticks())."""
    busy, total = cpu_ticks()
    return (busy - start[0]) / max(1, total - start[1])


def cpu_seconds(pids: Iterable[int]) -> float:
    """User plus system CPU seconds the processes `pids` have used so far."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_processes(cluster: Postgres) -> list[int]:
    """The postmaster of `cluster` and every process it started (backends, writers)."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    found = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if parent == postmaster:
                found.append(int(entry.name))
    return found


@dataclass(frozen=True, slots=True)
class Rate:
    """One drained backlog: its time, what went through, how busy the CPUs were."""

    label: str
    seconds: float
    messages: int
    events: int
    cpu_busy: float
    cpu_per_event: dict[str, float] = field(default_factory=dict)  # part: CPU microseconds
    receipts: int = 0  # Receipt messages the routers got

    @property
    def events_per_second(self) -> float:
        """Events committed (or, for the raw rate, delivered) per second."""
        return self.events / self.seconds

    @property
    def messages_per_second(self) -> float:
        """MQTT messages per second."""
        return self.messages / self.seconds


@dataclass(frozen=True, slots=True)
class Backlog:
    """(topic, payload) of EventBatch messages, `per_message` events each."""

    messages: list[tuple[str, bytes]]
    per_message: int

    @property
    def events(self) -> int:
        """Events in all the messages."""
        return len(self.messages) * self.per_message


def backlog(total_events: int, per_message: int) -> Backlog:
    """EventBatch messages from ROUTERS routers, `per_message` events each."""
    messages: list[tuple[str, bytes]] = []
    for number in range(total_events // per_message):
        router_id = f"bench-{number % ROUTERS}"
        first = (number // ROUTERS) * per_message
        events = tuple(
            wire.Event(
                router_id=router_id,
                boot_id="boot-1",
                seq=seq,
                at=1_800_000_000.0 + seq,
                kind=wire.EventKind.DEVICE_SEEN,
                device_id="0123456789abcdef0123456789abcdef",
                randomized=True,
            )
            for seq in range(first, first + per_message)
        )
        body = wire.EventBatch(router_id=router_id, events=events).encode()
        messages.append((str(wire.Topic(router_id, wire.Channel.EVENTS)), body))
    return Backlog(messages, per_message)


def publish(broker: Broker, messages: list[tuple[str, bytes]]) -> None:
    """Publish every message at QoS 1 and return once the broker has acknowledged them all."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex}")
    client.max_inflight_messages_set(200)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for info in [client.publish(topic, body, qos=1) for topic, body in messages]:
            info.wait_for_publish(60)
    finally:
        client.disconnect()
        client.loop_stop()


class RouterReceipts:
    """Stands in for every router: takes their receipts at QoS 1 and counts the events named."""

    def __init__(self, broker: Broker) -> None:
        self.receipts = 0
        self.events = 0
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-routers")
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._count
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(f"{wire.TOPIC_ROOT}/+/{wire.Channel.RECEIPT.value}", qos=1)
        if not subscribed.wait(10):
            raise TimeoutError("the routers' stand-in could not subscribe")

    def _count(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        _, receipt = wire.decode_from(message.topic, bytes(message.payload))
        if isinstance(receipt, wire.Receipt):
            named = sum(r.last - r.first + 1 for r in receipt.ranges)
            with self._lock:
                self.receipts += 1
                self.events += named

    def wait_for(self, events: int, timeout: float) -> None:
        """Return once receipts have named `events` events; TimeoutError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while self.events < events:
            if time.monotonic() > deadline:
                raise TimeoutError(f"receipts named {self.events} of {events} events")
            time.sleep(0.01)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def raw_rate(work: Backlog) -> Rate:
    """How fast the broker hands the backlog to a bare paho subscriber that only counts."""
    with Broker() as broker:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="raw", clean_session=False)
        subscribed, drained, received = threading.Event(), threading.Event(), [0]
        client.on_subscribe = lambda *_: subscribed.set()
        client.connect(broker.host, broker.port)
        client.loop_start()
        client.subscribe(wire.INGEST_SHARE, qos=1)
        if not subscribed.wait(10):
            raise TimeoutError("the bare subscriber could not subscribe")
        client.disconnect()  # its session keeps what is published meanwhile
        client.loop_stop()
        publish(broker, work.messages)

        def count(*_: Any) -> None:
            received[0] += 1
            if received[0] == len(work.messages):
                drained.set()

        client.on_message = count
        ticks = cpu_ticks()
        started = time.perf_counter()
        client.reconnect()
        client.loop_start()
        if not drained.wait(300):
            raise TimeoutError(f"raw subscriber got {received[0]} of {len(work.messages)}")
        seconds = time.perf_counter() - started
        busy = busy_since(ticks)
        client.disconnect()
        client.loop_stop()
    return Rate("bare paho subscriber", seconds, len(work.messages), work.events, busy)


@dataclass(frozen=True, slots=True)
class Signals:
    """What one worker process and the bench tell each other."""

    armed: ProcessEvent
    go: ProcessEvent
    ready: ProcessEvent
    done: ProcessEvent
    written: Synchronized[int]


async def _serve(settings: CloudSettings, name: str, signals: Signals) -> None:
    armed, go, ready, done = signals.armed, signals.go, signals.ready, signals.done
    armed.set()
    await asyncio.to_thread(go.wait)
    worker = IngestWorker(settings, name, in_flight=BROKER_IN_FLIGHT)
    await worker.start()
    ready.set()
    while not done.is_set():
        signals.written.value = worker.stats.events
        await asyncio.sleep(0.02)
    await worker.stop()


def worker_process(settings: CloudSettings, name: str, signals: Signals) -> None:
    """A child process running one ingest worker until `done` is set."""
    asyncio.run(_serve(settings, name, signals))


class Workers:
    """N ingest worker processes that start together on `go` and stop on `done`."""

    def __init__(self, settings: CloudSettings, count: int) -> None:
        self.go, self.done = _SPAWN.Event(), _SPAWN.Event()
        self.signals = [
            Signals(_SPAWN.Event(), self.go, _SPAWN.Event(), self.done, _SPAWN.Value("q", 0))
            for _ in range(count)
        ]
        self.processes: list[SpawnProcess] = [
            _SPAWN.Process(target=worker_process, args=(settings, f"bench-ingest-{i}", signals))
            for i, signals in enumerate(self.signals)
        ]

    def arm(self) -> None:
        """Start the processes and wait until each has imported everything and waits for go."""
        for process in self.processes:
            process.start()
        if not all(signals.armed.wait(60) for signals in self.signals):
            raise TimeoutError("an ingest worker process did not start")

    def written(self) -> int:
        """Events the workers have committed so far."""
        return sum(signals.written.value for signals in self.signals)

    def stop(self) -> None:
        """Tell the workers to stop and wait for them."""
        self.done.set()
        for process in self.processes:
            process.join(60)
            if process.exitcode != 0:
                raise RuntimeError(f"{process.name} exited with {process.exitcode}")


def enrol_routers(url: str) -> None:
    """Give the bench routers their rows."""
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(insert(Merchant), [{"id": 1, "name": "bench"}])
        connection.execute(insert(Site), [{"id": 1, "merchant_id": 1, "name": "bench"}])
        connection.execute(
            insert(Router), [{"id": f"bench-{i}", "site_id": 1} for i in range(ROUTERS)]
        )
    engine.dispose()


def stored_events(url: str) -> int:
    """Rows in events."""
    with make_engine(url).connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(Event)) or 0)


def ingest_rate(
    label: str, url: str, workers: int, work: Backlog, batch: int, db: Callable[[], list[int]]
) -> Rate:
    """Drain the backlog into `url` with `workers` worker processes; time until all committed."""
    total = work.events
    with Broker() as broker:
        settings = CloudSettings(
            database_url=url,
            broker_host=broker.host,
            broker_port=broker.port,
            broker_password="",
            ingest_batch=batch,
        )
        first = Workers(settings, workers)  # creates the persistent sessions, then leaves
        first.arm()
        first.go.set()
        if not all(signals.ready.wait(30) for signals in first.signals):
            raise TimeoutError(f"{label}: a worker did not subscribe")
        first.stop()
        publish(broker, work.messages)
        routers = RouterReceipts(broker)
        second = Workers(settings, workers)
        second.arm()
        parts: dict[str, Callable[[], list[int]]] = {
            "ingest workers": lambda: [p.pid for p in second.processes if p.pid is not None],
            "database": db,
            "broker": lambda: [broker.process.pid] if broker.process else [],
        }
        spent = {part: cpu_seconds(pids()) for part, pids in parts.items()}
        ticks = cpu_ticks()
        started = time.perf_counter()
        second.go.set()
        deadline = started + 600
        while second.written() < total:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{label}: {second.written()} of {total} events after 600 s")
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        busy = busy_since(ticks)
        per_event = {
            part: (cpu_seconds(pids()) - spent[part]) * 1e6 / total for part, pids in parts.items()
        }
        routers.wait_for(total, 60)  # every stored event receipted (sent before the acks)
        routers.close()
        second.stop()
    if stored_events(url) != total:
        raise RuntimeError(f"{label}: {stored_events(url)} rows, expected {total}")
    return Rate(label, seconds, len(work.messages), total, busy, per_event, routers.receipts)


def fresh_database(kind: str, folder: str, cluster: Postgres) -> str:
    """A new, migrated database with the bench routers enrolled."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    if kind == "sqlite":
        url = f"sqlite:///{os.path.join(folder, name)}.db"
    else:
        admin = create_engine(cluster.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        url = cluster.url.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)
    enrol_routers(url)
    return url


SCENARIOS = [(kind, workers) for kind in ("sqlite", "postgresql") for workers in (1, 2)]


def median_rate(rates: list[Rate]) -> Rate:
    """The round with the median events/s (the lower middle one for an even count)."""
    return sorted(rates, key=lambda rate: rate.events_per_second)[(len(rates) - 1) // 2]


def main() -> None:
    """Measure every path over a few rounds and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--per-message", type=int, default=100)
    parser.add_argument("--batch", type=int, default=2000, help="ingest_batch: events per commit")
    parser.add_argument("--rounds", type=int, default=3, help="figures are medians over rounds")
    args = parser.parse_args()
    work = backlog(args.events, args.per_message)
    size = sum(len(body) for _, body in work.messages) / len(work.messages)
    print(
        f"{len(work.messages)} messages x {args.per_message} events ({size / 1024:.1f} KiB each), "
        f"ingest_batch {args.batch}, {os.cpu_count()} CPUs, median of {args.rounds} rounds"
    )
    raws: list[Rate] = []
    measured: dict[tuple[str, int], list[Rate]] = {scenario: [] for scenario in SCENARIOS}
    folder, cluster = tempfile.mkdtemp(prefix="loopspot-bench-"), Postgres().start()
    try:
        for number in range(args.rounds):
            raws.append(raw_rate(work))
            # Each round starts elsewhere, so a slow spell of a shared machine hits all paths.
            for kind, workers in SCENARIOS[number:] + SCENARIOS[:number]:
                url = fresh_database(kind, folder, cluster)
                label = f"{kind}, {workers} worker{'s' if workers > 1 else ''}"
                db = (
                    functools.partial(postgres_processes, cluster) if kind == "postgresql" else list
                )
                rate = ingest_rate(label, url, workers, work, args.batch, db)
                measured[kind, workers].append(rate)
                print(f"  round {number + 1}: {label}: {rate.events_per_second:,.0f} events/s")
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
    raw = median_rate(raws)
    rates = {scenario: median_rate(found) for scenario, found in measured.items()}
    print(
        f"\n| {'path':<22} |   msg/s |  events/s |  ÷ raw | ÷ 1 worker | CPU busy "
        "| CPU µs/event: workers + database + broker | receipts/msg |"
    )
    print(
        f"| {'-' * 22} | ------:| --------:| -----:| ---------:| -------:| ---------------- "
        "| ----------:|"
    )
    for kind, rate in [("raw", raw), *((kind, rate) for (kind, _), rate in rates.items())]:
        one = rates.get((kind, 1), rate)
        scaling = f"{rate.events_per_second / one.events_per_second:.2f}x" if kind != "raw" else ""
        cpu = " + ".join(f"{us:.1f}" for us in rate.cpu_per_event.values())
        receipts = f"{rate.receipts / rate.messages:.2f}" if kind != "raw" else ""
        print(
            f"| {rate.label:<22} | {rate.messages_per_second:>7,.0f} | "
            f"{rate.events_per_second:>9,.0f} | "
            f"{rate.events_per_second / raw.events_per_second:>6.3f} | {scaling:>10} | "
            f"{rate.cpu_busy:>8.0%} | {cpu} | {receipts:>11} |"
        )


if __name__ == "__main__":
    main()
