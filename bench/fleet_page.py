"""The fleet page at fleet size: page, API and CSV latency, and change-to-screen latency.

    python -m bench.fleet_page [--routers 2000] [--requests 40] [--changes 30]

On PostgreSQL and SQLite in the same run, with `--routers` routers under 40 merchants (half
brought in by channel agents) and a config history. The web app runs in this process on
a free port (aiohttp, real HTTP). Page figures are per request as an operator and as a
channel agent; "change to stream" is from an UPDATE of one router's row committing to that
row arriving on an open /fleet/events stream. Needs root only for PostgreSQL's initdb.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime

import aiohttp
from aiohttp import web
from sqlalchemy import Engine, insert, update
from sqlalchemy.orm import Session

from bench import common as C
from cloud import accounts
from cloud.db import make_engine, migrate
from cloud.enrol_fleet import create_merchant, create_site
from cloud.models import Router, RouterConfig
from cloud.settings import CloudSettings
from cloud.web.app import make_app
from lab.freeport import free_port
from lab.postgres import Postgres

MERCHANTS = 40
PASSWORD = "bench-password-1"


def populate(engine: Engine, routers: int) -> None:
    """Merchants, sites, routers with configs, an operator and a channel agent."""
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        sites = []
        for m in range(MERCHANTS):
            merchant = create_merchant(session, f"merchant-{m:02d}")
            site = create_site(session, merchant.name, "shop")
            site.city = ("guangzhou", "shenzhen", "foshan")[m % 3]
            sites.append(site.id)
            if m % 2 == 0:
                agent = accounts.channel_agent_named(session, f"agent-{m % 4}", create=True)
                accounts.assign_merchant(session, agent, merchant.id)
        session.flush()
        rows = [
            {
                "id": f"r{n:05d}",
                "site_id": sites[n % MERCHANTS],
                "state": "online" if n % 5 else "offline",
                "enrolled_at": now,
                "last_seen": now,
                "agent_version": "0.9.0",
                "clients": n % 40,
                "config_version": 3,
                "spool_depth": 0,
                "spool_dropped": 0,
            }
            for n in range(routers)
        ]
        session.execute(insert(Router), rows)
        session.execute(
            insert(RouterConfig),
            [{"router_id": r["id"], "version": v, "body": "{}"} for r in rows for v in (1, 2, 3)],
        )
        accounts.create_user(session, "op@bench", "operator", PASSWORD)
        accounts.create_user(session, "agent@bench", "channel_agent", PASSWORD, None, "agent-0")


async def log_in(http: aiohttp.ClientSession, base: str, email: str) -> None:
    """Log in through the form."""
    page = await (await http.get(f"{base}/login")).text()
    token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    answer = await http.post(
        f"{base}/login",
        data={"csrf": token, "email": email, "password": PASSWORD},
        allow_redirects=False,
    )
    if answer.status != 302:
        raise C.BenchError(f"login of {email} failed: {answer.status}")


async def timed(http: aiohttp.ClientSession, url: str, requests: int) -> list[float]:
    """Seconds per request, each read to the end."""
    took = []
    for _ in range(requests):
        started = time.perf_counter()
        async with http.get(url) as answer:
            await answer.read()
            if answer.status != 200:
                raise C.BenchError(f"{url}: {answer.status}")
        took.append(time.perf_counter() - started)
    return took


async def change_to_stream(
    http: aiohttp.ClientSession, base: str, engine: Engine, changes: int
) -> list[float]:
    """Seconds from a committed UPDATE to its row on the stream."""
    took = []
    async with http.get(f"{base}/fleet/events") as stream:
        await stream.content.readline()
        await asyncio.sleep(1.0)
        for n in range(changes):
            wanted = 1000 + n
            with engine.begin() as connection:
                connection.execute(
                    update(Router).where(Router.id == "r00001").values(clients=wanted)
                )
            committed = time.perf_counter()
            while True:
                line = await asyncio.wait_for(stream.content.readline(), 10)
                if line.startswith(b"data: ") and json.loads(line[6:])["clients"] == wanted:
                    break
            took.append(time.perf_counter() - committed)
            await asyncio.sleep(0.13 * (n % 4))  # land at different points of the poll cycle
    return took


async def measure(url: str, args: argparse.Namespace) -> list[list[object]]:
    """Every figure on one database."""
    migrate(url)
    engine = make_engine(url)
    populate(engine, args.routers)
    settings = CloudSettings(database_url=url, web_secret="bench")
    runner = web.AppRunner(make_app(settings, engine, lambda t, p, r: None), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    rows: list[list[object]] = []
    try:
        for who in ("op@bench", "agent@bench"):
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                await log_in(http, base, who)
                for what, path in (
                    ("fleet page (50 rows)", "/fleet"),
                    ("fleet page, city filter", "/fleet?city=foshan"),
                    ("router history page", "/fleet/r00000"),
                    ("CSV of the whole table", "/fleet.csv"),
                ):
                    took = await timed(http, base + path, args.requests)
                    rows.append([who, what, C.ms(C.median(took)), C.ms(C.percentile(took, 95))])
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            await log_in(http, base, "op@bench")
            took = await change_to_stream(http, base, engine, args.changes)
            rows.append(
                ["op@bench", "change to stream", C.ms(C.median(took)), C.ms(C.percentile(took, 95))]
            )
    finally:
        await runner.cleanup()
        engine.dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routers", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--changes", type=int, default=30)
    args = parser.parse_args()
    results: dict[str, list[list[object]]] = {}
    with Postgres() as cluster, tempfile.TemporaryDirectory() as folder:
        results["postgresql"] = asyncio.run(measure(cluster.url, args))
        results["sqlite"] = asyncio.run(measure(f"sqlite:///{folder}/cloud.db", args))
    for database, rows in results.items():
        C.report(
            f"fleet page, {args.routers} routers, {database}",
            ["user", "what", "p50 ms", "p95 ms"],
            rows,
        )


if __name__ == "__main__":
    main()
