"""A day (or several) of an alliance's shops, played through the real MQTT path.

`python -m lab.simulator --config cloud.toml [--routers 20] [--days 3] [--speed 480]`

Given a running cloud (broker, ingest, database: lab.cloud.CloudStack, or any whose
CloudSettings you have), it enrols `routers` routers by claim code (lab.sim_fleet), then
runs each as the agent's own cloud link does, all in this one asyncio process: a real
spool (agent.link.spooler: boot_id and seq stamped on storing, events forgotten only
when the cloud's receipt names them), a real agent.link.Link (TLS with the router's own
certificate, retained online status with agent_version, clients, config_version and spool
figures, an offline Last Will, config acknowledged, commands answered), and the agent's
Emitter, the one place a MAC becomes a device_id. What happens comes from lab.sim_day,
deterministic from `--seed`, played `--speed` times faster than real time (a quiet hour
at most, so nights take seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from ipaddress import IPv4Address
from pathlib import Path

import aiomqtt

from agent.clients import Client
from agent.credentials import CA_FILE, CERT_FILE, KEY_FILE
from agent.events import Emitter
from agent.link.identity import Identity, TlsFiles
from agent.link.link import Link
from agent.link.spool_db import SpoolDB
from agent.link.spooler import Spooler
from agent.sessions import Ended, EndReason, Session
from agent.settings import Settings
from agent.wire import Event, EventKind, Receipt, RouterConfig
from cloud.settings import CloudSettings, load_cloud_settings
from lab.sim_day import HOUR, SESSION_TIMEOUT, TERMS_VERSION, Happening, plan
from lab.sim_fleet import SimRouter, enrol_fleet

log = logging.getLogger("loopspot.simulator")
DEFAULT_SPEED = 480.0  # a shop's 16-hour day in about two minutes
QUIET_GAP = HOUR  # longer lulls (nights) are played as this much simulated time
STATUS_EVERY = 5.0  # real seconds between status refreshes (clients now, spool figures)
CONNECT_TIMEOUT = 30.0
DRAIN_TIMEOUT = 120.0


class ShopRouter:
    """The LocalRouter of a simulated shop: sessions counted, configs applied, commands done."""

    def __init__(self) -> None:
        self.config_version = 0
        self.online: set[str] = set()  # MACs with a session now
        self.configs: list[RouterConfig] = []

    def clients(self) -> int:
        """Phones with a session now."""
        return len(self.online)

    async def apply_config(self, config: RouterConfig) -> str:
        """Take the config; the simulated router has nothing to refuse."""
        self.config_version = config.version
        self.configs.append(config)
        return ""

    async def revoke_device(self, device_id: str) -> str:
        """Done (the simulated phone simply goes on with its day)."""
        return ""

    async def reload_config(self) -> str:
        """Nothing to reload."""
        return ""

    async def coupons_spent(self, coupon_ids: tuple[str, ...]) -> str:
        """Noted."""
        return ""


class CountingSpooler(Spooler):
    """The agent's spooler, counting what went in and what the cloud's receipts took out."""

    def __init__(self, open_db: Callable[[], SpoolDB], receipted: asyncio.Event) -> None:
        super().__init__(open_db)
        self.put_count = 0
        self.forgotten = 0
        self._receipted = receipted  # set at each receipt, for whoever waits for the drain

    def put(self, event: Event) -> None:
        """Queue one event, counted."""
        self.put_count += 1
        super().put(event)

    async def receipted(self, receipt: Receipt) -> int:
        """Forget what `receipt` names, counted."""
        gone = await super().receipted(receipt)
        self.forgotten += gone
        self._receipted.set()
        return gone


class Shop:
    """One simulated router: spool, link and emitter, as agent.link.runtime wires them."""

    def __init__(
        self, router: SimRouter, connect: tuple[str, int], state: Path, receipted: asyncio.Event
    ) -> None:
        agent = Settings()
        self.router = router
        self.local = ShopRouter()
        (state / "tmpfs").mkdir(parents=True, exist_ok=True)
        (state / "flash").mkdir(parents=True, exist_ok=True)
        self.spooler = CountingSpooler(
            partial(
                SpoolDB,
                state / "tmpfs",
                state / "flash",
                router.router_id,
                agent.spool_max_events,
                agent.spool_flush_interval,
            ),
            receipted,
        )
        folder = router.credentials
        identity = Identity(
            router.router_id,
            connect[0],
            connect[1],
            router.alliance_key,
            tls=TlsFiles(folder / CA_FILE, folder / CERT_FILE, folder / KEY_FILE),
        )
        self.link = Link(
            identity,
            self.spooler,
            self.local,
            keepalive=agent.cloud_keepalive,
            status_interval=agent.cloud_status_interval,
        )
        self.emitter = Emitter(router.router_id, router.alliance_key, self.spooler.put)
        self._spool_tasks: list[asyncio.Task[None]] = []
        self._link_task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Open the spool and start its writer, its flusher and the link."""
        await self.spooler.open()
        name = self.router.router_id
        self._spool_tasks = [
            asyncio.create_task(self.spooler.run_writer(), name=f"{name}:spool-writer"),
            asyncio.create_task(self.spooler.run_flusher(), name=f"{name}:spool-flusher"),
        ]
        self._link_task = asyncio.create_task(self.link.run(), name=f"{name}:link")

    def see(self, happening: Happening) -> None:
        """Report one happening, as the agent's presence, portal and session core would."""
        h, emit = happening, self.emitter
        if h.kind is EventKind.DEVICE_SEEN:
            emit.device_seen(h.mac, h.at)
        elif h.kind is EventKind.DEVICE_LEFT:
            emit.device_left(h.mac, h.at, h.dwell)
        elif h.kind is EventKind.PORTAL_VIEWED:
            emit.portal_viewed(h.mac, h.at)
        else:
            session = Session(
                client=Client(h.mac, IPv4Address(h.ip)),
                started_at=h.started_at,
                terms_version=TERMS_VERSION,
                expires_at=h.started_at + SESSION_TIMEOUT,
                bytes_counted=h.session_bytes,
            )
            if h.kind is EventKind.TERMS_ACCEPTED:
                emit.terms_accepted(session, h.at)
            elif h.kind is EventKind.SESSION_STARTED:
                self.local.online.add(h.mac)
                emit.session_started(session, h.at)
            elif h.kind is EventKind.SESSION_ENDED:
                self.local.online.discard(h.mac)
                emit.session_ended(Ended(session, h.reason or EndReason.IDLE, h.at))

    @property
    def drained(self) -> bool:
        """Every event put was stored, sent, and forgotten on the cloud's receipt."""
        return self.spooler.forgotten >= self.spooler.put_count

    async def close(self) -> None:
        """Say offline, disconnect, and close the spool."""
        if self._link_task is not None:
            await self.link.stop(self._link_task)
        for task in self._spool_tasks:
            task.cancel()
        await asyncio.gather(*self._spool_tasks, return_exceptions=True)
        await self.spooler.close()


