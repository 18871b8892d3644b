"""What one counter poll costs the agent, and what it does to an accept that arrives meanwhile.

A diagnostic behind docs/benchmarks.md's "What is slow in the agent". For each N, a fresh
process inside the lab's router namespace starts an AgentService (libnftables) with N
sessions and measures:
  - gate.read_clients() and its parts (a JSON listing of each set);
  - peak and current RSS around one read, and RSS after malloc_trim(0);
  - accept alone, and accept issued 1 ms after a poll started (they share the nft thread).

    sudo .venv/bin/python -m bench.poll_cost [--clients 1000,10000]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.gate.gate import Gate
from agent.gate.nft import LibNftables
from agent.ruleset import CLIENTS_SET, DOWNLOADS_SET, TABLE, GateSpec
from agent.service import AgentService
from agent.store import SessionStore
from bench import common as C
from bench.grant_kernel import bench_settings

ACCEPTS = 50
DURING_POLL = 15
INNER_TIMEOUT = 600.0
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class PollCost:
    """One N's figures; times in seconds, memory in bytes."""

    clients: int
    read_clients: float
    list_clients_json: float
    list_downloads_json: float
    rss_before: int
    peak_after_read: int
    rss_after_read: int
    rss_after_trim: int
    accept_alone_p50: float
    accept_during_poll_p50: float
    accept_during_poll_max: float


def _timed(step: Callable[[], object]) -> float:
    began = time.perf_counter()
    step()
    return time.perf_counter() - began


async def measure(clients: int) -> PollCost:
    """Everything for N = `clients`, in this process (run inside the router namespace)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    with tempfile.TemporaryDirectory(prefix="loopspot-bench-", dir="/dev/shm") as tmp:
        settings = bench_settings(Path(tmp))
        sessions = C.sessions_for(C.synthetic_clients(clients), time.time())
        C.preload_store(settings.state_dir, settings.flash_dir, sessions)
        nft = LibNftables()
        gate = Gate(nft, GateSpec.from_settings(settings))
        service = AgentService(settings, gate, SessionStore(settings.state_dir, settings.flash_dir))
        try:
            await service.start()
            before = C.proc_status(os.getpid())["VmRSS"]
            read = _timed(gate.read_clients)
            after = C.proc_status(os.getpid())
            libc.malloc_trim(0)
            trimmed = C.proc_status(os.getpid())["VmRSS"]
            list_clients = C.median(
                _timed(lambda: nft.list_json(f"list set {TABLE} {CLIENTS_SET}")) for _ in range(3)
            )
            list_downloads = C.median(
                _timed(lambda: nft.list_json(f"list set {TABLE} {DOWNLOADS_SET}")) for _ in range(3)
            )
            fresh = iter(C.synthetic_clients(ACCEPTS + DURING_POLL, offset=clients))
            alone: list[float] = []
            for _ in range(ACCEPTS):
                began = time.perf_counter()
                await service.accept(next(fresh), C.TERMS_VERSION)
                alone.append(time.perf_counter() - began)
            during: list[float] = []
            for _ in range(DURING_POLL):
                poll = asyncio.create_task(service.poll(), name="bench-poll")
                await asyncio.sleep(0.001)
                began = time.perf_counter()
                await service.accept(next(fresh), C.TERMS_VERSION)
                during.append(time.perf_counter() - began)
                await poll
        finally:
            await service.close()
            nft.run(f"delete table {TABLE}\n")
            nft.close()
    return PollCost(
        clients,
        read,
        list_clients,
        list_downloads,
        before,
        after["VmHWM"],
        after["VmRSS"],
        trimmed,
        C.percentile(alone, 50),
        C.percentile(during, 50),
        max(during),
    )


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Measure each N in its own process in the router namespace and print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.poll_cost", description=__doc__)
    parser.add_argument("--clients", type=C.parse_counts, default=[1000, 10000])
    parser.add_argument("--inner", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner is not None:
        print(json.dumps(asdict(asyncio.run(measure(args.inner)))))
        return {}
    C.check_root()
    results: list[PollCost] = []
    with C.open_lab(phones=0) as lab:
        for clients in args.clients:
            out = C.run_in_router(lab, "bench.poll_cost", ["--inner", str(clients)], INNER_TIMEOUT)
            results.append(PollCost(**json.loads(out)))
    C.report(
        "Counter poll cost (libnftables; ms and MiB)",
        [
            "clients",
            "read_clients()",
            "JSON list of clients",
            "JSON list of downloads",
            "RSS before",
            "peak after one read",
            "RSS after",
            "RSS after malloc_trim",
            "accept alone p50",
            "accept during a poll p50",
            "max",
        ],
        [
            [
                f"{r.clients:,}",
                C.ms(r.read_clients),
                C.ms(r.list_clients_json),
                C.ms(r.list_downloads_json),
                f"{r.rss_before / MIB:.1f}",
                f"{r.peak_after_read / MIB:.1f}",
                f"{r.rss_after_read / MIB:.1f}",
                f"{r.rss_after_trim / MIB:.1f}",
                C.ms(r.accept_alone_p50),
                C.ms(r.accept_during_poll_p50),
                C.ms(r.accept_during_poll_max),
            ]
            for r in results
        ],
    )
    return {str(r.clients): asdict(r) for r in results}


if __name__ == "__main__":
    main()
