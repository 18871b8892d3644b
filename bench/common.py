"""What the benchmarks share: statistics, synthetic clients, the lab agent, tables and pinning.

Every figure is a median over rounds run in the same process, so a noisy shared machine
moves all designs together and the ratios stay meaningful.
"""

from __future__ import annotations

import compileall
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from agent.clients import Client
from agent.portal.app import TEMPLATE_CACHE
from agent.ruleset import TABLE
from agent.sessions import Session
from agent.store import SessionStore
from lab import addresses as A
from lab import netns
from lab.client import http_get
from lab.router import RouterAgent
from lab.topology import Lab, cleanup_stale, require_root

REPO_ROOT = Path(__file__).resolve().parent.parent
# Lab phones take 10.77.1.1 upwards, 250 per block; 10.77.128.0/17 is free for made-up clients.
SYNTHETIC_FIRST_IP = IPv4Address("10.77.128.1")
SYNTHETIC_MAC_PREFIX = "02:be"
SESSION_SECONDS = 3600
PORTAL = f"http://{A.ROUTER_LAN_IP}:2050"
TERMS_VERSION = "2026-11"  # the lab agent's terms version (lab.router.agent_config)
_CSRF = re.compile(rb'name="csrf" value="([^"]+)"')

# The shipped defaults (deploy/openwrt/files/loopspot.config) where the lab's differ.
SHIPPED_OPTIONS: dict[str, str | list[str]] = {
    "counter_poll_interval": "2",
    "snapshot_interval": "5m",
    "nft_backend": "auto",  # as deploy/openwrt/files/loopspot.config ships it
}


class BenchError(Exception):
    """A benchmark could not measure what it set out to measure."""


# --- statistics -------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0..100) with linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Iterable[float]) -> float:
    """The median, or NaN for no values."""
    items = list(values)
    return statistics.median(items) if items else math.nan


@dataclass(frozen=True, slots=True)
class Spread:
    """p50 and p99 of one round's samples (seconds)."""

    p50: float
    p99: float
    samples: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """The spread of `values`."""
        return cls(percentile(values, 50), percentile(values, 99), len(values))


def median_spread(rounds: Sequence[Spread]) -> Spread:
    """Median p50 and median p99 over rounds; samples is the total."""
    return Spread(
        median(r.p50 for r in rounds),
        median(r.p99 for r in rounds),
        sum(r.samples for r in rounds),
    )


def ms(seconds: float) -> str:
    """Seconds as milliseconds with sensible precision."""
    value = seconds * 1000.0
    if math.isnan(value):
        return "-"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def parse_counts(text: str) -> list[int]:
    """'10,1000,10000' (or '10k') as integers, for argparse."""
    counts: list[int] = []
    for item in text.split(","):
        item = item.strip().lower().replace("_", "")
        factor = 1000 if item.endswith("k") else 1
        counts.append(int(item.removesuffix("k")) * factor)
    return counts


