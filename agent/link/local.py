"""The link's hands on this router: apply pushed settings live, keep them on flash, revoke.

The cloud's config is laid over the UCI file's settings; the last one applied is kept in
flash_dir, so it holds across restarts until a newer version replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

from agent.child import run_child
from agent.config import load_settings
from agent.coupons.desk import CouponDesk
from agent.coupons.files import save_plan
from agent.coupons.plan import ActivePlan, PlanError
from agent.errors import LoopspotError
from agent.flash import replace_file, write_atomically
from agent.link.commands import (
    LIVE_FIELDS,
    ConfigRefused,
    find_device,
    live_changes,
    settings_with,
)
from agent.portal.tls import (
    CERTIFY_EVERY,
    NAME_FILE,
    PortalTls,
    name_file_text,
    portal_name_of,
)
from agent.service import AgentService
from agent.settings import Settings
from agent.wire import RouterConfig, WireError, decode

log = logging.getLogger("loopspot.link")

APPLIED_FILE = "cloud-config.json"
# The cloud's walled-garden domains, one a line, in flash_dir while a pushed config sets
# them; the OpenWrt package's dnsmasq-sync reads it (deploy/openwrt/files/dnsmasq-loopspot.sh)
# and makes dnsmasq fill the gate's walled_garden set with those domains' addresses.
CLOUD_DOMAINS_FILE = "walled-garden.domains"
DNSMASQ_SYNC = Path("/usr/libexec/loopspot/dnsmasq-sync")  # where the package installs it
SYNC_TIMEOUT = 60.0


def load_applied(flash_dir: Path) -> RouterConfig | None:
    """The cloud config applied last, from flash; None if there is none or it is unreadable."""
    path = flash_dir / APPLIED_FILE
    try:
        return decode(path.read_bytes(), RouterConfig)
    except FileNotFoundError:
        return None
    except (OSError, WireError) as error:
        log.error("ignoring %s: %s", path, error)
        return None


def save_applied(flash_dir: Path, config: RouterConfig) -> None:
    """Keep `config` on flash atomically (temporary file, fsync, rename)."""
    write_atomically(flash_dir / APPLIED_FILE, config.encode())


def with_applied(settings: Settings, applied: RouterConfig | None) -> Settings:
    """The UCI settings with the stored cloud config laid over; unchanged if it no longer fits."""
    if applied is None:
        return settings
    try:
        return settings_with(settings, applied)
    except ConfigRefused as error:
        log.error("stored cloud config %d no longer applies: %s", applied.version, error)
        return settings


def cloud_domains_text(settings: Settings, applied: RouterConfig | None) -> str | None:
    """The domains file's text: the domains in force, if the cloud set them; else None."""
    if applied is None or applied.walled_garden_domains is None:
        return None
    return "".join(f"{domain}\n" for domain in settings.walled_garden_domains)


