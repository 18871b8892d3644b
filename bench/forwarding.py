"""Forwarding throughput phone -> wan through the router, with and without a gate.

iperf3 (TCP, one stream) from a phone to the wan, in the same lab run, for:
  none        no portal: no nft table, no iptables rules;
  nft set     the agent's ruleset (agent.ruleset.render_table) with N clients in the set;
  nft set, half speed-limited   the same with every other client limited far above what
              it sends (100 Gbit/s): what the buckets cost; once with the phone among the
              limited (its bucket's cost), once not (what an unlimited phone pays beside them);
  iptables    nodogsplash's design: one `-m mac --mac-source X -s IP -j ACCEPT` rule per
              client in a chain jumped to from FORWARD, the phone's rule last.
Rounds interleave the designs, alternating their order; each ratio is the median over
rounds of (design / none) measured in the same round.

    sudo .venv/bin/python -m bench.forwarding [--clients 1000,10000] [--rounds 7] [--seconds 4]
        [--limited 10000] [--packets]   UDP datagrams of 64 bytes: packets/s, ns per packet,
                                        and the sender's CPU time per packet
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

from agent.access import UNLIMITED, SpeedLimit
from agent.clients import Client
from agent.ruleset import TABLE, UPLOAD_LIMITS_SET, GateSpec, Grant, render_table
from bench import common as C
from lab import addresses as A
from lab import netns
from lab.topology import Lab, Phone

IPERF_PORT = 5201
IPERF_IDLE_TIMEOUT = 60  # the server restarts itself if a client vanishes mid-test
IPERF_GRACE = 20.0
GOAL = 0.95
LIMITED_GOAL = 0.9  # with half the phones speed-limited (issue 11)
SMALL_DATAGRAM = 64  # bytes of UDP payload in --packets mode
CHAIN = "ndsAUT"  # nodogsplash's chain of authenticated clients
_PHONE_RULE = re.compile(r"^\s*(\d+)\s+\d+\s+ACCEPT\b", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Design:
    """A way to gate forwarding: how to put it in the router and take it out again."""

    name: str
    clients: int
    setup: Callable[[], None]
    teardown: Callable[[], None]
    check: Callable[[], bool] = lambda: True


def iptables_tools() -> list[str]:
    """The iptables variants installed here: legacy (x_tables) first, then nft-based."""
    return [v for v in ("legacy", "nft") if shutil.which(f"iptables-{v}-restore")]


def per_client_rules(phone: Phone, clients: int) -> str:
    """An iptables-restore file: `clients` per-client ACCEPT rules, the phone's last."""
    others = C.synthetic_clients(clients - 1)
    lines = ["*filter", f":{CHAIN} - [0:0]", f"-A FORWARD -i {A.LAN_BRIDGE} -j {CHAIN}"]
    lines += [f"-A {CHAIN} -s {c.ip} -m mac --mac-source {c.mac} -j ACCEPT" for c in others]
    lines += [f"-A {CHAIN} -s {phone.ip} -m mac --mac-source {phone.mac} -j ACCEPT"]
    lines += [f"-A {CHAIN} -j DROP", "COMMIT", ""]
    return "\n".join(lines)


# Far above what one phone sends here (about 20 Gbit/s), so the bucket costs, never drops.
BENCH_LIMIT = SpeedLimit(download=100_000_000, upload=100_000_000)  # kbit/s


