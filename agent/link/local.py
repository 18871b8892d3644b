"""The link's hands on this router: apply pushed settings live, keep them on flash, revoke.

The cloud's config is laid over the UCI file's settings; the last one applied is kept in
flash_dir, so it holds across restarts until a newer version replaces it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from agent.config import load_settings
from agent.errors import LoopspotError
from agent.link.commands import (
    LIVE_FIELDS,
    ConfigRefused,
    find_device,
    live_changes,
    settings_with,
)
from agent.ruleset import TABLE, WALLED_GARDEN_SET
from agent.service import AgentService
from agent.settings import Settings
from agent.wire import RouterConfig, WireError, decode

log = logging.getLogger("loopspot.link")

APPLIED_FILE = "cloud-config.json"
GARDEN_DOMAINS_FILE = "walled-garden.dnsmasq"  # nftset lines; see garden_domains_conf


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
    flash_dir.mkdir(parents=True, exist_ok=True)
    path = flash_dir / APPLIED_FILE
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as handle:
        handle.write(config.encode())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def with_applied(settings: Settings, applied: RouterConfig | None) -> Settings:
    """The UCI settings with the stored cloud config laid over; unchanged if it no longer fits."""
    if applied is None:
        return settings
    try:
        return settings_with(settings, applied)
    except ConfigRefused as error:
        log.error("stored cloud config %d no longer applies: %s", applied.version, error)
        return settings


def garden_domains_conf(domains: Iterable[str]) -> str:
    """dnsmasq lines that put the domains' IPv4 addresses into the gate's walled garden."""
    family, table = TABLE.split()
    names = "/".join(domains)
    return f"nftset=/{names}/4#{family}#{table}#{WALLED_GARDEN_SET}\n" if names else ""


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


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
    ) -> None:
        self.service = service
        self.base = base  # the UCI file's settings, before the cloud's
        self.applied = applied
        self.alliance_key = alliance_key
        self.config_file = config_file
        self.on_settings = on_settings

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
        if settings.walled_garden_domains != before.walled_garden_domains:
            path = settings.state_dir / GARDEN_DOMAINS_FILE
            conf = garden_domains_conf(settings.walled_garden_domains)
            await asyncio.to_thread(_write_text, path, conf)
        log.info("applied live: %s", ", ".join(live_changes(before, settings)) or "no change")
        return settings

    async def apply_config(self, config: RouterConfig) -> str:
        """Check, apply live and keep a pushed config; nothing changes if a check fails."""
        try:
            settings = settings_with(self.base, config)
            await self._apply(settings)
        except (ConfigRefused, LoopspotError) as error:
            log.warning("refused cloud config %d: %s", config.version, error)
            return str(error)
        self.applied = config
        try:
            await asyncio.to_thread(save_applied, self.base.flash_dir, config)
        except OSError as error:
            return f"applied, but not kept on flash: {error.strerror or error}"
        return ""

    async def revoke_device(self, device_id: str) -> str:
        """End the session of the device whose device_id this is."""
        macs = [session.client.mac for session in self.service.book.all()]
        mac = find_device(self.alliance_key, device_id, macs)
        if mac is None:
            return f"device {device_id} has no session here"
        await self.service.revoke(mac)
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
        fixed = [
            f.name
            for f in dataclasses.fields(wanted)
            if getattr(wanted, f.name) != getattr(live, f.name)
        ]
        return f"applied; restart to change {', '.join(fixed)}" if fixed else ""