def parse_names(text: str) -> list[str]:
    """'a,b' as a list, for argparse."""
    return [item.strip() for item in text.split(",") if item.strip()]


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def report(title: str, headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Print a titled Markdown table (flushed, so progress shows under `make bench`)."""
    print(f"\n### {title}\n\n{markdown_table(headers, rows)}\n", flush=True)


def progress(message: str) -> None:
    """A progress line on stdout."""
    print(f"  .. {message}", flush=True)


# --- synthetic clients ------------------------------------------------------------------


def synthetic_client(index: int) -> Client:
    """Made-up client `index`: MAC 02:be:..., IP from 10.77.128.1, clear of the lab's phones."""
    mac = SYNTHETIC_MAC_PREFIX + "".join(f":{(index >> s) & 0xFF:02x}" for s in (24, 16, 8, 0))
    return Client(mac, SYNTHETIC_FIRST_IP + index)


def synthetic_clients(count: int, offset: int = 0) -> list[Client]:
    """`count` made-up clients starting at index `offset`."""
    return [synthetic_client(i) for i in range(offset, offset + count)]


def sessions_for(clients: Iterable[Client], now: float) -> list[Session]:
    """Live sessions, one hour long from `now`, as the portal would have started them."""
    return [
        Session(
            client=client,
            started_at=now,
            terms_version=TERMS_VERSION,
            expires_at=now + SESSION_SECONDS,
            idle_timeout=900,
            last_activity_at=now,
        )
        for client in clients
    ]


def preload_store(state_dir: Path, flash_dir: Path, sessions: Sequence[Session]) -> None:
    """Write `sessions` as the saved sessions the agent reconciles and installs at start."""
    store = SessionStore(state_dir, flash_dir)
    try:
        store.replace_all(sessions)
    finally:
        store.close()


# --- the lab and the real agent ---------------------------------------------------------


def open_lab(phones: int, *, wan_services: bool = False) -> Lab:
    """A lab (use it in `with`), after removing namespaces a crashed earlier run left."""
    require_root()
    cleanup_stale()
    return Lab.create(phones=phones, wan_services=wan_services)


def compiled_as_packaged() -> None:
    """Write the agent's bytecode, as the OpenWrt package ships it (sourceless .pyc).

    Without it (a fresh checkout, or PYTHONDONTWRITEBYTECODE set) every start compiles
    the agent's modules from source again, and the compiler's transient memory adds about
    2 MiB to the peak RSS these benchmarks measure: a cost no router pays.
    """
    if not compileall.compile_dir(REPO_ROOT / "agent", quiet=1):
        raise BenchError("the agent's modules do not compile")


def start_agent(
    lab: Lab, preload: int = 0, **options: str | list[str]
) -> tuple[RouterAgent, float]:
    """The real agent with `preload` saved sessions and a fresh table; and its start time (s)."""
    compiled_as_packaged()
    chosen: dict[str, str | list[str]] = {**SHIPPED_OPTIONS, **options}
    agent = RouterAgent(lab, None, **chosen)
    wipe_agent_state(agent)
    if preload:
        preload_store(
            agent.workdir / "tmpfs",
            agent.workdir / "flash",
            sessions_for(synthetic_clients(preload), time.time()),
        )
    began = time.perf_counter()
    agent.start(timeout=120.0)
    started = time.perf_counter() - began
    clients = int(agent.ctl_json("status")["status"]["clients"])
    if clients != preload:
        stop_agent(agent)
        raise BenchError(f"the agent started with {clients} sessions, not {preload}")
    return agent, started


def first_start(lab: Lab) -> None:
    """Start the agent once and stop it, as a router does once after install.

    That start compiles the portal's pages onto flash; every later start loads them.
    """
    agent, _ = start_agent(lab)
    stop_agent(agent)


def first_start_of(agent: RouterAgent) -> None:
    """`first_start` for an agent already configured (e.g. the installed package's)."""
    wipe_agent_state(agent)
    agent.start(timeout=120.0)
    stop_agent(agent)


def wipe_agent_state(agent: RouterAgent) -> None:
    """No table in the kernel and no saved sessions: the next start begins from nothing.

    Only the portal's compiled pages stay on flash, as on a router after its first start.
    """
    netns.run(agent.lab.router, "nft", "delete", "table", *TABLE.split(), check=False)
    shutil.rmtree(agent.workdir / "tmpfs", ignore_errors=True)
    flash = agent.workdir / "flash"
    for path in flash.iterdir() if flash.is_dir() else ():
        if path.name == TEMPLATE_CACHE:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def stop_agent(agent: RouterAgent) -> None:
    """Stop the agent (SIGTERM, then kill) and remove its table and state."""
    try:
        agent.stop()
    except subprocess.TimeoutExpired:
        agent.kill()
    wipe_agent_state(agent)


def csrf_token(ns: str) -> str:
    """Open the portal as a phone's browser does and take the accept form's token."""
    page = http_get(ns, f"{PORTAL}/portal")
    found = _CSRF.search(page.body)
    if page.status != 200 or not found:
        raise BenchError(f"no accept form from the portal (HTTP {page.status}) for {ns}")
    return found.group(1).decode()


def accept_form(token: str) -> dict[str, str]:
    """The fields the portal's accept button posts."""
    return {"csrf": token, "terms_version": TERMS_VERSION, "lang": "en"}


# --- processes --------------------------------------------------------------------------


def run_in_router(lab: Lab, module: str, args: Sequence[str], timeout: float) -> str:
    """Run `python -m module args` inside the lab's router namespace; its stdout."""
    proc = netns.popen(
        lab.router,
        sys.executable,
        "-m",
        module,
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise BenchError(f"{module} failed ({proc.returncode}):\n{err.decode()[-4000:]}")
    return out.decode()


def pin(pid: int, cpu: int) -> bool:
    """Pin every thread of `pid` to `cpu` (new threads inherit it); False if not possible."""
    if not pin_possible(cpu):
        return False
    done = subprocess.run(
        ["taskset", "-a", "-p", "-c", str(cpu), str(pid)],
        capture_output=True,
        timeout=10,
        check=False,
    )
    return done.returncode == 0


def proc_status(pid: int) -> dict[str, int]:
    """The kB fields of /proc/PID/status (VmHWM, VmRSS, ...), in bytes."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            fields[key] = int(parts[0]) * 1024
    return fields


@dataclass(frozen=True, slots=True)
class Memory:
    """Peak and current resident set of one process, in bytes; `private` is the part of
    `current` no other process shares (USS: its own heap, not libc's or libcrypto's code)."""

    peak: int
    current: int
    private: int = 0


def memory_of(pid: int) -> Memory:
    """VmHWM, VmRSS and the private resident set of a running process."""
    status = proc_status(pid)
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    private = sum(
        int(line.split()[1]) * 1024
        for line in rollup.splitlines()
        if line.startswith(("Private_Clean:", "Private_Dirty:"))
    )
    return Memory(status["VmHWM"], status["VmRSS"], private)


def as_the_daemon_imports(modules: str) -> str:
    """Python code importing `modules` the way `loopspot-agent run` does (agent.process)."""
    return f"from agent.process import prepare_daemon\nprepare_daemon()\nimport {modules}\n"


def floor(code: str, python: str = sys.executable) -> Memory:
    """The memory of a Python process (`python`, the checkout's by default) that runs `code`."""
    compiled_as_packaged()
    status = "import os; print(os.getpid()); input()"
    with subprocess.Popen(
        [python, "-c", f"{code}\n{status}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    ) as child:
        assert child.stdout is not None and child.stdin is not None
        memory = memory_of(int(child.stdout.readline()))
        child.stdin.write("\n")
        child.stdin.flush()
    return memory


def run_rounds(rounds: int, step: Callable[[int], None]) -> None:
    """Call `step(round)` `rounds` times, with a progress line each."""
    for index in range(rounds):
        progress(f"round {index + 1}/{rounds}")
        step(index)


def check_root() -> None:
    """Raise BenchError unless this is root (the lab and nftables need it); print the setting."""
    if os.geteuid() != 0:
        raise BenchError("the benchmarks need root: network namespaces and nftables")
    print(f"  .. {setting()}", flush=True)


def setting() -> str:
    """Which code ran on what: the commit, uncommitted agent/lab changes, CPUs and load."""
    git = ["git", "-C", str(REPO_ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "agent", "lab"], capture_output=True, text=True
    )
    changed = len(dirty.stdout.splitlines())
    tree = head.stdout.strip() or "unknown commit"
    if changed:
        tree += f" + {changed} uncommitted file(s) in agent/ or lab/"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"code {tree}; {os.cpu_count()} CPUs; load average {load}"


def pin_possible(cpu: int) -> bool:
    """True when `taskset` exists and this machine has CPU `cpu`."""
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) > cpu
