"""Counter latency on the router: from the staff page's submit to the verdict page.

    sudo .venv/bin/python -m bench.counter_latency [--rounds 5] [--checks 200] [--spent 100000]
        [--tills 20]

The real agent runs in a lab router namespace with a coupon plan on its flash and no
cloud (the broker is unreachable, as when a shop's internet is down), `--spent` coupons on
its spent list and the codes to check in its store. Staff on a phone of the LAN log in with
the PIN, then submit one short code after another from each verdict page's form; each
submit's time to the whole verdict page is measured. Goal: p99 at most 50 ms.

The staff page lets each till and each staff session check about one code a second (with
bursts of 10), so the checks go round `--tills` tills, each with its own login, paced to
stay inside that limit: the pacing is between submits and is not measured.
"""

from __future__ import annotations

import argparse
import time

from bench import common as C
from lab.counter import Counter
from lab.coupon_shop import STAFF_PIN, preload_coupons, set_up_coupons
from lab.router import RouterAgent, cloud_section

GOAL_P99 = 0.050
PER_TILL = 1.1  # seconds between one till's checks: under the staff page's 1 a second


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.counter_latency", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--checks", type=int, default=200)
    parser.add_argument("--spent", type=int, default=100_000)
    parser.add_argument("--tills", type=int, default=20)
    args = parser.parse_args(argv)
    C.check_root()
    print(C.setting())
    C.compiled_as_packaged()
    p50s, p99s = [], []
    with C.open_lab(phones=args.tills) as lab:
        agent = RouterAgent(lab, sections={"cloud": cloud_section(lab.workdir / "agent")})
        flash = agent.workdir / "flash"
        shop = set_up_coupons(flash)
        C.progress(f"preloading {args.checks * args.rounds} coupons and {args.spent:,} spent")
        codes = preload_coupons(flash, shop, args.checks * args.rounds, args.spent)
        agent.start(timeout=60.0)
        try:
            tills = [Counter(phone) for phone in lab.phones]
            for till in tills:
                till.log_in(STAFF_PIN)
            pace = PER_TILL / len(tills)
            for round_number in range(args.rounds):
                took = []
                chunk = codes[round_number * args.checks : (round_number + 1) * args.checks]
                for number, code in enumerate(chunk):
                    time.sleep(pace)
                    began = time.perf_counter()
                    verdict = tills[number % len(tills)].check(code)
                    took.append(time.perf_counter() - began)
                    if not verdict.valid:
                        raise C.BenchError(
                            f"{code} was refused ({verdict.status}): {verdict.refusal}"
                        )
                p50s.append(C.percentile(took, 50))
                p99s.append(C.percentile(took, 99))
                C.progress(f"round {round_number + 1}: p50 {C.ms(p50s[-1])}, p99 {C.ms(p99s[-1])}")
        finally:
            agent.stop()
    figures: dict[str, object] = {
        "p50_ms": round(C.median(p50s) * 1000, 2),
        "p99_ms": round(C.median(p99s) * 1000, 2),
        "spent_list": args.spent,
        "goal_met": C.median(p99s) <= GOAL_P99,
    }
    C.report(
        f"Counter latency, submit to verdict page ({args.rounds} rounds of {args.checks})",
        ["figure", "median of rounds"],
        figures.items(),
    )
    return figures


if __name__ == "__main__":
    main()