def nft_set_design(
    lab: Lab, phone: Phone, clients: int, *, limited: bool = False, phone_limited: bool = True
) -> Design:
    """The agent's own ruleset, `clients` in the set, the phone among them; with `limited`,
    every other client has a speed limit, its own token bucket: the phone too, unless not
    `phone_limited` (then the limited half are the others, and the phone pays a miss)."""
    spec = GateSpec((A.LAN_BRIDGE,), IPv4Address(A.ROUTER_LAN_IP), 2050)
    me = Client(phone.mac, IPv4Address(phone.ip))
    everyone = [*C.synthetic_clients(clients - 1), me]
    phone_parity = 1 if phone_limited else 0
    grants = [
        Grant(c, C.SESSION_SECONDS, BENCH_LIMIT if limited and i % 2 == phone_parity else UNLIMITED)
        for i, c in enumerate(everyone, start=len(everyone) % 2)  # the phone's i is odd
    ]
    script = render_table(spec, grants)

    def setup() -> None:
        netns.run(lab.router, "nft", "-f", "-", input=script, timeout=60)

    def teardown() -> None:
        netns.run(lab.router, "nft", "delete", "table", *TABLE.split(), check=False)

    def check() -> bool:
        listing = netns.run(lab.router, "nft", "list", "set", *TABLE.split(), "clients").stdout
        found = re.search(rf"{phone.mac} \. {phone.ip} [^,}}]*counter packets (\d+)", listing)
        if limited and phone_limited:  # the phone has its bucket, and forward asks for it
            own = netns.run(lab.router, "nft", "list", "set", *TABLE.split(), UPLOAD_LIMITS_SET)
            rules = netns.run(lab.router, "nft", "list", "chain", *TABLE.split(), "forward")
            if f"{phone.ip} limit rate over" not in own.stdout:
                return False
            if f"ip saddr @{UPLOAD_LIMITS_SET} drop" not in rules.stdout:
                return False
        return found is not None and int(found.group(1)) > 0

    name = "nft set (agent)"
    if limited:
        name = "nft set, half speed-limited, phone " + ("limited" if phone_limited else "not")
    return Design(name, clients, setup, teardown, check)


CONNTRACK_TABLE = "inet bench_conntrack"
CONNTRACK_ONLY = f"""table {CONNTRACK_TABLE} {{
\tchain forward {{
\t\ttype filter hook forward priority filter; policy accept;
\t\tct state established,related accept
\t}}
}}
"""


def conntrack_design(lab: Lab) -> Design:
    """Connection tracking alone, as every OpenWrt firewall (fw4) has it: no portal yet."""

    def setup() -> None:
        netns.run(lab.router, "nft", "-f", "-", input=CONNTRACK_ONLY)

    def teardown() -> None:
        netns.run(lab.router, "nft", "delete", "table", *CONNTRACK_TABLE.split(), check=False)

    return Design("conntrack only (fw4's baseline)", 0, setup, teardown)


def iptables_design(lab: Lab, phone: Phone, clients: int, variant: str) -> Design:
    """nodogsplash's per-client rules through iptables-`variant`."""
    rules = per_client_rules(phone, clients)
    empty = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"

    def setup() -> None:
        netns.run(lab.router, f"iptables-{variant}-restore", input=rules, timeout=120)

    def teardown() -> None:
        # Restoring empty chains deletes ours; iptables-nft's table can then go entirely.
        netns.run(lab.router, f"iptables-{variant}-restore", input=empty, check=False)
        if variant == "nft":
            netns.run(lab.router, "nft", "delete", "table", "ip", "filter", check=False)

    def check() -> bool:
        listing = netns.run(
            lab.router, f"iptables-{variant}", "-L", CHAIN, "-v", "-x", "-n"
        ).stdout.splitlines()
        accepts = [line for line in listing if " ACCEPT " in f" {line} "]
        last = _PHONE_RULE.match(accepts[-1]) if accepts else None
        return phone.ip in accepts[-1] and last is not None and int(last.group(1)) > 0

    return Design(f"iptables-{variant} per-client rules", clients, setup, teardown, check)


