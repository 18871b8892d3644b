"""What one counter poll costs the agent, and what it does to an accept that arrives meanwhile.

A diagnostic behind docs/benchmarks.md's "What is slow in the agent". For each N and each
way of reading the sets, a fresh process inside the lab's router namespace starts an
AgentService (libnftables) with N sessions and measures:
  - reading every client's counters, 10 times: over netlink as the agent does
    (gate.read_clients), or as it did before, through `nft -j list set` and JSON;
  - the peak RSS those reads add, and the RSS after malloc_trim(0);
  - accept alone, and accept issued 1 ms after a poll started.

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
from agent.ruleset import TABLE, GateSpec
from agent.service import AgentService
from agent.store import SessionStore
from bench import common as C
from bench.grant_kernel import bench_settings
from lab.nft_listing import listed_clients

ACCEPTS = 50
DURING_POLL = 15
INNER_TIMEOUT = 600.0
MIB = 1024 * 1024


WAYS = ("netlink", "nft -j")
READS = 10


@dataclass(frozen=True, slots=True)
class PollCost:
    """One N's and one way's figures; times in seconds, memory in bytes."""

    clients: int
    way: str
    read_p50: float
    rss_before: int
    peak_added: int
    rss_after_reads: int
    rss_after_trim: int
    accept_alone_p50: float
    accept_during_poll_p50: float
    accept_during_poll_max: float


def _timed(step: Callable[[], object]) -> float:
    began = time.perf_counter()
    step()
    return time.perf_counter() - began


async def measure(clients: int, way: str) -> PollCost:
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
            libc.malloc_trim(0)
            before = C.proc_status(os.getpid())
            # listed_clients: nft -j and JSON, as the agent read the counters before
            read = gate.read_clients if way == "netlink" else listed_clients
            reads = [_timed(read) for _ in range(READS)]
            after = C.proc_status(os.getpid())
            libc.malloc_trim(0)
            trimmed = C.proc_status(os.getpid())["VmRSS"]
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
        way,
        C.percentile(reads, 50),
        before["VmRSS"],
        max(0, after["VmHWM"] - max(before["VmHWM"], before["VmRSS"])),
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
    parser.add_argument("--way", choices=WAYS, default="netlink", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner is not None:
        print(json.dumps(asdict(asyncio.run(measure(args.inner, args.way)))))
        return {}
    C.check_root()
    results: list[PollCost] = []
    with C.open_lab(phones=0) as lab:
        for clients in args.clients:
            for way in WAYS:
                inner = ["--inner", str(clients), "--way", way]
                out = C.run_in_router(lab, "bench.poll_cost", inner, INNER_TIMEOUT)
                results.append(PollCost(**json.loads(out)))
    C.report(
        f"Counter poll cost (ms and MiB; {READS} reads each)",
        [
            "clients",
            "read the counters",
            "read p50",
            "RSS before",
            "peak added by the reads",
            "RSS after",
            "RSS after malloc_trim",
            "accept alone p50",
            "accept during a poll p50",
            "max",
        ],
        [
            [
                f"{r.clients:,}",
                r.way,
                C.ms(r.read_p50),
                f"{r.rss_before / MIB:.1f}",
                f"{r.peak_added / MIB:.1f}",
                f"{r.rss_after_reads / MIB:.1f}",
                f"{r.rss_after_trim / MIB:.1f}",
                C.ms(r.accept_alone_p50),
                C.ms(r.accept_during_poll_p50),
                C.ms(r.accept_during_poll_max),
            ]
            for r in results
        ],
    )
    return {f"{r.clients}/{r.way}": asdict(r) for r in results}


if __name__ == "__main__":
    main()
