"""Captive-portal probe answers per second from the real agent in the lab.

wrk, from phone namespaces, asks the portal for Apple's probe (Host: captive.apple.com):
  captive      a phone that has not accepted: the agent answers 302 to the portal;
  authorized   a phone that has: the agent answers Apple's 'Success' page.
each with keep-alive and with `Connection: close`. The agent is pinned to CPU 0 and wrk to
CPU 1. The agent allows one client at most 1,000 requests/s (rate_limit's maximum), so the
load comes from several phones; 429 answers are counted apart and not as answers.

    sudo .venv/bin/python -m bench.probe_rate [--phones 8] [--connections 4] [--seconds 5]
"""

from __future__ import annotations

import argparse
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from bench import common as C
from lab import netns
from lab.client import http_get, http_post_form
from lab.topology import Phone

PROBE_HOST = "captive.apple.com"
PROBE_URL = f"{C.PORTAL}/hotspot-detect.html"
SUCCESS_BODY = b"<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>"
GOAL = 2000.0
AGENT_CPU, LOAD_CPU = 0, 1
WRK_GRACE = 20.0
# The highest per-client rate the config accepts, so one phone can drive 1,000/s.
RATE_OPTIONS: dict[str, str | list[str]] = {"rate_limit": "1000", "rate_burst": "10000"}
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk process reported."""

    requests: int
    seconds: float
    refused: int  # non-2xx/3xx answers: 429 from the rate limiter, or errors
    socket_errors: int
    p99: float

    @property
    def answers_per_second(self) -> float:
        """Good probe answers (2xx/3xx) per second."""
        return (self.requests - self.refused) / self.seconds


def _duration(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(found.group(1)) * _UNITS[found.group(2)] if found else float("nan")


def parse_wrk(output: str) -> WrkResult:
    """Parse wrk's text report (with --latency)."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    if not done:
        raise C.BenchError(f"unexpected wrk output:\n{output}")
    refused = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    p99 = re.search(r"^\s*99%\s+(\S+)", output, re.MULTILINE)
    return WrkResult(
        int(done.group(1)),
        _duration(done.group(2) + done.group(3)),
        int(refused.group(1)) if refused else 0,
        sum(int(g) for g in errors.groups()) if errors else 0,
        _duration(p99.group(1)) if p99 else float("nan"),
    )


def wrk_argv(connections: int, seconds: int, close: bool) -> list[str]:
    """wrk on the load CPU, asking for Apple's probe at the portal."""
    argv = ["taskset", "-c", str(LOAD_CPU)] if C.pin_possible(LOAD_CPU) else []
    argv += ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    argv += ["-H", f"Host: {PROBE_HOST}"]
    if close:
        argv += ["-H", "Connection: close"]
    return [*argv, PROBE_URL]


def run_wrk(
    phones: Sequence[Phone], connections: int, seconds: int, close: bool
) -> list[WrkResult]:
    """One wrk per phone, all at once; their reports."""
    argv = wrk_argv(connections, seconds, close)
    procs = [
        netns.popen(p.ns, *argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for p in phones
    ]
    outputs: list[str] = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=seconds + WRK_GRACE)
            outputs.append(out.decode(errors="replace"))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [parse_wrk(out) for out in outputs]


def probe_answer(phone: Phone) -> tuple[int, bytes]:
    """What one probe request from `phone` gets: status and body."""
    answer = http_get(phone.ns, PROBE_URL, headers={"Host": PROBE_HOST})
    return answer.status, answer.body


def authorize(phones: Sequence[Phone]) -> None:
    """Accept the terms from each phone, as a shopper does."""
    for phone in phones:
        form = C.accept_form(C.csrf_token(phone.ns))
        answer = http_post_form(phone.ns, f"{C.PORTAL}/portal/accept", form)
        if answer.status != 303:
            raise C.BenchError(f"{phone.ns}: accept answered {answer.status}")


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Measure and print probe answers per second; return them as data."""
    parser = argparse.ArgumentParser(prog="python -m bench.probe_rate", description=__doc__)
    parser.add_argument("--phones", type=int, default=8, help="phones running wrk per case")
    parser.add_argument("--connections", type=int, default=4, help="wrk -c per phone")
    parser.add_argument("--seconds", type=int, default=5, help="wrk -d per run")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    C.check_root()
    cases = [(state, close) for state in ("captive", "authorized") for close in (False, True)]
    results: dict[tuple[str, bool], list[list[WrkResult]]] = {case: [] for case in cases}
    with C.open_lab(phones=2 * args.phones) as lab:
        captive, online = lab.phones[: args.phones], lab.phones[args.phones :]
        agent, _ = C.start_agent(lab, 0, **RATE_OPTIONS)
        try:
            assert agent.process is not None
            pinned = C.pin(agent.process.pid, AGENT_CPU)
            authorize(online)
            if probe_answer(captive[0])[0] != 302 or probe_answer(online[0]) != (200, SUCCESS_BODY):
                raise C.BenchError("the probe answers are not 302 (captive) and Success (online)")

            def one_round(number: int) -> None:
                for state, close in cases if number % 2 == 0 else list(reversed(cases)):
                    phones = captive if state == "captive" else online
                    results[(state, close)].append(
                        run_wrk(phones, args.connections, args.seconds, close)
                    )

            C.run_rounds(args.rounds, one_round)
        finally:
            C.stop_agent(agent)
    rows: list[list[object]] = []
    figures: dict[str, object] = {}
    for state, close in cases:
        rounds = results[(state, close)]
        rate = C.median(sum(r.answers_per_second for r in one) for one in rounds)
        refused = sum(r.refused for one in rounds for r in one)
        errors = sum(r.socket_errors for one in rounds for r in one)
        p99 = C.median(max(r.p99 for r in one) for one in rounds)
        answer = "302 to the portal" if state == "captive" else "200 Success"
        mode = "Connection: close" if close else "keep-alive"
        rows.append(
            [
                state,
                answer,
                mode,
                f"{rate:,.0f}",
                C.ms(p99),
                refused,
                errors,
                "yes" if rate >= GOAL else f"no ({rate / GOAL:.2f}x)",
            ]
        )
        figures[f"{state}/{'close' if close else 'keepalive'}"] = {"per_second": rate, "p99": p99}
    C.report(
        f"3. Probe answers per second (median of {args.rounds} rounds of {args.seconds} s; "
        f"{args.phones} phones x wrk -t1 -c{args.connections}; agent "
        f"{'pinned to CPU 0' if pinned else 'NOT pinned'}, wrk on CPU {LOAD_CPU})",
        [
            "phone",
            "answer",
            "connections",
            "answers/s",
            "p99 (ms, slowest wrk)",
            "429 or error answers",
            "socket errors",
            ">= 2,000/s",
        ],
        rows,
    )
    return figures


if __name__ == "__main__":
    main()
