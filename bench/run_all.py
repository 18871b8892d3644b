"""Every benchmark in sequence with modest settings (about 5 minutes): `make bench`.

    sudo .venv/bin/python -m bench.run_all [--json results.json]

Each benchmark's own defaults take more rounds; docs/benchmarks.md quotes those.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import common as C
from bench import (
    forwarding,
    grant_latency,
    installed_size,
    key_backends,
    memory,
    poll_cost,
    portal_certify,
    probe_rate,
    shipped_memory,
)

Bench = Callable[[list[str] | None], dict[str, object]]
MODEST: list[tuple[str, Bench, list[str]]] = [
    ("grant_latency", grant_latency.main, ["--rounds", "3", "--accepts", "200"]),
    ("forwarding", forwarding.main, ["--rounds", "3", "--seconds", "3"]),
    ("probe_rate", probe_rate.main, ["--rounds", "3", "--seconds", "4"]),
    ("memory", memory.main, ["--rounds", "2"]),
    ("shipped_memory", shipped_memory.main, ["--rounds", "1"]),
    ("poll_cost", poll_cost.main, []),
    ("key_backends", key_backends.main, ["--rounds", "10", "--memory-rounds", "3"]),
    ("installed_size", installed_size.main, []),
    ("portal_certify", portal_certify.main, ["--rounds", "3"]),
]


def main(argv: list[str] | None = None) -> int:
    """Run them all; 0 when every benchmark ran (goals met or not), 1 if one failed."""
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__)
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--only", type=C.parse_names, help="run only these benchmarks")
    args = parser.parse_args(argv)
    C.check_root()
    figures: dict[str, object] = {}
    failed: list[str] = []
    began = time.monotonic()
    for name, bench, bench_args in MODEST:
        if args.only and name not in args.only:
            continue
        print(f"\n## python -m bench.{name} {' '.join(bench_args)}", flush=True)
        started = time.monotonic()
        try:
            figures[name] = bench(bench_args)
        except Exception:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
        print(f"({name}: {time.monotonic() - started:.0f} s)", flush=True)
    print(f"\nall benchmarks: {time.monotonic() - began:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
