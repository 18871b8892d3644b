"""The agent's memory with the shipped config (issue 11): the installed package and the checkout.

    sudo .venv/bin/python -m bench.shipped_memory [--rounds 3] [--settle 10]

Builds the .ipk with deploy/openwrt/build_ipk.py and unpacks it into a root folder. The
installed agent is /usr/bin/loopspot-agent from there, under the system's Python, with
only the bundled libraries (tests/lab/installed_package.py); the checkout's agent is
`python -m agent.cli` under the .venv's Python. Both read the package's
/etc/config/loopspot, changed only for the lab's addresses and folders, in two cases:

  link off   the config as shipped (`config cloud` disabled): a router not enrolled;
  link on    an enrolled router: `enabled 1` and a credentials_dir holding what enrolment
             writes (identity.json, ca.crt, router.crt, router.key); the broker is a
             Mosquitto that speaks only TLS and wants the router's certificate, reached
             on the wan address, port 8883, through the lab's uplink. Read once the link
             is connected and `--settle` seconds have passed.

Each case is a fresh start; the rounds interleave the cases, so a loaded machine moves
them together. Peak (VmHWM) and current (VmRSS) resident set from /proc/PID/status.
With `--before REV`, the same cases also run the code of commit REV in the same rounds:
its package built by its own build script, its checkout from `git archive`.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from agent.credentials import CA_FILE, CERT_FILE, IDENTITY_FILE, KEY_FILE
from bench import common as C
from lab import addresses as A
from lab.broker import Broker
from lab.polling import wait_until
from lab.router import LAB_ALLIANCE_KEY, LAB_ROUTER_ID, RouterAgent
from lab.topology import Lab
from lab.uplink import start_uplink
from tests.lab.installed_package import (
    ROUTER_PYTHON,
    InstalledAgent,
    build_package,
    install,
    lab_changes,
    shipped_config,
)
from tests.lab.test_link_tls import make_pki

GOAL = 40 * 1024 * 1024
MIB = 1024 * 1024
TLS_PORT = 8883  # the shipped port for MQTT over TLS (agent.link.identity)
LINKS = ("off", "on")
Changes = dict[str, dict[str, str | list[str]]]


@dataclass(frozen=True)
class Variant:
    """One agent to measure: the installed package or a checkout, of this code or another's."""

    label: str
    kind: str  # "installed" or "checkout"
    root: Path  # the installed package's root folder (its shipped config, in both kinds)
    environment: Mapping[str, str] | None = field(default=None)  # None: the bench's own


def enrolled_credentials(folder: Path, pki: Mapping[str, Path]) -> Path:
    """A credentials_dir as `loopspot-agent enrol` leaves it, for the lab's broker."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, role in ((CA_FILE, "ca"), (CERT_FILE, "router.crt"), (KEY_FILE, "router.key")):
        (folder / name).write_bytes(pki[role].read_bytes())
    identity = {
        "router_id": LAB_ROUTER_ID,
        "broker_host": A.WAN_IP,
        "alliance_key": LAB_ALLIANCE_KEY.hex(),
    }
    (folder / IDENTITY_FILE).write_text(json.dumps(identity))
    return folder


def make_agent(lab: Lab, variant: Variant, cloud: Changes) -> RouterAgent:
    """The variant's agent, with the shipped config and `cloud`'s changes."""
    if variant.kind == "installed":
        return InstalledAgent(lab, variant.root, changes=cloud)
    agent = RouterAgent(lab)
    agent.environment = variant.environment
    changes = lab_changes(agent.workdir, variant.root)
    del changes["portal"]  # the checkout's agent has its templates beside it
    changes.update(cloud)
    agent.config.write_text(shipped_config(variant.root, changes))
    return agent


def variants_before(rev: str, work: Path) -> list[Variant]:
    """The installed package and the checkout of commit `rev`, unpacked under `work`."""
    tree = work / f"tree-{rev}"
    tree.mkdir(parents=True)
    paths = ["agent", "portal_templates", "deploy", "pyproject.toml"]
    archive = subprocess.run(
        ["git", "-C", str(C.REPO_ROOT), "archive", rev, *paths], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    compileall.compile_dir(tree / "agent", quiet=1)  # as packaged: bytecode beside the code
    built = subprocess.run(
        [sys.executable, str(tree / "deploy/openwrt/build_ipk.py"), "--out", str(work / rev)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    root = install(Path(built.stdout.strip()), work / f"root-{rev}")
    # -P (PYTHONSAFEPATH): the working folder, this checkout, is not put first on the path
    environment = {**os.environ, "PYTHONPATH": str(tree), "PYTHONSAFEPATH": "1"}
    return [
        Variant(f"installed @{rev}", "installed", root),
        Variant(f"checkout @{rev}", "checkout", root, environment),
    ]


def measure(lab: Lab, agent: RouterAgent, linked: bool, settle: float) -> C.Memory:
    """Start `agent` fresh, wait for its link if `linked`, let it run `settle` s, read it."""
    C.wipe_agent_state(agent)
    agent.start(timeout=60)
    try:
        assert agent.process is not None
        if linked:

            def connected() -> bool:
                return bool(agent.ctl_json("status")["status"].get("cloud") == "connected")

            if not wait_until(connected, 30):
                raise C.BenchError(f"the link did not connect:\n{agent.logs()[-3000:]}")
        time.sleep(settle)
        return C.memory_of(agent.process.pid)
    finally:
        try:
            agent.stop()
        except Exception:
            agent.kill()
        C.wipe_agent_state(agent)


@contextmanager
def tls_cloud(lab: Lab, pki: Mapping[str, Path]) -> Iterator[None]:
    """A Mosquitto on loopback that wants client certificates, relayed to the wan's 8883."""
    config = (
        f"cafile {pki['ca']}\ncertfile {pki['broker.crt']}\nkeyfile {pki['broker.key']}\n"
        "require_certificate true\nuse_identity_as_username true\n"
    )
    with Broker(config) as broker:
        relay = start_uplink(lab.wan, {TLS_PORT: broker.port}, A.WAN_IP)
        try:
            yield
        finally:
            relay.terminate()
            relay.wait(5)


