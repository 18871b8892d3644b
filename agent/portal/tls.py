"""The trusted captive API: the portal over HTTPS, with the certificate the cloud pushed.

The cloud obtains a certificate for this router's portal name over ACME (cloud.portal_cert)
and pushes it, with its key, in the router's config. Here the three fields are checked
without I/O, written where OpenSSL reads them (state_dir, 0600), and loaded into the one
TLS context the HTTPS site serves with: a newer certificate is loaded into that same
context, so the next handshake gets it and no open connection is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from agent.errors import ConfigError, LoopspotError
from agent.settings import Settings
from agent.wire import RouterConfig

log = logging.getLogger("loopspot.portal")

TLS_DIR = "portal-tls"  # in state_dir (tmpfs): the files OpenSSL loads
# In flash_dir while a certificate is in force: the portal's name, one line. The OpenWrt
# package's dnsmasq-sync reads it, advertises https://NAME:PORT/api/captive as option 114
# and makes dnsmasq answer NAME with the portal address.
NAME_FILE = "portal.name"
_B64 = r"[A-Za-z0-9+/=\r\n]+"
_CERTIFICATE = re.compile(rf"-----BEGIN CERTIFICATE-----\r?\n{_B64}-----END CERTIFICATE-----")
_KEY = re.compile(rf"\s*-----BEGIN ((?:EC |RSA )?PRIVATE KEY)-----\r?\n{_B64}-----END \1-----\s*")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_FIELDS = ("portal_name", "portal_certificate", "portal_key")
_TOGETHER = (
    "push portal_name, portal_certificate and portal_key together "
    "(`loopspot-cloud portal-cert` does)"
)


@dataclass(frozen=True, slots=True)
class PortalCertificate:
    """The portal's DNS name, its certificate chain (leaf first) and private key, in PEM."""

    name: str
    chain: str
    key: str


def is_portal_name(name: str) -> bool:
    """True for a lower-case DNS name of two labels or more, as a certificate can name."""
    labels = name.split(".")
    return len(name) <= 253 and len(labels) >= 2 and all(_LABEL.fullmatch(x) for x in labels)


def portal_certificate_of(config: RouterConfig | None) -> PortalCertificate | None:
    """The certificate `config` carries, its form checked; None if it has none.

    ConfigError names the field at fault. Whether the key is the certificate's is for
    OpenSSL to say (PortalTls.check).
    """
    if config is None:
        return None
    values = {name: getattr(config, name) for name in _FIELDS}
    missing = [name for name, value in values.items() if value is None]
    if len(missing) == len(_FIELDS):
        return None
    if missing:
        raise ConfigError("is missing.", option=missing[0], fix=_TOGETHER + ".")
    name, chain, key = (str(values[name]) for name in _FIELDS)
    if not is_portal_name(name):
        raise ConfigError(
            f"{name!r} is not a DNS name.",
            option="portal_name",
            fix="use a lower-case name like r1.portal.example.com.",
        )
    if not _CERTIFICATE.search(chain) or _CERTIFICATE.sub("", chain).strip():
        raise ConfigError(
            "is not a PEM certificate chain.",
            option="portal_certificate",
            fix="push the ACME order's full chain, leaf first.",
        )
    if not _KEY.fullmatch(key):
        raise ConfigError(
            "is not one PEM private key.", option="portal_key", fix="push the leaf's own key."
        )
    return PortalCertificate(name, chain, key)


def _server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text)


class PortalTls:
    """The portal's HTTPS site: started with the first certificate, reloaded with each newer."""

    def __init__(self, settings: Settings, runner: web.BaseRunner) -> None:
        self.directory = settings.state_dir / TLS_DIR
        self.address = str(settings.portal_address)
        self.port = settings.portal_https_port
        self.runner = runner
        self.context: ssl.SSLContext | None = None
        self.site: web.TCPSite | None = None
        self.name: str | None = None
        self._staged: PortalCertificate | None = None  # checked, waiting in the new- files

    def _paths(self, stage: str) -> tuple[Path, Path]:
        return self.directory / f"{stage}chain.pem", self.directory / f"{stage}key.pem"

    def _stage(self, certificate: PortalCertificate) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        chain, key = self._paths("new-")
        _write_private(chain, certificate.chain)
        _write_private(key, certificate.key)
        try:
            _server_context().load_cert_chain(chain, key)
        except ssl.SSLError as error:
            self._staged = None
            raise ConfigError(
                f"OpenSSL refused the certificate with its key: {error.reason or error}.",
                option="portal_certificate",
                fix="push a chain and the key it was issued for (`loopspot-cloud portal-cert`).",
            ) from None
        self._staged = certificate

    async def check(self, certificate: PortalCertificate | None) -> None:
        """ConfigError unless OpenSSL takes the chain with the key; nothing served changes."""
        if certificate is not None:
            await asyncio.to_thread(self._stage, certificate)

    async def install(self, certificate: PortalCertificate | None) -> None:
        """Serve `certificate` (checked first), or stop serving HTTPS when it is None."""
        if certificate is None:
            if self.site is not None:
                await self.site.stop()
                log.info("HTTPS portal stopped: the cloud withdrew its certificate")
            self.site = self.context = self.name = None
            return
        if self._staged != certificate:
            await self.check(certificate)
        self._staged = None
        staged, current = self._paths("new-"), self._paths("")
        for new, old in zip(staged, current, strict=True):
            os.replace(new, old)
        if self.context is None:
            self.context = _server_context()
        self.context.load_cert_chain(*current)  # the next handshake on the live site gets it
        if self.site is None:
            site = web.TCPSite(
                self.runner, self.address, self.port, ssl_context=self.context, backlog=256
            )
            await site.start()
            self.site = site
        self.name = certificate.name
        log.info("HTTPS portal: https://%s:%d/api/captive", certificate.name, self.port)


async def serve_portal_tls(
    settings: Settings, runner: web.BaseRunner, applied: RouterConfig | None
) -> PortalTls:
    """The HTTPS portal, serving the stored config's certificate if it has a usable one."""
    tls = PortalTls(settings, runner)
    try:
        await tls.install(portal_certificate_of(applied))
    except (LoopspotError, OSError) as error:
        log.error("HTTPS portal not served with the stored certificate: %s", error)
    return tls


def name_file_text(tls: PortalTls | None) -> str | None:
    """The text of NAME_FILE: the portal's name while a certificate is served, else None."""
    return f"{tls.name}\n" if tls is not None and tls.name else None
