"""The agent's memory with the cloud link running and 10,000 events in its spool.

The real agent runs in a lab router namespace (as root). Its spool is filled with N events
before it starts, as after a long outage; then:
  1. link on, broker unreachable   the events wait; the link retries with backoff;
  2. link on, broker back          the link drains the spool (100 events per message);
  3. link off                      the same agent without `config cloud`, for comparison.
Peak (VmHWM) and current (VmRSS) resident set come from /proc/PID/status.

    sudo .venv/bin/python -m bench.link_memory [--events 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from agent.link.spool_db import SpoolDB
from agent.wire import Event, EventBatch, EventKind, decode, device_id
from bench import common as C
from lab import addresses as A
from lab.broker import Broker
from lab.client import connect
from lab.polling import wait_until
from lab.router import LAB_ALLIANCE_KEY, LAB_ROUTER_ID, MQTT_PORT, RouterAgent, cloud_section
from lab.topology import Lab
from lab.uplink import start_uplink

GOAL = 40 * 1024 * 1024
MIB = 1024 * 1024
SETTLE = 5.0  # seconds of link retries (or idling) before reading memory
DRAIN_TIMEOUT = 120.0


def fill_spool(workdir: Path, events: int) -> None:
    """Put `events` realistic events into the agent's spool, as a long outage would."""
    spool = SpoolDB(workdir / "tmpfs", workdir / "flash", LAB_ROUTER_ID, events * 2, 300)
    made = [
        Event(
            router_id=LAB_ROUTER_ID,
            at=1_790_000_000.0 + n,
            kind=EventKind.SESSION_ENDED,
            device_id=device_id(
                LAB_ALLIANCE_KEY, f"02:be:00:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}"
            ),
            randomized=True,
            session_bytes=12_345_678,
            duration=1800.5,
            reason="timeout",
        )
        for n in range(events)
    ]
    for start in range(0, events, 1000):
        spool.append(made[start : start + 1000])
    spool.close()


class Counter:
    """Counts the events the cloud receives from the lab router."""

    def __init__(self, port: int) -> None:
        self.count = 0
        self.first_at = self.last_at = 0.0
        self.done = threading.Event()
        self.expected = 0
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{os.getpid()}")
        self._client.on_connect = lambda c, *_: c.subscribe(
            f"loopspot/v1/{LAB_ROUTER_ID}/up/events", 1
        )
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()

    def _on_message(
        self, _client: paho.Client, _userdata: object, message: paho.MQTTMessage
    ) -> None:
        self.count += len(decode(bytes(message.payload), EventBatch).events)
        self.last_at = time.monotonic()
        self.first_at = self.first_at or self.last_at
        if self.count >= self.expected:
            self.done.set()

    def close(self) -> None:
        """Disconnect."""
        self._client.loop_stop()
        self._client.disconnect()


def one_round(events: int) -> dict[str, C.Memory | float]:
    """Measure the three cases once, each with a fresh lab and agent."""
    found: dict[str, C.Memory | float] = {}
    with Lab.create(1) as lab, Broker() as broker:
        C.first_start(lab)
        workdir = lab.workdir / "agent"
        fill_spool(workdir, events)
        options = {"spool_max_events": str(events * 2), "keepalive": "60"}
        sections = {"cloud": cloud_section(workdir, **options)}
        agent = RouterAgent(lab, sections=sections)
        agent.start()
        assert agent.process is not None
        time.sleep(SETTLE)  # the broker is unreachable: no uplink yet
        found["link on, broker unreachable"] = C.memory_of(agent.process.pid)
        counter = Counter(broker.port)
        counter.expected = events
        relay = start_uplink(lab.wan, {MQTT_PORT: broker.port}, A.WAN_IP)
        try:
            wait_until(lambda: _listening(lab), 10)
            if not counter.done.wait(DRAIN_TIMEOUT):
                raise RuntimeError(
                    f"only {counter.count} of {events} events arrived:\n{agent.logs()[-3000:]}"
                )
            found["drain seconds"] = counter.last_at - counter.first_at  # first batch to last
            time.sleep(1.0)
            found["link on, spool drained"] = C.memory_of(agent.process.pid)
        finally:
            counter.close()
            relay.terminate()
            relay.wait(5)
            agent.stop()
    with Lab.create(1) as lab:
        C.first_start(lab)
        agent = RouterAgent(lab)
        agent.start()
        assert agent.process is not None
        time.sleep(SETTLE)
        found["link off (no config cloud)"] = C.memory_of(agent.process.pid)
        agent.stop()
    return found


def _listening(lab: Lab) -> bool:
    try:
        connect(lab.router, A.WAN_IP, MQTT_PORT, timeout=0.5).close()
    except OSError:
        return False
    return True


def mib(size: float) -> str:
    """Bytes as MiB."""
    return f"{size / MIB:.1f}"


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Measure and print; return the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.link_memory", description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces)")
    floors = {
        "floor: import aiohttp.web": "import aiohttp.web",
        "floor: import agent.daemon": C.as_the_daemon_imports("agent.daemon"),
        "floor: + agent.link.runtime": C.as_the_daemon_imports("agent.daemon, agent.link.runtime"),
    }
    rounds = [one_round(args.events) for _ in range(args.rounds)]
    figures: dict[str, object] = {}
    print(f"\nAgent memory, link and {args.events:,} spooled events (median of {args.rounds})")
    print(f"{'case':<34} {'peak RSS MiB':>12} {'RSS MiB':>8} {'peak <= 40 MiB':>15}")
    for name, code in floors.items():
        taken = [C.floor(code) for _ in range(args.rounds)]
        peak = statistics.median(m.peak for m in taken)
        current = statistics.median(m.current for m in taken)
        figures[name] = {"peak": peak, "current": current}
        print(f"{name:<34} {mib(peak):>12} {mib(current):>8} {'':>15}")
    for name in (
        "link off (no config cloud)",
        "link on, broker unreachable",
        "link on, spool drained",
    ):
        measured = [r[name] for r in rounds if isinstance(r[name], C.Memory)]
        peak = statistics.median(m.peak for m in measured)  # type: ignore[union-attr]
        current = statistics.median(m.current for m in measured)  # type: ignore[union-attr]
        figures[name] = {"peak": peak, "current": current}
        met = "yes" if peak <= GOAL else f"no (+{mib(peak - GOAL)})"
        print(f"{name:<34} {mib(peak):>12} {mib(current):>8} {met:>15}")
    drain = statistics.median(float(r["drain seconds"]) for r in rounds)  # type: ignore[arg-type]
    figures["drain seconds"] = drain
    print(f"drained {args.events:,} events in {drain:.2f} s ({args.events / drain:,.0f} events/s)")
    return figures


if __name__ == "__main__":
    main()