def mib(size: float) -> str:
    """Bytes as MiB."""
    return f"{size / MIB:.1f}"


def measure_all(
    work: Path, rounds: int, settle: float, before: str | None
) -> tuple[dict[str, list[C.Memory]], dict[tuple[str, str], list[C.Memory]]]:
    """The bare Pythons' and every variant's memory in each case, `rounds` times, in `work`."""
    root = install(build_package(work / "ipk"), work / "root")
    variants = [Variant("installed", "installed", root), Variant("checkout", "checkout", root)]
    if before:
        variants += variants_before(before, work)
    pki = make_pki(work / "pki")
    credentials = enrolled_credentials(work / "credentials", pki)
    cloud_on: Changes = {"cloud": {"enabled": "1", "credentials_dir": str(credentials)}}
    found = {(v.label, link): list[C.Memory]() for v in variants for link in LINKS}
    floors: dict[str, list[C.Memory]] = {"checkout's python": [], "system python": []}
    with C.open_lab(phones=1) as lab, tls_cloud(lab, pki):
        for variant in variants:  # as a router's first start: the portal's pages onto flash
            C.first_start_of(make_agent(lab, variant, {}))

        def one_round(index: int) -> None:
            floors["checkout's python"].append(C.floor("pass"))
            floors["system python"].append(C.floor("pass", python=ROUTER_PYTHON))
            for variant in variants if index % 2 == 0 else variants[::-1]:
                for link in LINKS:
                    agent = make_agent(lab, variant, cloud_on if link == "on" else {})
                    found[variant.label, link].append(measure(lab, agent, link == "on", settle))

        C.run_rounds(rounds, one_round)
    return floors, found


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Measure and print the four cases and the two bare Pythons; return the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.shipped_memory", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before reading")
    parser.add_argument("--before", metavar="REV", help="also measure commit REV's code")
    args = parser.parse_args(argv)
    C.check_root()
    C.compiled_as_packaged()
    with tempfile.TemporaryDirectory(prefix="loopspot-shipped-memory-") as work:
        floors, found = measure_all(Path(work), args.rounds, args.settle, args.before)
    rows: list[list[object]] = []
    figures: dict[str, object] = {}
    for name, taken in floors.items():
        peak, current = C.median(m.peak for m in taken), C.median(m.current for m in taken)
        rows.append([f"floor: bare {name}", "-", mib(peak), mib(current), ""])
        figures[f"floor/{name}"] = {"peak": peak, "current": current}
    for (label, link), taken in found.items():
        peak, current = C.median(m.peak for m in taken), C.median(m.current for m in taken)
        met = "yes" if peak <= GOAL else f"no (+{mib(peak - GOAL)})"
        rows.append([f"agent, {label}", link, mib(peak), mib(current), met])
        figures[f"{label}/link {link}"] = {"peak": peak, "current": current}
    C.report(
        f"The agent's memory with the shipped config (MiB, median of {args.rounds} rounds, "
        f"read {args.settle:g} s after start or after the link connected)",
        ["process", "cloud link", "peak RSS (VmHWM)", "RSS (VmRSS)", "peak <= 40 MiB"],
        rows,
    )
    return figures


if __name__ == "__main__":
    main()
