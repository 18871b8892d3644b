"""Figure 1a's inner half: time AgentService.accept and Gate.grant in this process.

Run by bench.grant_latency inside the lab's router namespace (`ip netns exec`), so both
backends talk to that namespace's nftables; prints the rounds as JSON on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from agent.gate.gate import Gate, open_grants
from agent.gate.nft import LibNftables, open_nft
from agent.ruleset import TABLE, GateSpec, Grant
from agent.service import AgentService
from agent.settings import Settings
from agent.store import SessionStore
from bench import common as C
from lab import addresses as A

KERNEL_BACKENDS = ("netlink", "libnftables", "nft")


@dataclass(frozen=True, slots=True)
class KernelRound:
    """One round: per-call seconds of accept and of grant, install and counter-read time."""

    backend: str
    clients: int
    round: int
    accept: list[float]
    grant: list[float]
    start: float
    read: float

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> KernelRound:
        """A round from bench.grant_kernel's output."""
        return cls(**item)


def bench_settings(workdir: Path) -> Settings:
    """The agent's settings in the lab's router, with state in `workdir`."""
    return Settings(
        lan_interfaces=(A.LAN_BRIDGE,),
        portal_address=IPv4Address(A.ROUTER_LAN_IP),
        state_dir=workdir / "tmpfs",
        flash_dir=workdir / "flash",
    )


async def measure_round(backend: str, clients: int, index: int, accepts: int) -> KernelRound:
    """Install `clients` sessions, then time `accepts` accepts and `accepts` bare grants."""
    with tempfile.TemporaryDirectory(prefix="loopspot-bench-", dir="/dev/shm") as tmp:
        settings = bench_settings(Path(tmp))
        C.preload_store(
            settings.state_dir,
            settings.flash_dir,
            C.sessions_for(C.synthetic_clients(clients), time.time()),
        )
        if backend not in KERNEL_BACKENDS:
            raise C.BenchError(f"unknown nft backend {backend!r}; use one of {KERNEL_BACKENDS}")
        nft = open_nft(backend)  # as the daemon builds its gate
        gate = Gate(nft, GateSpec.from_settings(settings), grants=open_grants(backend, nft))
        service = AgentService(settings, gate, SessionStore(settings.state_dir, settings.flash_dir))
        try:
            began = time.perf_counter()
            await service.start()
            start = time.perf_counter() - began
            accept: list[float] = []
            for client in C.synthetic_clients(accepts, offset=clients):
                began = time.perf_counter()
                await service.accept(client, C.TERMS_VERSION)
                accept.append(time.perf_counter() - began)
            grant: list[float] = []
            for client in C.synthetic_clients(accepts, offset=clients + accepts):
                one = Grant(client, C.SESSION_SECONDS)
                began = time.perf_counter()
                gate.grant(one)
                grant.append(time.perf_counter() - began)
            began = time.perf_counter()
            in_kernel = gate.read_clients()
            read = time.perf_counter() - began
        finally:
            await service.close()
            nft.run(f"delete table {TABLE}\n")
            if isinstance(nft, LibNftables):
                nft.close()
    if len(in_kernel) != clients + 2 * accepts:
        raise C.BenchError(
            f"{backend}: the set holds {len(in_kernel)} clients, not {clients + 2 * accepts}"
        )
    return KernelRound(backend, clients, index, accept, grant, start, read)


async def measure(
    clients: Sequence[int], backends: Sequence[str], rounds: int, accepts: int
) -> list[KernelRound]:
    """Every (round, clients, backend), interleaved so machine noise hits all alike."""
    results: list[KernelRound] = []
    for index in range(rounds):
        for count in clients:
            for backend in backends:
                results.append(await measure_round(backend, count, index, accepts))
    return results


def main(argv: list[str] | None = None) -> None:
    """Measure and print the rounds as JSON (run inside the router namespace)."""
    parser = argparse.ArgumentParser(prog="python -m bench.grant_kernel", description=__doc__)
    parser.add_argument("--clients", type=C.parse_counts, default=[10, 1000, 10000])
    parser.add_argument("--backends", type=C.parse_names, default=list(KERNEL_BACKENDS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--accepts", type=int, default=300)
    args = parser.parse_args(argv)
    results = asyncio.run(measure(args.clients, args.backends, args.rounds, args.accepts))
    print(json.dumps([asdict(r) for r in results]))


if __name__ == "__main__":
    main()
