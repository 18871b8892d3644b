"""The trusted captive API: the portal over HTTPS, on the name the cloud gave the router.

The cloud pushes the portal's name (`<router_id>.<operator's domain>`) in the router's
config. A short process (agent.portal.certify) makes a key here and gets a certificate for
that name from the cloud, which orders it over ACME; it runs again twice a day and renews
within 30 days of the end. The daemon loads the pair into the one TLS context its HTTPS
sites serve with: a renewed pair goes into that same context, so the next handshake gets
it and no open connection is dropped. The daemon itself never imports `cryptography`.

With several LANs, the same certificate is served on each LAN's portal address: the LAN's
dnsmasq answers the one name with the address on the asking phone's LAN (the hook writes
one `config domain` per LAN; OpenWrt's default `localise_queries` picks the one on the
querying interface's subnet), so each phone reaches the API on its own LAN.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import sys

from aiohttp import web

from agent.child import run_child
from agent.errors import ConfigError
from agent.settings import Settings
from agent.wire import RouterConfig

log = logging.getLogger("loopspot.portal")

TLS_DIR = "portal-tls"  # in flash_dir: the key stays across reboots, so no order per boot
# In flash_dir while the HTTPS site serves a certificate: the portal's name, one line. The
# OpenWrt package's dnsmasq-sync reads it, advertises https://NAME:PORT/api/captive as
# option 114 and makes dnsmasq answer NAME with the portal address.
NAME_FILE = "portal.name"
KEY, CHAIN, NAME = "key.pem", "chain.pem", "name"  # agent.portal.certify writes them
CERTIFY_EVERY = 12 * 3600.0  # seconds between checks; renewal is due 30 days before the end
CERTIFY_WITHIN = 180.0  # seconds: the cloud's ACME order takes most (certify.ORDER_WAIT)
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def is_portal_name(name: str) -> bool:
    """True for a lower-case DNS name of two labels or more, as a certificate can name."""
    labels = name.split(".")
    return len(name) <= 253 and len(labels) >= 2 and all(_LABEL.fullmatch(x) for x in labels)


def portal_name_of(config: RouterConfig | None) -> str | None:
    """The portal name `config` carries, checked; None if none. ConfigError if not a name."""
    name = config.portal_name if config is not None else None
    if name is not None and not is_portal_name(name):
        raise ConfigError(
            f"{name!r} is not a DNS name.",
            option="portal_name",
            fix="push a lower-case name like r1.portal.example.com (`loopspot-cloud portal-cert`).",
        )
    return name


def _server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class PortalTls:
    """The portal's HTTPS site: started with the first certificate, reloaded with each newer."""

    def __init__(self, settings: Settings, runner: web.BaseRunner) -> None:
        self.directory = settings.flash_dir / TLS_DIR
        self.credentials_dir = settings.cloud_credentials_dir
        # each LAN's portal address, once: a phone reaches the API on its own LAN
        self.addresses = tuple(dict.fromkeys(str(lan.address) for lan in settings.lan_portals))
        self.port = settings.portal_https_port
        self.runner = runner
        self.context: ssl.SSLContext | None = None
        self.sites: tuple[web.TCPSite, ...] = ()
        self.name: str | None = None  # while the sites serve a certificate for it
        self._loaded = b""  # the chain in the context

    def _stored(self, name: str) -> bytes | None:
        """The stored chain if it is for `name` and OpenSSL takes it with the stored key."""
        try:
            if (self.directory / NAME).read_text().strip() != name:
                return None
            chain = (self.directory / CHAIN).read_bytes()
            _server_context().load_cert_chain(self.directory / CHAIN, self.directory / KEY)
        except (OSError, ssl.SSLError) as error:
            log.debug("no usable portal certificate for %s: %s", name, error)
            return None
        return chain

    async def stop(self) -> None:
        """Serve no HTTPS (no name, or no certificate for it)."""
        if self.sites:
            await _stop_all(self.sites)
            log.info("HTTPS portal stopped")
        self.sites = ()
        self.context = self.name = None
        self._loaded = b""

    async def serve(self, name: str | None) -> bool:
        """Serve the stored certificate for `name` (reloading a newer one); True if serving.

        OSError if the HTTPS port cannot be listened on.
        """
        chain = await asyncio.to_thread(self._stored, name) if name else None
        if chain is None:
            await self.stop()
            return False
        if chain == self._loaded and self.sites:
            return True
        context = self.context or _server_context()
        context.load_cert_chain(self.directory / CHAIN, self.directory / KEY)  # live handshakes
        if not self.sites:
            self.sites = await self._listen(context)
        self.context, self.name, self._loaded = context, name, chain
        log.info(
            "HTTPS portal: https://%s:%d/api/captive on %s",
            name,
            self.port,
            ", ".join(self.addresses),
        )
        return True

    async def _listen(self, context: ssl.SSLContext) -> tuple[web.TCPSite, ...]:
        """One site per LAN's portal address, all or none; OSError if one cannot listen."""
        sites: list[web.TCPSite] = []
        try:
            for address in self.addresses:
                site = web.TCPSite(self.runner, address, self.port, ssl_context=context)
                await site.start()
                sites.append(site)
        except OSError:
            await _stop_all(sites)
            raise
        return tuple(sites)

    async def certify(self, name: str | None) -> bool:
        """Get or renew the certificate for `name` if due (a short process), then serve it."""
        if name is not None:
            done = await run_child(
                sys.executable,
                "-m",
                "agent.portal.certify",
                *("--dir", str(self.directory), "--credentials-dir", str(self.credentials_dir)),
                *("--name", name, "--if-due"),
                within=CERTIFY_WITHIN,
            )
            if not done.ok:
                log.warning("portal certificate for %s: %s", name, done.said)
            elif done.said.startswith("renewed"):
                log.info("portal certificate %s", done.said)
        try:
            return await self.serve(name)
        except OSError as error:
            log.error("HTTPS portal not served on port %d: %s", self.port, error)
            return False


async def _stop_all(sites: tuple[web.TCPSite, ...] | list[web.TCPSite]) -> None:
    for site in sites:
        await site.stop()


def name_file_text(tls: PortalTls | None) -> str | None:
    """The text of NAME_FILE: the portal's name while a certificate is served, else None."""
    return f"{tls.name}\n" if tls is not None and tls.name else None