def iperf(phone: Phone, seconds: float, *, packets: bool = False) -> float:
    """One iperf3 run phone -> wan: TCP bits per second received, or with `packets`, UDP
    datagrams of 64 bytes per second received (the per-packet cost, payload aside)."""
    udp = ["-u", "-b", "0", "-l", str(SMALL_DATAGRAM)] if packets else ["-O", "1"]
    done = netns.run(
        phone.ns,
        "iperf3",
        "-c",
        A.WAN_IP,
        "-p",
        str(IPERF_PORT),
        "-t",
        f"{seconds:g}",
        *udp,
        "-J",
        timeout=seconds + IPERF_GRACE,
        check=False,
    )
    try:
        result = json.loads(done.stdout)
        if packets:
            received = result["end"]["sum_received"]
            return float(received["packets"]) / float(received["seconds"])
        return float(result["end"]["sum_received"]["bits_per_second"])
    except (ValueError, KeyError, ZeroDivisionError) as exc:
        raise C.BenchError(f"iperf3 failed ({done.returncode}): {done.stdout[-800:]}") from exc


def iperf_cpu(phone: Phone, seconds: float) -> tuple[float, float]:
    """One iperf3 run of 64-byte UDP datagrams: packets/s received, and the sender's CPU
    time per datagram sent, in ns. The forwarding runs in the sender's softirq and is
    charged to it (this kernel has no IRQ time accounting), so that time is the path's
    cost, and moves far less with the machine's other load than the rate does."""
    argv = netns.exec_argv(
        phone.ns, "iperf3", "-c", A.WAN_IP, "-p", str(IPERF_PORT), "-t", f"{seconds:g}",
        "-u", "-b", "0", "-l", str(SMALL_DATAGRAM), "-J",
    )  # fmt: skip
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert child.stdout is not None
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)  # the child's own CPU time
    child.returncode = os.waitstatus_to_exitcode(status)
    try:
        end = json.loads(out)["end"]
        received, sent = end["sum_received"], end.get("sum_sent", end.get("sum"))
        cpu = (usage.ru_utime + usage.ru_stime) * 1e9 / float(sent["packets"])
        return float(received["packets"]) / float(received["seconds"]), cpu
    except (ValueError, KeyError, ZeroDivisionError) as exc:
        raise C.BenchError(f"iperf3 failed ({child.returncode}): {out[-800:]!r}") from exc


