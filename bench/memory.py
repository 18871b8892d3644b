"""The agent's memory: peak (VmHWM) and current (VmRSS) resident set, from /proc/PID/status.

Cases, each a fresh start of the real agent in the lab's router namespace:
  idle            no sessions; counter polls running;
  N sessions      N saved sessions installed at start, then a few hundred portal requests
                  (pages, probes, the RFC 8908 API, accepts) and many counter polls.
Compared in the same run with the floors: a bare Python, `import aiohttp.web`, and
`import agent.daemon` (every module the agent loads, before it does anything).

    sudo .venv/bin/python -m bench.memory [--sessions 1000,10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

from bench import common as C
from lab.client import http_get, http_post_form
from lab.topology import Lab, Phone

GOAL = 40 * 1024 * 1024
MIB = 1024 * 1024
POLL_INTERVAL = "0.5"  # the shortest allowed, so many polls run while we watch
PROBES = (
    ("captive.apple.com", "/hotspot-detect.html"),
    ("connectivitycheck.gstatic.com", "/generate_204"),
    ("www.msftconnecttest.com", "/connecttest.txt"),
    ("detectportal.firefox.com", "/success.txt"),
)
FLOORS = {
    "bare python": "pass",
    "import aiohttp.web": "import aiohttp.web",
    "import agent.daemon": C.as_the_daemon_imports("agent.daemon"),
}


def portal_traffic(phones: list[Phone], requests_per_phone: int) -> int:
    """What shoppers' phones do: page, probes, API, accept, 'online'; the request count."""
    sent = 0
    for phone in phones:
        form = C.accept_form(C.csrf_token(phone.ns))
        http_post_form(phone.ns, f"{C.PORTAL}/portal/accept", form)
        http_get(phone.ns, f"{C.PORTAL}/portal/online")
        sent += 3
        for index in range(requests_per_phone - 3):
            if index % 3 == 0:
                http_get(phone.ns, f"{C.PORTAL}/api/captive")
            else:
                host, path = PROBES[index % len(PROBES)]
                http_get(phone.ns, f"{C.PORTAL}{path}", headers={"Host": host})
            sent += 1
    return sent


def agent_memory(lab: Lab, sessions: int, requests_per_phone: int, settle: float) -> C.Memory:
    """Start the agent with `sessions`, drive traffic if any, let polls run, read its memory."""
    agent, _ = C.start_agent(lab, sessions, counter_poll_interval=POLL_INTERVAL)
    try:
        assert agent.process is not None
        if sessions:
            portal_traffic(lab.phones, requests_per_phone)
        time.sleep(settle)
        return C.memory_of(agent.process.pid)
    finally:
        C.stop_agent(agent)


def mib(size: float) -> str:
    """Bytes as MiB."""
    return f"{size / MIB:.1f}"


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Measure and print the agent's memory and the floors; return them as data."""
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--sessions", type=C.parse_counts, default=[1000, 10000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--phones", type=int, default=20, help="phones sending portal requests")
    parser.add_argument("--requests", type=int, default=20, help="requests per phone")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of polls before reading")
    args = parser.parse_args(argv)
    C.check_root()
    cases = [0, *args.sessions]
    found: dict[str, list[C.Memory]] = {name: [] for name in FLOORS}
    agent: dict[int, list[C.Memory]] = {n: [] for n in cases}
    with C.open_lab(phones=args.phones) as lab:
        C.first_start(lab)

        def one_round(_: int) -> None:
            for name, code in FLOORS.items():
                found[name].append(C.floor(code))
            for sessions in cases:
                agent[sessions].append(agent_memory(lab, sessions, args.requests, args.settle))

        C.run_rounds(args.rounds, one_round)
    aiohttp_peak = C.median(m.peak for m in found["import aiohttp.web"])
    rows: list[list[object]] = []
    figures: dict[str, object] = {}
    for name in FLOORS:
        peak, current = (
            C.median(m.peak for m in found[name]),
            C.median(m.current for m in found[name]),
        )
        private = C.median(m.private for m in found[name])
        rows.append(
            [
                f"floor: {name}",
                "-",
                mib(peak),
                mib(current),
                mib(private),
                mib(peak - aiohttp_peak),
                "",
            ]
        )
        figures[f"floor/{name}"] = {"peak": peak, "current": current, "private": private}
    for sessions in cases:
        peak = C.median(m.peak for m in agent[sessions])
        current = C.median(m.current for m in agent[sessions])
        private = C.median(m.private for m in agent[sessions])
        label = "agent, idle" if sessions == 0 else "agent, after traffic and polls"
        met = "yes" if peak <= GOAL else f"no (+{mib(peak - GOAL)} MiB)"
        rows.append(
            [
                label,
                f"{sessions:,}",
                mib(peak),
                mib(current),
                mib(private),
                mib(peak - aiohttp_peak),
                met,
            ]
        )
        figures[f"agent/{sessions}"] = {"peak": peak, "current": current, "private": private}
    C.report(
        f"4. Memory (MiB; median of {args.rounds} rounds; {args.phones} phones x "
        f"{args.requests} portal requests; counter poll every {POLL_INTERVAL} s for "
        f"{args.settle:g} s before reading)",
        [
            "process",
            "sessions",
            "peak RSS (VmHWM)",
            "RSS (VmRSS)",
            "private RSS (USS)",
            "peak above aiohttp floor",
            "peak <= 40 MiB",
        ],
        rows,
    )
    return figures


if __name__ == "__main__":
    main()