def schedule(happenings: list[Happening], speed: float) -> list[float]:
    """Real seconds from the start at which each happening is played (lulls capped)."""
    offsets, real, previous = [], 0.0, happenings[0].at if happenings else 0.0
    for happening in happenings:
        real += min(happening.at - previous, QUIET_GAP) / speed
        previous = happening.at
        offsets.append(real)
    return offsets


def first_midnight(days: int, today: datetime) -> float:
    """The Unix time of the first simulated day's midnight (UTC): the last day is `today`."""
    midnight = today.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - timedelta(days=days - 1)).timestamp()


class Simulator:
    """Enrol, connect, play, drain, stop: a simulated fleet on a running cloud."""

    def __init__(
        self,
        settings: CloudSettings,
        workdir: Path,
        *,
        routers: int = 20,
        days: int = 3,
        speed: float = DEFAULT_SPEED,
        seed: int = 1,
        connect_host: str | None = None,
        first_day: float | None = None,
    ) -> None:
        self.settings = settings
        self.workdir = workdir
        self.routers = routers
        self.speed = speed
        self.connect = (connect_host or settings.public_broker_host, settings.public_broker_port)
        start = first_midnight(days, datetime.now(UTC)) if first_day is None else first_day
        self.happenings = plan(seed, routers, days, start)
        self.shops: list[Shop] = []
        self._refresher: asyncio.Task[None] | None = None
        self._receipted = asyncio.Event()

    async def start(self) -> None:
        """Enrol the routers and connect each; return once all are online."""
        now = datetime.now(UTC)
        fleet = await asyncio.to_thread(enrol_fleet, self.settings, self.workdir, self.routers, now)
        self.shops = [
            Shop(r, self.connect, self.workdir / r.router_id, self._receipted) for r in fleet
        ]
        for shop in self.shops:
            await shop.open()
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await asyncio.gather(*(shop.link.connected.wait() for shop in self.shops))
        self._refresher = asyncio.create_task(self._refresh(), name="simulator:status")
        log.info("simulator: %d routers online", len(self.shops))

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(STATUS_EVERY)
            for shop in self.shops:
                with contextlib.suppress(aiomqtt.MqttError):  # a link between connections
                    await shop.link.publish_status()

    async def play(self) -> None:
        """Hand every happening to its shop's router at its (compressed) time."""
        began = time.monotonic()
        for happening, offset in zip(
            self.happenings, schedule(self.happenings, self.speed), strict=True
        ):
            delay = began + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.shops[happening.shop].see(happening)
        log.info("simulator: played %d events", len(self.happenings))

    async def drain(self) -> None:
        """Return once every spool is empty: the cloud stored and receipted everything."""
        while True:
            self._receipted.clear()
            if all(shop.drained for shop in self.shops):
                return
            await self._receipted.wait()

    async def stop(self) -> None:
        """Each router says offline and disconnects; spools are closed."""
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        await asyncio.gather(*(shop.close() for shop in self.shops))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab.simulator", description=__doc__)
    parser.add_argument("--config", type=Path, help="the cloud's TOML (LOOPSPOT_* win)")
    parser.add_argument("--routers", type=int, default=20)
    parser.add_argument("--days", type=int, default=3, help="the last one is today")
    parser.add_argument("--speed", type=float, default=DEFAULT_SPEED, help="x real time")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--connect-host", help="the broker's address from here")
    parser.add_argument("--workdir", type=Path, help="credentials and spools (default: temp)")
    parser.add_argument("--stay", action="store_true", help="stay online after the days")
    return parser


async def _run(args: argparse.Namespace) -> None:
    settings = load_cloud_settings(args.config)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="loopspot-sim-"))
    sim = Simulator(
        settings,
        workdir,
        routers=args.routers,
        days=args.days,
        speed=args.speed,
        seed=args.seed,
        connect_host=args.connect_host,
    )
    await sim.start()
    try:
        print(f"{len(sim.shops)} routers online; playing {len(sim.happenings)} events", flush=True)
        await sim.play()
        async with asyncio.timeout(DRAIN_TIMEOUT):
            await sim.drain()
        print("every event stored and receipted", flush=True)
        if args.stay:
            await asyncio.Event().wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the simulator; 0 when everything it played was stored, 1 otherwise."""
    args = _parser().parse_args(argv)
    if args.routers < 1 or args.days < 1 or args.speed <= 0:
        print("error: --routers and --days must be at least 1, --speed above 0", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 0
    except TimeoutError:
        print("error: the cloud did not take every event in time", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
