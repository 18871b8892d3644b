"""Cloud redemptions per second under contention, on PostgreSQL (and SQLite in the same run).

    python -m bench.coupon_redeem [--rounds 5] [--coupons 2000] [--threads 16] [--hot 0.25]

Each round resets the ledger to `--coupons` coupons held, then `--threads` threads, each
with its own connection, call cloud.coupon_redeem.redeem on a shuffled list of tokens in
which a `--hot` share of the coupons appears 4 times (the same coupon shown at several
counters at once) and the rest once. A redemption is the whole call: verify the token,
judge it, and the one `UPDATE ... WHERE state='held'` that wins. The run fails if any
coupon is redeemed twice, or a coupon is left unredeemed. Needs root only to run
PostgreSQL's initdb as user postgres (lab.postgres).
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.orm import Session

from agent.coupons.shortcode import code_of
from agent.coupons.token import Coupon, IssuerCertificate, sign_coupon
from bench import common as C
from cloud import coupon_store as store
from cloud.coupon_redeem import RedeemRefused, redeem
from cloud.db import make_engine, migrate
from cloud.enrol_fleet import create_merchant, create_site
from cloud.issuer_keys import certify_keys
from cloud.models import IssuerKey, Router
from lab.postgres import Postgres

NOW = 1_800_000_000
HOT_REPEATS = 4


def make_ledger(engine: Engine, count: int) -> list[str]:
    """A merchant with two routers, one certified key, and `count` coupons in the ledger."""
    with Session(engine) as session, session.begin():
        merchant = create_merchant(session, "spa", "loop")
        site = create_site(session, "spa", "spa shop")
        session.add_all([Router(id=r, site_id=site.id, state="online") for r in ("r1", "r2")])
        alliance, merchant_id = merchant.alliance_id or 0, merchant.id
    ed = store.cloud_backend()
    seed = os.urandom(32)
    with engine.begin() as connection:
        where = store.places(connection, ["r1"])
        when = datetime.fromtimestamp(NOW, UTC)
        certify_keys(connection, {"r1": ed.public_key(seed).hex()}, where, when)
        text = connection.scalar(select(IssuerKey.certificate))
    certificate = IssuerCertificate.from_text(text or "")
    coupons = [
        sign_coupon(
            ed,
            seed,
            Coupon(certificate, 1, merchant_id, os.urandom(16).hex(), 0, 2**32 - 1, os.urandom(8)),
        )
        for _ in range(count)
    ]
    rows = [
        {
            "coupon_id": c.coupon_id,
            "short_code": code_of(c.coupon_id),
            "campaign_id": 1,
            "merchant_id": merchant_id,
            "alliance_id": alliance,
            "issuer_router_id": "r1",
            "issuer_site_id": None,
            "issuer_merchant_id": merchant_id,
            "device_id": c.device_id,
            "token": c.to_text(),
            "issued_at": float(NOW),
            "not_before": 0,
            "not_after": 2**32 - 1,
            "state": "held",
            "replaces": "",
        }
        for c in coupons
    ]
    with engine.begin() as connection:
        connection.execute(insert(store.COUPONS), rows)
    return [c.to_text() for c in coupons]


def reset(engine: Engine) -> None:
    """Every coupon held again, no redemption."""
    with engine.begin() as connection:
        connection.execute(delete(store.REDEMPTIONS))
        connection.execute(update(store.COUPONS).values(state="held", redeemed_at=None))


def one_round(url: str, tokens: list[str], threads: int, hot: float, seed: int) -> dict[str, float]:
    """One contended round; its rates, checked for exactly one success per coupon."""
    rng = random.Random(seed)
    hot_count = int(len(tokens) * hot)
    attempts = tokens + tokens[:hot_count] * (HOT_REPEATS - 1)
    rng.shuffle(attempts)
    queue = list(reversed(attempts))
    lock = threading.Lock()
    wins: list[str] = []
    refused = [0]
    start = threading.Barrier(threads + 1)

    def work() -> None:
        engine = make_engine(url)
        try:
            with engine.connect():
                pass  # connect before the clock starts
            start.wait()
            while True:
                with lock:
                    if not queue:
                        return
                    token = queue.pop()
                try:
                    done = redeem(engine, token, "r2", float(NOW))
                except RedeemRefused:
                    with lock:
                        refused[0] += 1
                    continue
                with lock:
                    wins.append(done.coupon.coupon_id)
        finally:
            engine.dispose()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    began, cpu = time.perf_counter(), time.process_time()
    for worker in workers:
        worker.join()
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    if len(wins) != len(set(wins)) or len(wins) != len(tokens):
        raise C.BenchError(
            f"{len(wins)} successes for {len(set(wins))} coupons of {len(tokens)}: double success"
        )
    return {
        "redeemed_per_s": len(wins) / elapsed,
        "attempts_per_s": len(attempts) / elapsed,
        "refused": float(refused[0]),
        "client_cpu_us": cpu / len(attempts) * 1e6,  # this process (all threads), per attempt
    }


def measure(
    name: str, url: str, args: argparse.Namespace, results: dict[str, list[dict[str, float]]]
) -> Callable[[int], None]:
    """Set up `url` and return a function that runs round `n` there."""
    migrate(url)
    engine = make_engine(url)
    tokens = make_ledger(engine, args.coupons)

    def run(n: int) -> None:
        reset(engine)
        results[name].append(one_round(url, tokens, args.threads, args.hot, n))
        with engine.connect() as connection:
            rows = connection.scalar(select(func.count()).select_from(store.REDEMPTIONS))
        if rows != args.coupons:
            raise C.BenchError(f"{name}: {rows} redemption rows for {args.coupons} coupons")

    return run


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run the rounds on PostgreSQL and SQLite, interleaved, and print the medians."""
    parser = argparse.ArgumentParser(prog="python -m bench.coupon_redeem", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--coupons", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--hot", type=float, default=0.25, help="share of coupons shown 4 times")
    args = parser.parse_args(argv)
    print(C.setting())
    results: dict[str, list[dict[str, float]]] = {"postgresql": [], "sqlite": []}
    with Postgres() as cluster, tempfile.TemporaryDirectory() as folder:
        runs = {
            "postgresql": measure("postgresql", cluster.url, args, results),
            "sqlite": measure("sqlite", f"sqlite:///{folder}/cloud.db", args, results),
        }
        for n in range(args.rounds):
            for run in runs.values():
                run(n)
    attempts = args.coupons + int(args.coupons * args.hot) * (HOT_REPEATS - 1)
    print(
        f"{args.coupons} coupons, {attempts} attempts ({args.hot:.0%} of coupons tried "
        f"{HOT_REPEATS} times), {args.threads} threads, median of {args.rounds} rounds"
    )
    summary: dict[str, object] = {}
    for name, rounds in results.items():
        redeemed = C.median(r["redeemed_per_s"] for r in rounds)
        tried = C.median(r["attempts_per_s"] for r in rounds)
        client = C.median(r["client_cpu_us"] for r in rounds)
        summary[name] = {"redeemed_per_s": redeemed, "attempts_per_s": tried, "cpu_us": client}
        print(
            f"  {name:<10}  {redeemed:8.0f} redemptions/s  {tried:8.0f} attempts/s  "
            f"{client:6.0f} us client CPU/attempt  no double success in {len(rounds)} rounds"
        )
    pg = summary["postgresql"]
    lite = summary["sqlite"]
    assert isinstance(pg, dict) and isinstance(lite, dict)
    print(f"  PostgreSQL / SQLite: {pg['redeemed_per_s'] / lite['redeemed_per_s']:.2f}x")
    return summary


if __name__ == "__main__":
    main()