class AgentRouter:
    """This router as the link sees it: a LocalRouter over the AgentService."""

    def __init__(
        self,
        service: AgentService,
        base: Settings,
        applied: RouterConfig | None,
        alliance_key: bytes,
        *,
        config_file: Path | None = None,
        on_settings: Callable[[Settings], None] = lambda settings: None,
        dnsmasq_sync: Path = DNSMASQ_SYNC,
        desk: CouponDesk | None = None,
        portal_tls: PortalTls | None = None,
    ) -> None:
        self.service = service
        self.base = base  # the UCI file's settings, before the cloud's
        self.applied = applied
        self.alliance_key = alliance_key
        self.config_file = config_file
        self.on_settings = on_settings
        self.dnsmasq_sync = dnsmasq_sync
        self.desk = desk
        self.portal_tls = portal_tls
        self._portal_wake = asyncio.Event()  # check the portal's certificate now: new name, reload

    @property
    def config_version(self) -> int:
        """The version of the cloud config in force (0: none)."""
        return self.applied.version if self.applied is not None else 0

    def clients(self) -> int:
        """Authorized clients now."""
        return len(self.service.book)

    async def _apply(self, wanted: Settings) -> Settings:
        """Put the live fields of `wanted` in force; the running settings after."""
        before = self.service.settings
        changes = {name: getattr(wanted, name) for name in LIVE_FIELDS}
        settings = dataclasses.replace(before, **changes)
        await self.service.reconfigure(settings)
        self.on_settings(settings)
        log.info("applied live: %s", ", ".join(live_changes(before, settings)) or "no change")
        return settings

    async def apply_config(self, config: RouterConfig) -> str:
        """Check, apply live and keep a pushed config; nothing changes if a check fails."""
        try:
            settings = settings_with(self.base, config)
            plan = self._prepare_coupons(config)  # checked first: a bad plan changes nothing
            name = portal_name_of(config)
            await self._apply(settings)
        except (ConfigRefused, LoopspotError) as error:
            log.warning("refused cloud config %d: %s", config.version, error)
            return str(error)
        if name != portal_name_of(self.applied):
            self._portal_wake.set()  # keep_portal_certified gets its certificate now
        self.applied = config
        if self.desk is not None and config.coupons is not None:
            self.desk.use(plan)
            try:
                await asyncio.to_thread(save_plan, self.base.flash_dir, config.coupons)
            except OSError as error:
                return f"coupons applied, but not kept on flash: {error.strerror or error}"
        try:
            await asyncio.to_thread(save_applied, self.base.flash_dir, config)
        except OSError as error:
            return f"applied, but not kept on flash: {error.strerror or error}"
        await self.publish_domains()
        return ""

    def _prepare_coupons(self, config: RouterConfig) -> ActivePlan | None:
        """The config's coupon plan, checked; None when it has none (the current one stays)."""
        if config.coupons is None:
            return None
        if self.desk is None:
            raise ConfigRefused("coupons: this router has no coupon desk (no alliance key)")
        try:
            return self.desk.prepare(config.coupons)
        except PlanError as error:
            raise ConfigRefused(str(error)) from None

    async def keep_portal_certified(self, every: float = CERTIFY_EVERY) -> None:
        """Serve the HTTPS portal with a certificate for the pushed name; until cancelled.

        The stored certificate is served at once; then it is checked, and renewed when due,
        at start, whenever the pushed name changes, and every `every` seconds.
        """
        tls = self.portal_tls
        if tls is None:
            return
        try:
            await tls.serve(portal_name_of(self.applied))
        except (OSError, LoopspotError) as error:
            log.error("HTTPS portal not served with the stored certificate: %s", error)
        while True:
            self._portal_wake.clear()
            try:
                await self.publish_domains()
                await tls.certify(self._pushed_name())
                await self.publish_domains()
            except Exception:  # a failed round must not stop the next one
                log.exception("portal certificate check failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._portal_wake.wait(), every)

    def _pushed_name(self) -> str | None:
        try:
            return portal_name_of(self.applied)
        except LoopspotError:  # a stored config from before the check: no name
            return None

    async def publish_domains(self) -> None:
        """Give dnsmasq the walled-garden domains and portal name in force, if changed (OpenWrt).

        The name is there while the HTTPS portal serves a certificate for it (agent.portal.tls).

        Addresses go straight into the gate's set; a domain's addresses are only known when
        a phone looks it up, so dnsmasq adds them (its nftset option), from the list that
        dnsmasq-sync writes into /etc/config/dhcp.
        """
        path = self.base.flash_dir / CLOUD_DOMAINS_FILE
        text = cloud_domains_text(self.service.settings, self.applied)
        name = name_file_text(self.portal_tls)  # the HTTPS API's name, for option 114
        try:
            named = await asyncio.to_thread(replace_file, path.with_name(NAME_FILE), name)
            if not await asyncio.to_thread(replace_file, path, text) and not named:
                return
        except OSError as error:
            log.warning("walled-garden domains not given to dnsmasq: %s", error)
            return
        if not self.dnsmasq_sync.exists():
            log.info("walled-garden domains kept in %s; no %s here", path, self.dnsmasq_sync)
            return
        sync = await run_child(str(self.dnsmasq_sync), within=SYNC_TIMEOUT)
        if not sync.ok:
            log.warning("%s failed: %s", self.dnsmasq_sync, sync.said)

    async def revoke_device(self, device_id: str) -> str:
        """End the session of the device whose device_id this is."""
        macs = [session.client.mac for session in self.service.book.all()]
        mac = find_device(self.alliance_key, device_id, macs)
        if mac is None:
            return f"device {device_id} has no session here"
        await self.service.revoke(mac)
        return ""

    async def coupons_spent(self, coupon_ids: tuple[str, ...]) -> str:
        """Put coupons redeemed at other routers on this router's spent list."""
        if self.desk is None:
            return "coupons are off on this router"
        added = await self.desk.spent_elsewhere(coupon_ids)
        log.info("coupons: %d of %d spent elsewhere were new here", added, len(coupon_ids))
        return ""

    async def reload_config(self) -> str:
        """Read the UCI file again; apply what can change live, name what needs a restart."""
        if self.config_file is None:
            return "this agent was started without a config file"
        try:
            base = await asyncio.to_thread(load_settings, self.config_file)
        except LoopspotError as error:
            return str(error)
        wanted = with_applied(base, self.applied)
        try:
            live = await self._apply(wanted)
        except LoopspotError as error:
            return str(error)
        self.base = base
        self._portal_wake.set()  # and check the portal's certificate now
        await self.publish_domains()
        fixed = [
            f.name
            for f in dataclasses.fields(wanted)
            if getattr(wanted, f.name) != getattr(live, f.name)
        ]
        return f"applied; restart to change {', '.join(fixed)}" if fixed else ""
