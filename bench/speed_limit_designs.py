"""What a speed limit costs per forwarded packet, design by design, in the same run.

10,000 phones online, every other one speed-limited far above what it sends (so the
figure is the limiter's cost, never the limit), UDP datagrams of 64 bytes from the phone
to the wan (bench.forwarding's --packets). Every design is a table with the same two hooks
(prerouting and forward) and differs only in how a limited phone's packets are metered.
Each is measured with the measuring phone limited ("L") and, where it differs, not ("U"):

  none            no table;
  set             the gate without limits: the `clients` lookup, accept;
  element limits  agent.ruleset's design: `ip saddr @upload_limits drop` first, whose
                  limited phones' elements each carry their own `limit rate over`;
  maps            the design before it: every packet looks its source up in the verdict
                  map `upload_limits`; a limited phone's jumps to its rate's chain, whose
                  meter (a dynamic set with timeouts) keeps its token bucket;
  maps, jump only         the same maps jumping to chains with no meter;
  maps, meter without timeout   the meter as a dynamic set without element timeouts;
  set + tc htb    the set, and an HTB qdisc on the router's wan port whose default class
                  takes every unlimited phone's packets: what tc costs the phones it does
                  not limit (this kernel has no `police` action, flower or fq_codel; a
                  limited phone would need an HTB class and a u32 filter of its own);
  ..., forward hook only   the same without the prerouting chain: what that hook costs.

Besides packets/s (which moves with the machine's other load), each run takes the
sender's CPU time per datagram (bench.forwarding.iperf_cpu), the steadier figure.

    sudo .venv/bin/python -m bench.speed_limit_designs [--rounds 9] [--seconds 2]
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

from agent.clients import Client
from bench import common as C
from bench.forwarding import SMALL_DATAGRAM, iperf_cpu, shares, start_iperf_server
from lab import addresses as A
from lab import netns
from lab.topology import Lab

TABLE = "inet bench_limits"
RATE = 12_500_000_000  # bytes/s: 100 Gbit/s, far above one phone here
BURST = RATE // 10
OVER = f"limit rate over {RATE} bytes/second burst {BURST} bytes"
TIMEOUT = " timeout 3600s"


@dataclass(frozen=True, slots=True)
class Design:
    """One table (and tc filters, if any), and the set holding the phone's counted element."""

    name: str
    script: str
    phone_set: str = "clients"
    tc: Callable[[Lab], None] | None = None


def _table(sets: str, forward: str, *, prerouting: bool = True) -> str:
    lan = A.LAN_BRIDGE
    hook = (
        "\tchain prerouting {\n"
        "\t\ttype filter hook prerouting priority mangle - 5; policy accept;\n"
        f'\t\ttcp dport 80 iifname "{lan}" return\n\t}}\n'
    )
    return f"""table {TABLE} {{}}
delete table {TABLE}
table {TABLE} {{
{sets}{hook if prerouting else ""}\tchain forward {{
\t\ttype filter hook forward priority filter - 5; policy accept;
{forward}\t\tether saddr . ip saddr @clients accept
\t\tiifname "{lan}" drop
\t}}
}}
"""


def _clients(everyone: list[Client]) -> str:
    listed = ", ".join(f"{c.mac} . {c.ip}{TIMEOUT}" for c in everyone)
    return (
        "\tset clients {\n\t\ttype ether_addr . ipv4_addr; flags timeout; counter;\n"
        f"\t\telements = {{ {listed} }}\n\t}}\n"
    )


def _element_limits(
    everyone: list[Client], limited: list[Client], *, prerouting: bool = True
) -> str:
    listed = ", ".join(f"{c.ip} {OVER}{TIMEOUT}" for c in limited)
    sets = _clients(everyone) + (
        "\tset upload_limits {\n\t\ttype ipv4_addr; flags timeout;\n"
        f"\t\tlimit rate over 10000000000 bytes/second burst 3028 bytes;\n"
        f"\t\telements = {{ {listed} }}\n\t}}\n"
    )
    return _table(sets, "\t\tip saddr @upload_limits drop\n", prerouting=prerouting)


def _maps(everyone: list[Client], limited: list[Client], chain: str, meter: str) -> str:
    jumps = ", ".join(f"{c.ip}{TIMEOUT} : jump upload_limit" for c in limited)
    sets = (
        _clients(everyone)
        + (f"\tset buckets {{ type ipv4_addr; size 65535; flags {meter} }}\n" if meter else "")
        + f"\tchain upload_limit {{\n\t\t{chain}\n\t}}\n"
        + "\tmap upload_limits {\n\t\ttype ipv4_addr : verdict; flags timeout;\n"
        + f"\t\telements = {{ {jumps} }}\n\t}}\n"
    )
    return _table(sets, "\t\tip saddr vmap @upload_limits\n")


