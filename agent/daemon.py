"""`loopspot-agent run`: wire settings, gate, store, portal and control socket, and keep time."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address, ip_address
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from agent.control import serve_control
from agent.events import NO_EVENTS
from agent.gate.fw4 import FLOW_OFFLOADING_FIX, flow_offloading_on
from agent.gate.gate import Gate, open_grants
from agent.gate.interception import ensure_portal_route, portal_listener
from agent.gate.nft import open_nft
from agent.key_backend import backend_report
from agent.portal.app import PORTAL, build_app
from agent.ruleset import GateSpec
from agent.service import AgentService
from agent.settings import Settings
from agent.store import SessionStore
from agent.wire import RouterConfig

if TYPE_CHECKING:
    from agent.coupons.desk import CouponDesk
    from agent.link.runtime import CloudLink

log = logging.getLogger("loopspot.agent")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def csrf_key(flash_dir: Path) -> bytes:
    """The portal's CSRF key, kept on flash so forms stay valid across restarts."""
    path = flash_dir / "csrf.key"
    try:
        key = path.read_bytes()
        if len(key) == 32:
            return key
    except FileNotFoundError:
        pass
    flash_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


async def _repeat(name: str, seconds: float, step: Callable[[], Awaitable[object]]) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await step()
        except Exception:  # a failed round must not stop the next one
            log.exception("%s failed", name)


def count_portal_views(service: AgentService) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware reporting each portal page shown (the portal itself stays unaware)."""

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if request.method == "GET" and request.path == "/portal" and response.status == 200:
            try:
                address = ip_address(request.remote or "")
            except ValueError:
                return response
            ip = address if isinstance(address, IPv4Address) else address.ipv4_mapped
            if ip is not None:
                await service.portal_viewed(ip)
        return response

    return count


async def _open_cloud(
    settings: Settings,
) -> tuple[Settings, RouterConfig | None, CloudLink | None]:
    """The settings with the cloud's stored config laid over, that config, the link's parts."""
    from agent.link.local import load_applied, with_applied  # only with the cloud: aiomqtt
    from agent.link.runtime import open_cloud

    applied = await asyncio.to_thread(load_applied, settings.flash_dir)
    effective = with_applied(settings, applied)
    return effective, applied, await open_cloud(effective)


def open_desk(
    settings: Settings, cloud: CloudLink, service: AgentService, applied: RouterConfig | None
) -> CouponDesk:
    """The coupon desk, with the router's issuer key and the cloud's latest plan from flash."""
    from agent.coupons.desk import CouponDesk
    from agent.coupons.ed25519 import backend
    from agent.coupons.files import issuer_seed, load_plan
    from agent.coupons.plan import PlanError
    from agent.coupons.store import CouponStore

    signing = backend()
    desk = CouponDesk(
        CouponStore(settings.flash_dir),
        signing,
        issuer_seed(settings.flash_dir),
        cloud.identity.alliance_key,
        events=cloud.emitter,
        cloud=cloud,
        online_macs=lambda: [s.client.mac for s in service.book.all()],
    )
    plan = load_plan(settings.flash_dir) or (applied.coupons if applied else None)
    try:
        desk.apply_plan(plan)
    except PlanError as error:
        log.error("coupons off until the cloud sends a usable plan: %s", error)
    log.info(
        "coupons: signing and verifying through %s; %s",
        signing.name,
        f"{len(plan.campaigns)} campaigns" if desk.plan and plan else "no plan yet",
    )
    return desk


async def run(settings: Settings, config_file: Path | None = None) -> None:
    """Run the agent until SIGTERM or SIGINT; leave the gate's table in place on exit."""
    # Short file reads and writes (presence, applied config, conntrack) share one thread:
    # asyncio's default pool would start up to five, each a little of a router's memory.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1, "io"))
    base = settings
    cloud: CloudLink | None = None
    applied: RouterConfig | None = None
    if settings.cloud_enabled:
        settings, applied, cloud = await _open_cloud(settings)
    store = SessionStore(settings.state_dir, settings.flash_dir)
    spec = GateSpec.from_settings(settings)
    nft = open_nft(settings.nft_backend)
    grants = open_grants(settings.nft_backend, nft)
    gate = Gate(nft, spec, grants=grants, route_to_portal=ensure_portal_route)
    service = AgentService(
        settings,
        gate,
        store,
        events=cloud.emitter if cloud is not None else NO_EVENTS,
    )
    desk = None
    if cloud is not None:
        desk = await asyncio.to_thread(open_desk, settings, cloud, service, applied)
    app = build_app(settings, service, csrf_key(settings.flash_dir), desk=desk)
    if cloud is not None:
        app.middlewares.append(count_portal_views(service))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    listener = portal_listener(settings.portal_address, settings.portal_port)
    site = web.SockSite(runner, listener, backlog=1024)
    await site.start()  # bind first: a portal that cannot listen must not hold phones captive
    await service.start()
    background: list[asyncio.Task[None]] = []
    if cloud is not None:
        from agent.link.local import AgentRouter

        portal = app[PORTAL]

        def show_settings(new: Settings) -> None:
            portal.settings = new  # site name and terms version, from the next page on

        from agent.portal.tls import PortalTls

        key = cloud.identity.alliance_key
        local = AgentRouter(
            service,
            base,
            applied,
            key,
            config_file=config_file,
            on_settings=show_settings,
            desk=desk,
            portal_tls=PortalTls(settings, runner),
        )
        cloud.start(service, local, desk.issuer_key.hex() if desk else "")
        certified = local.keep_portal_certified()
        background.append(asyncio.create_task(certified, name="portal-certificate"))
    key_backend, said = backend_report()  # finds cryptography without importing it
    if key_backend == "none":
        log.warning("%s", said)
    else:
        log.info("%s", said)
    service.status_parts.append(lambda: {"key_backend": key_backend})
    control = await serve_control(service, settings.control_socket)
    tasks = [
        *background,
        asyncio.create_task(
            _repeat("counter poll", settings.counter_poll_interval, service.poll),
            name="counter-poll",
        ),
        asyncio.create_task(
            _repeat("flash snapshot", settings.snapshot_interval, service.snapshot),
            name="flash-snapshot",
        ),
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if await asyncio.to_thread(flow_offloading_on):
        log.warning(
            "fw4's flow offloading is on: open connections skip the gate, so their bytes "
            "are not counted against quotas and they outlive their sessions. Fix: %s",
            FLOW_OFFLOADING_FIX,
        )
    log.info(
        "portal on %s, %d sessions, grants through %s, table through %s",
        settings.portal_url,
        len(service.book),
        gate.grants.name,
        gate.nft.name,
    )
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        control.close()
        await runner.cleanup()
        if cloud is not None:
            await cloud.stop()
        await service.close()
        settings.control_socket.unlink(missing_ok=True)
        log.info("stopped; the gate's table stays so phones stay online")