def start_iperf_server(lab: Lab) -> subprocess.Popen[bytes]:
    """`iperf3 -s` in the wan, returned once it listens; the lab also stops it on close."""
    server = lab.popen(
        lab.wan,
        "iperf3",
        "-s",
        "-B",
        A.WAN_IP,
        "-p",
        str(IPERF_PORT),
        "--idle-timeout",
        str(IPERF_IDLE_TIMEOUT),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        listening = netns.run(lab.wan, "ss", "-Hltn", f"sport = :{IPERF_PORT}").stdout
        if listening.strip():
            return server
        time.sleep(0.05)
    server.kill()
    raise C.BenchError("iperf3 -s did not start in the wan namespace")


def shares(speeds: list[float], baseline: list[float]) -> list[float]:
    """Per round: speed / the same round's baseline speed."""
    return [s / b for s, b in zip(speeds, baseline, strict=True)]


def extra_ns(rates: list[float], baseline: list[float]) -> list[float]:
    """Per round: the nanoseconds each packet took beyond the same round's baseline."""
    return [1e9 / r - 1e9 / b for r, b in zip(rates, baseline, strict=True)]


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Measure and print throughput and ratios; return them as data."""
    parser = argparse.ArgumentParser(prog="python -m bench.forwarding", description=__doc__)
    parser.add_argument("--clients", type=C.parse_counts, default=[1000, 10000])
    parser.add_argument(
        "--limited",
        type=C.parse_counts,
        default=[10000],
        help="clients of the design where half of them, the phone too, are speed-limited",
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=4.0, help="iperf3 -t per run")
    parser.add_argument(
        "--packets",
        action="store_true",
        help="UDP datagrams of 64 bytes instead of TCP: packets/s, and ns per packet over none",
    )
    parser.add_argument(
        "--iptables", type=C.parse_names, default=None, help="legacy,nft (default: both found)"
    )
    args = parser.parse_args(argv)
    C.check_root()
    variants = args.iptables if args.iptables is not None else iptables_tools()
    if args.iptables is None and not variants:
        raise C.BenchError(
            "no iptables-legacy-restore or iptables-nft-restore for the per-client-rule design: "
            "apt-get install iptables (or pass --iptables '' to measure the nft set alone)"
        )
    with C.open_lab(phones=1) as lab:
        phone = lab.phones[0]
        nothing = Design("none (no portal)", 0, lambda: None, lambda: None)
        designs = [nothing, conntrack_design(lab)]
        designs += [nft_set_design(lab, phone, n) for n in args.clients]
        designs += [nft_set_design(lab, phone, n, limited=True) for n in args.limited]
        designs += [
            nft_set_design(lab, phone, n, limited=True, phone_limited=False) for n in args.limited
        ]
        designs += [iptables_design(lab, phone, n, v) for v in variants for n in args.clients]
        server = start_iperf_server(lab)
        speeds: dict[int, list[float]] = {i: [] for i in range(len(designs))}
        checked: dict[int, bool] = {i: True for i in range(len(designs))}
        cpus: dict[int, list[float]] = {i: [] for i in range(len(designs))}
        try:

            def one_round(number: int) -> None:
                # Alternate the order, so a drift in the machine's load favours no design.
                order = list(enumerate(designs))
                for index, design in order if number % 2 == 0 else reversed(order):
                    design.setup()
                    try:
                        if args.packets:
                            rate, cpu = iperf_cpu(phone, args.seconds)
                            cpus[index].append(cpu)
                        else:
                            rate = iperf(phone, args.seconds)
                        speeds[index].append(rate)
                        checked[index] = checked[index] and design.check()
                    finally:
                        design.teardown()

            C.run_rounds(args.rounds, one_round)
        finally:
            server.terminate()
            server.wait(5)
    rows: list[list[object]] = []
    figures: dict[str, object] = {}
    for index, design in enumerate(designs):
        per_round = shares(speeds[index], speeds[0])
        ratio = C.median(per_round)
        to_conntrack = C.median(shares(speeds[index], speeds[1]))
        rate = C.median(speeds[index])
        row: list[object] = [
            design.name,
            f"{design.clients:,}" if design.clients else "-",
            f"{rate / 1e3:,.0f}" if args.packets else f"{rate / 1e9:.2f}",
            f"{ratio:.2f}x",
            f"{min(per_round):.2f}-{max(per_round):.2f}",
            f"{to_conntrack:.2f}x",
            "yes" if checked[index] else "NO",
        ]
        figure = {"rate": rate, "ratio": ratio, "ratio_to_conntrack": to_conntrack}
        if args.packets:
            extra = C.median(extra_ns(speeds[index], speeds[0]))
            cpu_extra = C.median([c - b for c, b in zip(cpus[index], cpus[0], strict=True)])
            cpu_share = C.median([b / c for c, b in zip(cpus[index], cpus[0], strict=True)])
            row += [f"{extra:,.0f}", f"{cpu_extra:,.0f}", f"{cpu_share:.2f}x"]
            figure.update(
                extra_ns_per_packet=extra, cpu_ns_over_none=cpu_extra, cpu_share=cpu_share
            )
        else:
            goal = LIMITED_GOAL if "limited" in design.name else GOAL
            row.append(("yes" if ratio >= goal else "no") if design.name.startswith("nft") else "-")
        rows.append(row)
        figures[f"{design.name}/{design.clients}"] = figure
    what = f"UDP {SMALL_DATAGRAM}-byte datagrams" if args.packets else "TCP"
    C.report(
        f"2. Forwarding phone -> wan, iperf3 {what} {args.seconds:g} s (median of "
        f"{args.rounds} rounds; shares = median of per-round design/baseline)",
        [
            "design",
            "clients",
            "kpackets/s" if args.packets else "Gbit/s",
            "share of no portal",
            "per-round range",
            "share of conntrack only",
            "phone's own entry matched",
            *(
                ["ns per packet over none", "sender CPU ns over none", "CPU share of none"]
                if args.packets
                else ["goal (0.95x; limited 0.9x)"]
            ),
        ],
        rows,
    )
    return figures


if __name__ == "__main__":
    main()