def _htb(lab: Lab) -> None:
    """An HTB qdisc on the router's wan port whose default class all traffic takes."""
    lines = [
        f"qdisc add dev {A.ROUTER_WAN_IF} root handle 1: htb default 1",
        f"class add dev {A.ROUTER_WAN_IF} parent 1: classid 1:1 htb rate 100gbit",
    ]
    netns.run(lab.router, "tc", "-batch", "-", input="\n".join(lines) + "\n", timeout=60)


def designs(phone: Client, clients: int) -> list[Design]:
    """Each design with the phone limited, and where it can differ, with the phone not."""
    others = C.synthetic_clients(clients - 1)
    everyone = [*others, phone]
    built = [Design("set (no limits)", _table(_clients(everyone), ""))]
    meter_rule = f"update @buckets {{ ip saddr {OVER} }} drop"
    for phone_limited in (True, False):
        limited = others[0::2] + ([phone] if phone_limited else [])
        tag = " L" if phone_limited else " U"
        built.append(Design("element limits" + tag, _element_limits(everyone, limited)))
        built.append(
            Design(
                "maps" + tag, _maps(everyone, limited, meter_rule, "dynamic,timeout; timeout 5m;")
            )
        )
        if phone_limited:
            built.append(Design("maps, jump only L", _maps(everyone, limited, "counter", "")))
            built.append(
                Design(
                    "maps, meter without timeout L",
                    _maps(everyone, limited, meter_rule, "dynamic;"),
                )
            )
    built.append(Design("set + tc htb, phone in its default class U", built[0].script, tc=_htb))
    limited = [*others[0::2], phone]
    built.append(Design("set, forward hook only", _table(_clients(everyone), "", prerouting=False)))
    built.append(
        Design(
            "element limits L, forward hook only",
            _element_limits(everyone, limited, prerouting=False),
        )
    )
    return built


def counted(lab: Lab, phone: Client, set_name: str) -> bool:
    """True when the phone's element of `set_name` counted packets: they took this path."""
    listing = netns.run(lab.router, "nft", "list", "set", *TABLE.split(), set_name).stdout
    found = re.search(rf"{phone.mac} \. {phone.ip} [^,}}]*counter packets (\d+)", listing)
    return found is not None and int(found.group(1)) > 0


def main(argv: list[str] | None = None) -> None:
    """Measure every design per packet, rounds interleaved, and print the medians."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.speed_limit_designs", description=__doc__
    )
    parser.add_argument("--clients", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    C.check_root()
    with C.open_lab(phones=1) as lab:
        phone_ns = lab.phones[0]
        phone = Client(phone_ns.mac, IPv4Address(phone_ns.ip))
        table: list[Design | None] = [None, *designs(phone, args.clients)]
        rates: list[list[float]] = [[] for _ in table]
        cpus: list[list[float]] = [[] for _ in table]
        checked = [True for _ in table]
        server = start_iperf_server(lab)
        try:

            def one_round(number: int) -> None:
                order = list(enumerate(table))
                for index, design in order if number % 2 == 0 else reversed(order):
                    if design is not None:
                        netns.run(lab.router, "nft", "-f", "-", input=design.script, timeout=60)
                        if design.tc is not None:
                            design.tc(lab)
                    try:
                        rate, cpu = iperf_cpu(phone_ns, args.seconds)
                        rates[index].append(rate)
                        cpus[index].append(cpu)
                        if design is not None:
                            ok = counted(lab, phone, design.phone_set)
                            checked[index] = checked[index] and ok
                    finally:
                        netns.run(lab.router, "nft", "delete", "table", *TABLE.split(), check=False)
                        if design is not None and design.tc is not None:
                            netns.run(
                                lab.router, "tc", "qdisc", "del", "dev", A.ROUTER_WAN_IF, "root",
                                check=False,
                            )  # fmt: skip

            C.run_rounds(args.rounds, one_round)
        finally:
            server.terminate()
            server.wait(5)
    rows: list[list[object]] = []
    for index, design in enumerate(table):
        per_round = shares(rates[index], rates[0])
        cpu_shares = [b / c for c, b in zip(cpus[index], cpus[0], strict=True)]
        extra = [c - b for c, b in zip(cpus[index], cpus[0], strict=True)]
        rows.append(
            [
                "none (no portal)" if design is None else design.name,
                f"{C.median(rates[index]) / 1e3:,.0f}",
                f"{C.median(per_round):.2f}x ({min(per_round):.2f}-{max(per_round):.2f})",
                f"{C.median(cpus[index]):,.0f}",
                f"{C.median(extra):,.0f}",
                f"{C.median(cpu_shares):.2f}x ({min(cpu_shares):.2f}-{max(cpu_shares):.2f})",
                "yes" if checked[index] else "NO",
            ]
        )
    C.report(
        f"Speed-limit designs, {args.clients:,} phones, every other one limited, UDP "
        f"{SMALL_DATAGRAM}-byte datagrams {args.seconds:g} s (median of {args.rounds} rounds)",
        [
            "design (L: phone limited, U: not)",
            "kpackets/s",
            "packets/s share of none (range)",
            "sender CPU ns per packet",
            "CPU ns over none",
            "CPU share of none (range)",
            "phone's element counted",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
