"""The agent's coordinator: the session core, wired to the gate and the store.

Session state changes only on the event-loop thread. nftables and sqlite3 each run on
their own single worker thread, so the loop never blocks and neither is used concurrently.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, TypeVar

from agent.access import DEFAULT_CLASS, STAFF_CLASS, SpeedLimit, TrustedDevice, limit_of
from agent.clients import Client
from agent.errors import ClientUnknown, GateError
from agent.events import NO_EVENTS, SessionEvents
from agent.flash import replace_file
from agent.gate.gate import BOOT_GATE_FILE, Gate, forget_connections
from agent.gate.neighbours import ARP_TABLE, ip_of, mac_of
from agent.gate.netlink import NeighbourLookup
from agent.ruleset import TABLE, GateSpec, Grant
from agent.sessions import (
    Ended,
    EndReason,
    Limits,
    Observed,
    Session,
    SessionBook,
    reconcile,
)
from agent.settings import Settings
from agent.store import SessionStore

log = logging.getLogger("loopspot.agent")
T = TypeVar("T")
STAFF = "staff"  # the terms version of a session staff granted: no terms were accepted


def limits_of(settings: Settings) -> Limits:
    """The session limits in the settings."""
    return Limits(settings.session_timeout, settings.idle_timeout, settings.data_quota)


class AgentService:
    """Grants, revokes and keeps sessions; the portal and the control socket call it."""

    def __init__(
        self,
        settings: Settings,
        gate: Gate,
        store: SessionStore,
        *,
        clock: Callable[[], float] = time.time,
        arp_table: Path = ARP_TABLE,
        flush_conntrack: bool = True,
        events: SessionEvents = NO_EVENTS,
    ) -> None:
        self.settings = settings
        self.gate = gate
        self.store = store
        self.clock = clock
        self.arp_table = arp_table
        self._neighbours = NeighbourLookup(tuple(lan.interface for lan in settings.lan_portals))
        self._speed_limits = settings.speed_limits
        # MACs trusted without the portal: the file's, and those the cloud's device ids name
        self._trusted_macs = {d.mac for d in settings.trusted_devices}
        self.flush_conntrack = flush_conntrack
        self.events = events
        self.status_parts: list[Callable[[], dict[str, Any]]] = []  # e.g. the cloud link's
        self.book = SessionBook(limits_of(settings))
        self.started_at = clock()
        self._nft = ThreadPoolExecutor(1, thread_name_prefix="nft")
        # Counter reads (10,000 counters: ~80 ms) on their own thread never hold up a grant.
        self._counters = ThreadPoolExecutor(1, thread_name_prefix="nft-counters")
        self._db = ThreadPoolExecutor(1, thread_name_prefix="store")

    async def _on(self, pool: ThreadPoolExecutor | None, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def start(self) -> list[Ended]:
        """Reconcile saved sessions with the kernel set and install the table with them."""
        now = self.clock()
        saved = await self._on(self._db, self.store.load)
        exists = await self._on(self._nft, self.gate.exists)
        kernel = await self._on(self._nft, self.gate.read_clients) if exists else {}
        plan = reconcile(
            saved,
            {c: (k.expires_in, k.bytes_total) for c, k in kernel.items()},
            now,
            self.book.limits,
        )
        await self._install_table(plan.sessions, now)
        await self._on(self._db, self._keep_boot_gate)
        self.book = SessionBook(self.book.limits, plan.sessions)
        await self._on(self._db, self.store.replace_all, plan.sessions)
        await self._on(self._db, self.store.record_ended, plan.ended)
        for ended in plan.ended:
            self.events.session_ended(ended)
        for adopted in plan.adopted:
            self.events.session_started(adopted, now)
        log.info(
            "reconciled: %d sessions kept, %d ended, %d adopted from the kernel",
            len(plan.sessions),
            len(plan.ended),
            len(plan.adopted),
        )
        return plan.ended

    async def identify(self, ip: IPv4Address) -> Client:
        """The client behind `ip`, from the neighbour table; raises ClientUnknown.

        Asked on the loop itself: one netlink round trip (about 25 µs) costs less than
        handing it to a thread, and a pool of threads would cost the router memory.
        """
        return Client(mac_of(ip, self.arp_table, self._neighbours), ip)

    def portal_url_for(self, ip: IPv4Address) -> str:
        """The portal's URL on the LAN the device behind `ip` is on (one netlink ask, only
        when LANs have portal addresses of their own); the main address if it is not found."""
        lans = self.settings.lan_portals
        if len({lan.address for lan in lans}) > 1:
            found = self._neighbours.find(ip)
            for lan in lans:
                if found is not None and lan.interface == found[0]:
                    return self.settings.portal_url_at(lan.address)
        return self.settings.portal_url

    def session_of(self, client: Client) -> Session | None:
        """The client's live session, if it is authorized."""
        return self.book.of_client(client)

    def speed_limit(self, session: Session) -> SpeedLimit:
        """The per-phone limit of the session's speed class, as the settings give it now."""
        return limit_of(self._speed_limits, session.speed_class)

    def _grant_of(self, session: Session, now: float) -> Grant:
        return Grant(session.client, session.kernel_timeout(now), self.speed_limit(session))

    def is_trusted(self, mac: str) -> bool:
        """True for a device that passes without the portal: no session, no visit."""
        return mac in self._trusted_macs

    async def trust_seen(self, macs: Iterable[str], device_id_of: Callable[[str], str]) -> None:
        """Let through, from now on, the devices seen whose device id the cloud trusts."""
        wanted = set(self.settings.trusted_device_ids)
        if not wanted:
            return
        new = [m for m in macs if m not in self._trusted_macs and device_id_of(m) in wanted]
        if not new:
            return
        self._trusted_macs.update(new)
        spec = self.gate.spec
        added = tuple(TrustedDevice(mac) for mac in new)
        self.gate.spec = dataclasses.replace(spec, trusted=spec.trusted + added)
        await self._on(self._nft, self.gate.trust, new)
        log.info("%d devices the cloud trusts pass without the portal", len(new))

    async def accept(
        self, client: Client, terms_version: str, speed_class: str = DEFAULT_CLASS
    ) -> Session:
        """The shopper accepted the terms: start the session and open the gate.

        `speed_class` names the per-phone limits (agent.access); a device still in a
        session keeps its own. If the kernel refuses the grant, GateError is raised, but
        the session stands: the next counter poll finds its element missing and adds it.
        """
        now = self.clock()
        previous = self.book.of_mac(client.mac)
        session, moved = self.book.start(client, now, terms_version, speed_class)
        if moved is not None:
            await self._close_in_kernel(moved.session.client)
        try:
            await self._on(self._nft, self.gate.grant, self._grant_of(session, now))
        finally:  # a grant the kernel refused is retried by the next counter poll
            await self._on(self._db, self.store.record_acceptance, session, now)
            if moved is not None:
                await self._on(self._db, self.store.record_ended, [moved])
            self._report_start(previous, session, now, terms_version)
        return session

    def _report_start(
        self, previous: Session | None, session: Session, now: float, terms_version: str
    ) -> None:
        # A device that moved to another IP keeps its session: the cloud sees no change.
        if previous is None or previous.started_at != session.started_at:
            if previous is not None:  # it had run out, unnoticed until now
                reason = previous.end_reason(now) or EndReason.TIMEOUT
                self.events.session_ended(Ended(previous, reason, now))
            self.events.session_started(session, now)
        if terms_version != STAFF:
            self.events.terms_accepted(session, now)

    async def grant_mac(self, mac: str, ip: IPv4Address | None = None) -> Session:
        """Staff let a device through without the portal."""
        if ip is None:
            ip = ip_of(mac, self.arp_table)  # a small /proc file, read on the loop
        return await self.accept(Client(mac, ip), STAFF, STAFF_CLASS)

    async def revoke(self, mac: str, reason: EndReason = EndReason.REVOKED) -> Ended | None:
        """End a device's session now and cut its open connections."""
        ended = self.book.end(mac, self.clock(), reason)
        if ended is not None:
            await self._close_in_kernel(ended.session.client)
            await self._on(self._db, self.store.record_ended, [ended])
            self.events.session_ended(ended)
        return ended

    async def _close_in_kernel(self, client: Client) -> None:
        await self._on(self._nft, self.gate.revoke, client)
        if self.flush_conntrack:
            await self._on(None, forget_connections, client.ip)

    async def poll(self) -> Observed:
        """Read the kernel counters, end sessions past a limit, restore lost elements.

        A table that vanished (deleted by hand, or a whole ruleset flushed) is put back
        first, with every live session: without it the LAN is open to every phone.
        """
        try:
            kernel = await self._on(self._counters, self.gate.read_clients)
        except GateError:
            if await self._on(self._counters, self.gate.exists):
                raise
            await self._put_table_back()
            kernel = await self._on(self._counters, self.gate.read_clients)
        before = {s.client.mac: s for s in self.book.all()}
        observed = self.book.observe({c: k.bytes_total for c, k in kernel.items()}, self.clock())
        now = self.clock()
        for ended in observed.ended:
            log.info("session of %s ended: %s", ended.session.client.ip, ended.reason.value)
            await self._close_in_kernel(ended.session.client)
            self.events.session_ended(ended)
        for lost in observed.lost:
            log.warning("element of %s vanished from the kernel; restoring it", lost.client.ip)
            await self._on(self._nft, self.gate.grant, self._grant_of(lost, now))
        changed = [s for s in self.book.all() if before.get(s.client.mac) is not s]
        await self._on(self._db, self.store.save, changed)
        await self._on(self._db, self.store.record_ended, observed.ended)
        return observed

    async def _put_table_back(self) -> None:
        sessions = self.book.all()
        log.warning("table %s was gone; putting it back with %d sessions", TABLE, len(sessions))
        await self._install_table(sessions, self.clock())
        self.book.counters_restarted()

    async def _install_table(self, sessions: Iterable[Session], now: float) -> None:
        """The whole table, each session let through for the time it has left."""
        grants = [self._grant_of(s, now) for s in sessions]
        await self._on(self._nft, self.gate.install, grants)

    async def portal_viewed(self, ip: IPv4Address) -> None:
        """The device behind `ip` was shown the portal page (unknown devices are not counted)."""
        try:
            client = await self.identify(ip)
        except (ClientUnknown, OSError):
            return
        if not self.is_trusted(client.mac):
            self.events.portal_viewed(client.mac, self.clock())

    async def reconfigure(self, settings: Settings) -> None:
        """Apply settings live: the walled garden at once, limits to sessions that start next.

        New speed limits or trusted devices change the table's chains: it is installed
        again, atomically, with every session at its class's new limit.
        """
        before = self.settings
        self.settings = settings
        self.book.limits = limits_of(settings)
        if (settings.speed_limits, settings.trusted_devices, settings.trusted_device_ids) != (
            before.speed_limits,
            before.trusted_devices,
            before.trusted_device_ids,
        ):  # devices trusted by id are found again by the next look at the LAN
            self._speed_limits = settings.speed_limits
            self._trusted_macs = {d.mac for d in settings.trusted_devices}
            self.gate.spec = GateSpec.from_settings(settings)
            await self._install_table(self.book.all(), self.clock())
            self.book.counters_restarted()
            await self._on(self._db, self._keep_boot_gate)
        elif settings.walled_garden_addresses != before.walled_garden_addresses:
            addresses = settings.walled_garden_addresses
            await self._on(self._nft, self.gate.set_walled_garden, addresses)
            self.gate.spec = GateSpec.from_settings(settings)  # kept on install
            await self._on(self._db, self._keep_boot_gate)

    def _keep_boot_gate(self) -> None:
        """Keep the table the router loads at boot in step with the one installed."""
        try:
            replace_file(self.settings.flash_dir / BOOT_GATE_FILE, self.gate.boot_script())
        except OSError as error:
            log.warning("the boot-time gate on flash is not up to date: %s", error)

    async def snapshot(self) -> None:
        """Write the session database to flash."""
        await self._on(self._db, self.store.snapshot)

    def status(self) -> dict[str, Any]:
        """A summary for `loopspot-agent status`."""
        return {
            "clients": len(self.book),
            "uptime": round(self.clock() - self.started_at, 1),
            "nft_backend": self.gate.grants.name,
            "portal": self.settings.portal_url,
            "session_timeout": self.settings.session_timeout,
            "idle_timeout": self.settings.idle_timeout,
            "data_quota": self.settings.data_quota,
            "download_limit": self.settings.download_limit,
            "upload_limit": self.settings.upload_limit,
            "trusted_devices": len(self._trusted_macs),
        } | {key: value for part in self.status_parts for key, value in part().items()}

    def describe(self, session: Session) -> dict[str, Any]:
        """One session as plain data."""
        now = self.clock()
        return {
            "mac": session.client.mac,
            "ip": str(session.client.ip),
            "started_at": session.started_at,
            "terms_version": session.terms_version,
            "seconds_remaining": session.seconds_remaining(now),
            "bytes_used": session.bytes_used,
            "bytes_remaining": session.bytes_remaining(),
            "idle_for": round(now - session.last_activity_at, 1),
        }

    async def close(self) -> None:
        """Snapshot and stop the workers. The table stays, so phones stay online."""
        await self.snapshot()
        await self._on(self._db, self.store.close)
        self._nft.shutdown(wait=True)
        self._counters.shutdown(wait=True)
        self._db.shutdown(wait=True)
