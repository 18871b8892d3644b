"""The cloud side of a running agent: identity, spool, events, the link and the presence watch.

`open_cloud` comes before the service starts, because the service reports through the
emitter it makes; `CloudLink.start` comes after, because the link acts on the service.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from agent.child import run_child
from agent.credentials import CERT_FILE
from agent.dhcp_leases import LeaseWatch, read_leases
from agent.events import Emitter
from agent.flash import replace_file
from agent.link.errors import IdentityError
from agent.link.identity import Identity, resolve_identity
from agent.link.link import Link
from agent.link.local import AgentRouter
from agent.link.spool_db import SpoolDB
from agent.link.spooler import Spooler
from agent.presence import (
    VISITS_FILE,
    Arrived,
    NeighbourReader,
    Presence,
    latest,
    load_visits,
    visits_json,
)
from agent.service import AgentService
from agent.settings import Settings
from agent.wire import WalletReply

log = logging.getLogger("loopspot.link")


async def watch_presence(
    settings: Settings,
    service: AgentService,
    emitter: Emitter,
    clock: Callable[[], float] = time.time,
) -> None:
    """Report devices arriving and leaving, looking every presence_interval; until cancelled.

    The visits in progress are kept on tmpfs, so a restarted agent neither reports a device
    that never left as arriving again nor forgets one that left meanwhile.
    """
    kept = settings.state_dir / VISITS_FILE
    presence = Presence(settings.presence_left_after, await asyncio.to_thread(load_visits, kept))
    leases = LeaseWatch()
    reader = NeighbourReader(settings.lan_interfaces)
    while True:
        now = clock()
        try:
            neighbours = await asyncio.to_thread(reader.read, now)
            renewed = leases.renewed(
                await asyncio.to_thread(read_leases, settings.presence_dhcp_leases)
            )
        except OSError as error:
            log.warning("presence: cannot read the neighbour table or leases: %s", error)
        else:
            active = {s.client.mac: s.last_activity_at for s in service.book.all()}
            sightings = latest(neighbours, dict.fromkeys(renewed, now), active)
            for change in presence.observe(sightings, now):
                if isinstance(change, Arrived):
                    emitter.device_seen(change.mac, change.at)
                else:
                    emitter.device_left(change.mac, change.at, change.dwell)
            try:
                await asyncio.to_thread(replace_file, kept, visits_json(presence.visits))
            except OSError as error:
                log.warning("presence: cannot keep the visits in %s: %s", kept, error)
        await asyncio.sleep(settings.presence_interval)


CERTIFICATE_FIRST_CHECK = 60.0  # seconds after start
CERTIFICATE_CHECK = 6 * 3600.0  # seconds between checks
CERTIFICATE_CHECK_TIMEOUT = 120.0  # a renewal's HTTPS call gives up after 30 s


async def watch_certificate(
    credentials_dir: Path,
    first: float = CERTIFICATE_FIRST_CHECK,
    every: float = CERTIFICATE_CHECK,
) -> None:
    """Renew the router's certificate when it is due (agent.renewal); until cancelled.

    Each check is a short process of its own: renewal may load `cryptography` (agent.keys),
    which the daemon never imports (megabytes it would keep for a task of seconds a year).
    The link takes a renewed certificate at its next connection.
    """
    await asyncio.sleep(first)
    renewal = (sys.executable, "-m", "agent.renewal", "--dir", str(credentials_dir), "--if-due")
    while True:
        check = await run_child(*renewal, within=CERTIFICATE_CHECK_TIMEOUT)
        if not check.ok:
            log.warning("certificate renewal failed: %s", check.said)
        elif check.said.startswith("renewed"):
            log.info("certificate %s", check.said)
        await asyncio.sleep(every)


class CloudLink:
    """The link's parts and tasks, started and stopped together."""

    def __init__(self, settings: Settings, identity: Identity, spooler: Spooler) -> None:
        self.settings = settings
        self.identity = identity
        self.spooler = spooler
        self.emitter = Emitter(identity.router_id, identity.alliance_key, spooler.put)
        self.link: Link | None = None
        self._link_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, service: AgentService, local: AgentRouter, issuer_key: str = "") -> None:
        """Start the link, the spool's writer and flusher, and the presence watch."""
        settings = self.settings
        self.link = Link(
            self.identity,
            self.spooler,
            local,
            keepalive=settings.cloud_keepalive,
            status_interval=settings.cloud_status_interval,
            issuer_key=issuer_key,
        )
        self._link_task = asyncio.create_task(self.link.run(), name="cloud-link")
        service.status_parts.append(self.status)
        self._tasks = [
            asyncio.create_task(self.spooler.run_writer(), name="spool-writer"),
            asyncio.create_task(self.spooler.run_flusher(), name="spool-flusher"),
            asyncio.create_task(
                watch_presence(settings, service, self.emitter), name="presence-watch"
            ),
        ]
        tls = self.identity.tls
        if tls is not None and tls.cert == settings.cloud_credentials_dir / CERT_FILE:
            # enrolled with a claim code; certificates set by hand in UCI are renewed by hand
            watch = watch_certificate(settings.cloud_credentials_dir)
            self._tasks.append(asyncio.create_task(watch, name="certificate-watch"))

    async def wallet(self, device_id: str) -> WalletReply | None:
        """The cloud's wallet of a device, or None while the link is down or slow."""
        return await self.link.wallet(device_id) if self.link is not None else None

    def status(self) -> dict[str, Any]:
        """The link's part of `loopspot-agent status`."""
        stats = self.spooler.stats
        return {
            "cloud": self.link.reconnect.state.value if self.link else "off",
            "router_id": self.identity.router_id,
            "boot_id": self.spooler.boot_id,
            "spool_depth": stats.depth,
            "spool_unconfirmed": stats.unconfirmed,  # the broker has them; no receipt yet
            "spool_dropped": stats.dropped_total,
            "spool_refused": stats.refused,  # dead-lettered by the cloud, deleted unstored
        }

    async def stop(self) -> None:
        """Say offline, disconnect, store what is queued and snapshot the spool to flash."""
        if self.link is not None and self._link_task is not None:
            await self.link.stop(self._link_task)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.spooler.close()


async def open_cloud(settings: Settings) -> CloudLink | None:
    """The identity and the spool, ready for events; None (logged) if the router has no identity."""
    try:
        identity = await asyncio.to_thread(resolve_identity, settings)
    except IdentityError as error:
        log.error("cloud link off: %s", error)
        return None
    spooler = Spooler(
        partial(
            SpoolDB,
            settings.state_dir,
            settings.flash_dir,
            identity.router_id,
            settings.spool_max_events,
            settings.spool_flush_interval,
        )
    )
    await spooler.open()
    log.info("cloud link: router %s, boot %s", identity.router_id, spooler.boot_id)
    return CloudLink(settings, identity, spooler)
