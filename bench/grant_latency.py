"""How long from 'accept' until the phone is let through, with many clients already online.

a. accept -> element in the kernel set: AgentService.accept (book + gate.grant + store write)
   and gate.grant alone, in process, inside the lab's router namespace, for each backend.
b. accept -> the phone's first packet forwarded: the real agent and portal; a phone posts the
   accept form, and as soon as the 303 arrives it opens TCP to the wan web server.

    sudo .venv/bin/python -m bench.grant_latency [--clients 10,1000,10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench import common as C
from bench.grant_kernel import KERNEL_BACKENDS, KernelRound
from lab import addresses as A
from lab.client import connect, http_post_form
from lab.topology import Lab, Phone

ACCEPT_GOAL = 0.005  # p99, accept -> element in the kernel set
FORWARD_GOAL = 0.030  # p99, accept -> first packet forwarded
INNER_TIMEOUT = 900.0
CONNECT_TIMEOUT = 2.0


# --- a. in process -------------------------------------------------------------------------


def measure_in_kernel(
    lab: Lab, clients: Sequence[int], backends: Sequence[str], rounds: int, accepts: int
) -> list[KernelRound]:
    """Run bench.grant_kernel inside the router namespace and collect its rounds."""
    args = [
        "--clients",
        ",".join(map(str, clients)),
        "--backends",
        ",".join(backends),
        "--rounds",
        str(rounds),
        "--accepts",
        str(accepts),
    ]
    out = C.run_in_router(lab, "bench.grant_kernel", args, INNER_TIMEOUT)
    return [KernelRound.from_json(item) for item in json.loads(out)]


def report_in_kernel(results: Sequence[KernelRound]) -> dict[str, object]:
    """Print figure a and return it as data."""
    rows: list[list[object]] = []
    figures: dict[str, object] = {}
    p99s: dict[tuple[str, int], float] = {}
    keys = sorted({(r.backend, r.clients) for r in results})
    for backend, clients in keys:
        mine = [r for r in results if r.backend == backend and r.clients == clients]
        acc = C.median_spread([C.Spread.of(r.accept) for r in mine])
        grant = C.median_spread([C.Spread.of(r.grant) for r in mine])
        start = C.median(r.start for r in mine)
        read = C.median(r.read for r in mine)
        p99s[(backend, clients)] = acc.p99
        met = "yes" if acc.p99 <= ACCEPT_GOAL else f"no ({acc.p99 / ACCEPT_GOAL:.1f}x)"
        rows.append(
            [
                backend,
                f"{clients:,}",
                C.ms(acc.p50),
                C.ms(acc.p99),
                C.ms(grant.p50),
                C.ms(grant.p99),
                C.ms(start),
                C.ms(read),
                met,
            ]
        )
        figures[f"{backend}/{clients}"] = {
            "accept_p50": acc.p50,
            "accept_p99": acc.p99,
            "grant_p50": grant.p50,
            "grant_p99": grant.p99,
            "start": start,
            "counter_read": read,
        }
    rounds = max((r.round for r in results), default=-1) + 1
    samples = len(results[0].accept) if results else 0
    C.report(
        f"1a. accept -> element in the kernel set (ms; median of {rounds} rounds, "
        f"{samples} accepts and {samples} grants each)",
        [
            "backend",
            "already authorized",
            "accept p50",
            "accept p99",
            "nft grant p50",
            "nft grant p99",
            "start (install all)",
            "counter read",
            "p99 <= 5 ms",
        ],
        rows,
    )
    for backend in sorted({r.backend for r in results}):
        counts = {r.clients for r in results if r.backend == backend}
        if len(counts) > 1:
            low, high = min(counts), max(counts)
            flat = p99s[(backend, high)] / p99s[(backend, low)]
            figures[f"{backend}_flatness"] = flat
            print(f"{backend} accept p99 at {high:,} / at {low:,} clients: {flat:.2f}x")
    return figures


# --- b. the real agent -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ForwardRound:
    """One agent start: per phone, accept request time and accept -> connect time (s)."""

    backend: str
    clients: int
    accept: list[float]
    forwarded: list[float]
    failures: int
    start: float


def reaches_wan_over(sock: socket.socket) -> bool:
    """True when `sock` is connected to the wan web server itself (not redirected)."""
    sock.settimeout(CONNECT_TIMEOUT)
    sock.sendall(f"GET / HTTP/1.0\r\nHost: {A.WEB_IP}\r\n\r\n".encode())
    data = b""
    while len(data) < 65536:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return b"WAN OK" in data


def phone_goes_online(phone: Phone) -> tuple[float, float] | None:
    """(accept request, accept -> wan connected) for one phone, or None if it failed."""
    token = C.csrf_token(phone.ns)  # untimed: the page was on screen before the tap
    began = time.perf_counter()
    answer = http_post_form(phone.ns, f"{C.PORTAL}/portal/accept", C.accept_form(token))
    answered = time.perf_counter()
    if answer.status != 303:
        return None
    try:
        sock = connect(phone.ns, A.WEB_IP, 80, timeout=CONNECT_TIMEOUT)
    except OSError:
        return None
    connected = time.perf_counter()
    with sock:
        try:
            if not reaches_wan_over(sock):  # untimed: proves it was forwarded, not redirected
                return None
        except OSError:
            return None
    return answered - began, connected - began


def measure_forwarding(lab: Lab, backend: str, clients: int, gap: float, poll: str) -> ForwardRound:
    """Start the agent with `clients` sessions, then take each lab phone online in turn.

    Phones arrive a random 0..2*`gap` seconds apart, as shoppers do, so a round spans several
    counter polls and an accept may land while one runs.
    """
    agent, started = C.start_agent(lab, clients, nft_backend=backend, counter_poll_interval=poll)
    accept: list[float] = []
    forwarded: list[float] = []
    failures = 0
    arrivals = random.Random(clients)
    try:
        for phone in lab.phones:
            time.sleep(arrivals.uniform(0.0, 2.0 * gap))
            timing = phone_goes_online(phone)
            if timing is None:
                failures += 1
                continue
            accept.append(timing[0])
            forwarded.append(timing[1])
    finally:
        C.stop_agent(agent)
    return ForwardRound(backend, clients, accept, forwarded, failures, started)


def report_forwarding(results: Sequence[ForwardRound]) -> dict[str, object]:
    """Print figure b and return it as data."""
    rows: list[list[object]] = []
    figures: dict[str, object] = {}
    for backend, clients in dict.fromkeys((r.backend, r.clients) for r in results):
        mine = [r for r in results if r.backend == backend and r.clients == clients]
        acc = C.median_spread([C.Spread.of(r.accept) for r in mine])
        fwd = C.median_spread([C.Spread.of(r.forwarded) for r in mine])
        failures = sum(r.failures for r in mine)
        slow = sum(t > FORWARD_GOAL for r in mine for t in r.forwarded)
        start = C.median(r.start for r in mine)
        met = "yes" if fwd.p99 <= FORWARD_GOAL else f"no ({fwd.p99 / FORWARD_GOAL:.1f}x)"
        rows.append(
            [
                backend,
                f"{clients:,}",
                C.ms(acc.p50),
                C.ms(acc.p99),
                C.ms(fwd.p50),
                C.ms(fwd.p99),
                f"{slow}/{fwd.samples}",
                f"{failures}/{fwd.samples + failures}",
                f"{start:.2f} s",
                met,
            ]
        )
        figures[f"{backend}/{clients}"] = {
            "accept_p50": acc.p50,
            "accept_p99": acc.p99,
            "forwarded_p50": fwd.p50,
            "forwarded_p99": fwd.p99,
            "over_goal": slow,
            "failures": failures,
            "agent_start": start,
        }
    rounds = len(results) // max(1, len(rows))
    C.report(
        f"1b. accept -> the phone's first packet forwarded (ms; real agent and portal; "
        f"median of {rounds} rounds)",
        [
            "backend",
            "already authorized",
            "accept request p50",
            "accept request p99",
            "accept -> wan connect p50",
            "accept -> wan connect p99",
            "over 30 ms",
            "failed",
            "agent start",
            "p99 <= 30 ms",
        ],
        rows,
    )
    return figures


# --- command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Measure and print both figures; return them as data."""
    parser = argparse.ArgumentParser(prog="python -m bench.grant_latency", description=__doc__)
    parser.add_argument("--clients", type=C.parse_counts, default=[10, 1000, 10000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--accepts", type=int, default=300, help="timed accepts per round (a)")
    parser.add_argument("--phones", type=int, default=100, help="phones per round (b)")
    parser.add_argument(
        "--gap-ms", type=float, default=60.0, help="mean time between phones' arrivals (b)"
    )
    parser.add_argument("--backends", type=C.parse_names, default=list(KERNEL_BACKENDS))
    parser.add_argument(
        "--agent-backends", type=C.parse_names, default=["netlink"], help="backends for b"
    )
    parser.add_argument(
        "--poll",
        default=C.SHIPPED_OPTIONS["counter_poll_interval"],
        help="the agent's counter_poll_interval in seconds (b; shipped default 2)",
    )
    parser.add_argument("--only", choices=("a", "b"), help="measure one figure only")
    args = parser.parse_args(argv)
    C.check_root()
    figures: dict[str, object] = {}
    with C.open_lab(phones=0 if args.only == "a" else args.phones, wan_services=True) as lab:
        if args.only != "b":
            C.progress(f"1a: {args.rounds} rounds in the router namespace")
            found = measure_in_kernel(lab, args.clients, args.backends, args.rounds, args.accepts)
            figures["in_kernel"] = report_in_kernel(found)
        if args.only != "a":
            rounds: list[ForwardRound] = []

            def one_round(index: int) -> None:
                for clients in args.clients:
                    for backend in args.agent_backends:
                        rounds.append(
                            measure_forwarding(lab, backend, clients, args.gap_ms / 1000, args.poll)
                        )

            C.progress(f"1b: {len(lab.phones)} phones per agent start")
            C.run_rounds(args.rounds, one_round)
            figures["forwarded"] = report_forwarding(rounds)
    return figures


if __name__ == "__main__":
    main()
