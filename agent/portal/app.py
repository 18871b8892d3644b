"""The captive portal: probe answers, the terms page, the RFC 8908 API. Thin aiohttp edge."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, ip_address
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from aiohttp import web

from agent.clients import Client
from agent.errors import ClientUnknown, ConfigError, GateError
from agent.portal.csrf import check_token, issue_token
from agent.portal.i18n import (
    TEMPLATE_FILTERS,
    Messages,
    load_messages,
    other_language,
    pick_language,
)
from agent.portal.ratelimit import RateLimiter
from agent.probes import classify
from agent.service import AgentService
from agent.settings import Settings

if TYPE_CHECKING:  # the desk comes with the cloud link; a portal without it never loads it
    from agent.coupons.desk import CouponDesk

log = logging.getLogger("loopspot.portal")

MAX_BODY = 4096  # the accept form is a few dozen bytes
CAPTIVE_JSON = "application/captive+json"
NO_STORE = {"Cache-Control": "no-store, private"}
SERVICE: web.AppKey[AgentService] = web.AppKey("service", AgentService)
DESK: web.AppKey[CouponDesk | None] = web.AppKey("desk")  # None: coupons are off
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


PAGES = ("portal.html", "online.html", "error.html", "unknown_client.html")
TEMPLATE_CACHE = "template-cache"  # in flash_dir: the pages compiled, for every later start


def default_templates_dir() -> Path:
    """The portal_templates/ shipped beside the agent, or the OpenWrt install path."""
    beside = Path(__file__).resolve().parents[2] / "portal_templates"
    return beside if beside.is_dir() else Path("/usr/share/loopspot/portal_templates")


class Portal:
    """Templates, messages, CSRF key and rate limiter of one running portal."""

    def __init__(self, settings: Settings, service: AgentService, csrf_key: bytes) -> None:
        self.settings = settings
        self.service = service
        self.csrf_key = csrf_key
        root = settings.templates_dir or default_templates_dir()
        self.dirs = [root / settings.template, root / "default"]
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(d) for d in self.dirs]),
            autoescape=True,
            auto_reload=False,
            bytecode_cache=compiled_pages_cache(settings.flash_dir),
        )
        self.env.filters.update(TEMPLATE_FILTERS)
        self.pages = load_pages(self.env)
        messages_file = next(
            (d / "messages.json" for d in self.dirs if (d / "messages.json").exists()),
            self.dirs[-1] / "messages.json",
        )
        self.messages: Messages = load_messages(messages_file)
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
        # Loopback names reach the portal only through a local relay or proxy (the demo's),
        # never as redirected phone traffic, so they count as addressing the portal.
        self.portal_hosts = {str(settings.portal_address), "127.0.0.1", "localhost"}

    def language(self, request: web.Request) -> str:
        """The page language: ?lang=, then Accept-Language, then the configured default."""
        return pick_language(
            request.headers.get("Accept-Language"),
            request.query.get("lang"),
            self.settings.language,
        )

    def render(
        self, request: web.Request, name: str, status: int = 200, **extra: Any
    ) -> web.Response:
        """A page of the portal in the request's language."""
        lang = self.language(request)
        other = other_language(lang)
        context = {
            "t": self.messages[lang],
            "lang": lang,
            "other_lang": other,
            "lang_switch_url": f"{request.path}?lang={other}",
            "site_name": self.settings.site_name,
            "static_url": "/static",
            "portal_path": "/portal",
            **extra,
        }
        body = self.pages[name].render(context)
        return web.Response(
            text=body, status=status, content_type="text/html", charset="utf-8", headers=NO_STORE
        )

    def is_portal_host(self, request: web.Request) -> bool:
        """True when the request was addressed to the portal, not redirected traffic."""
        host = (request.host or "").rsplit(":", 1)[0].strip("[]").lower()
        return host in self.portal_hosts


def compiled_pages_cache(flash_dir: Path) -> jinja2.BytecodeCache | None:
    """Where compiled pages are kept, so that only the first start compiles them.

    Compiling takes the Python compiler half a megabyte of a router's memory. A page
    whose template changed is compiled again (the cache checks each source).
    """
    directory = flash_dir / TEMPLATE_CACHE
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        log.warning("the portal's pages will be compiled at every start: %s", error)
        return None
    return jinja2.FileSystemBytecodeCache(str(directory))


def load_pages(env: jinja2.Environment) -> dict[str, jinja2.Template]:
    """Every page, loaded at start with the layouts and parts they use.

    A broken template stops the agent, naming its file and line, before any phone sees it.
    """
    pages = {}
    for name in sorted({*PAGES, *env.list_templates(extensions=["html"])}):
        try:
            pages[name] = env.get_template(name)
        except jinja2.TemplateSyntaxError as error:
            raise ConfigError(
                f"portal template {error.filename or name}, line {error.lineno}: {error.message}"
            ) from error
        except jinja2.TemplateError as error:
            raise ConfigError(f"portal template {name}: {error}") from error
    return pages


PORTAL: web.AppKey[Portal] = web.AppKey("portal", Portal)


def _remote_ip(request: web.Request) -> IPv4Address | None:
    try:
        address = ip_address(request.remote or "")
    except ValueError:
        return None
    if isinstance(address, IPv4Address):
        return address
    return address.ipv4_mapped


async def _client(request: web.Request) -> Client | None:
    ip = _remote_ip(request)
    if ip is None:
        return None
    try:
        return await request.app[SERVICE].identify(ip)
    except (ClientUnknown, OSError):
        return None


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Rate-limit each client; send redirected (non-portal) traffic to the captive handler."""
    portal = request.app[PORTAL]
    key = request.remote or "?"
    now = portal.service.clock()
    if not portal.limiter.allow(key, now):
        return web.Response(
            status=429,
            text="Too many requests\n",
            headers={"Retry-After": str(portal.limiter.retry_after(key)), **NO_STORE},
        )
    # Over TLS the phone named the portal and checked its certificate: it is no redirect.
    if not (request.secure or portal.is_portal_host(request)):
        return await captive(request)
    return await handler(request)


async def captive(request: web.Request) -> web.StreamResponse:
    """Traffic the gate redirected here: probes get success once authorized, else the portal."""
    portal = request.app[PORTAL]
    client = await _client(request)
    session = portal.service.session_of(client) if client else None
    probe = classify(request.host, request.path)
    if session is not None and probe is not None:
        answer = probe.success
        return web.Response(
            status=answer.status,
            body=answer.body or None,
            content_type=answer.content_type,
            headers=NO_STORE,
        )
    target = portal.settings.portal_url + ("/online" if session is not None else "")
    return web.Response(
        status=302,
        text=f'<html><body><a href="{target}">{target}</a></body></html>',
        content_type="text/html",
        headers={"Location": target, "Connection": "close", **NO_STORE},
    )


async def show_portal(request: web.Request) -> web.StreamResponse:
    """The welcome page with the terms and the one accept button."""
    portal = request.app[PORTAL]
    client = await _client(request)
    if client is None:
        return portal.render(request, "unknown_client.html", status=503)
    if portal.service.session_of(client) is not None:
        raise web.HTTPSeeOther(f"/portal/online?lang={portal.language(request)}")
    token = issue_token(portal.csrf_key, client.mac, portal.service.clock())
    return portal.render(
        request,
        "portal.html",
        terms_version=portal.settings.terms_version,
        csrf_token=token,
        accept_url="/portal/accept",
    )


async def accept(request: web.Request) -> web.StreamResponse:
    """The shopper accepted the terms: check the form, open the gate, show 'online'."""
    portal = request.app[PORTAL]
    client = await _client(request)
    if client is None:
        return portal.render(request, "unknown_client.html", status=503)
    form = await request.post()
    lang = portal.language(request)
    token = form.get("csrf")
    if not check_token(
        portal.csrf_key, client.mac, str(token) if token else None, portal.service.clock()
    ):
        t = portal.messages[lang]
        return portal.render(
            request,
            "error.html",
            status=403,
            title=t["error_title"],
            message=t["error_expired_form"],
        )
    if form.get("terms_version") != portal.settings.terms_version:
        raise web.HTTPSeeOther(f"/portal?lang={lang}")
    try:
        await portal.service.accept(client, portal.settings.terms_version)
    except GateError as error:  # the session stands; the next counter poll adds it again
        log.error("could not let %s through: %s", client.ip, error)
        t = portal.messages[lang]
        return portal.render(
            request, "error.html", status=503, title=t["error_gate_title"], message=t["error_gate"]
        )
    raise web.HTTPSeeOther(f"/portal/online?lang={lang}")


async def online(request: web.Request) -> web.StreamResponse:
    """'You are online', with the time and data left."""
    portal = request.app[PORTAL]
    client = await _client(request)
    session = portal.service.session_of(client) if client else None
    if session is None:
        raise web.HTTPSeeOther(f"/portal?lang={portal.language(request)}")
    return portal.render(
        request,
        "online.html",
        seconds_remaining=session.seconds_remaining(portal.service.clock()),
        bytes_remaining=session.bytes_remaining(),
        terms_version=session.terms_version,
    )


async def captive_api(request: web.Request) -> web.StreamResponse:
    """RFC 8908: the client's captive state, portal URL and what is left of its session."""
    portal = request.app[PORTAL]
    client = await _client(request)
    session = portal.service.session_of(client) if client else None
    # RFC 8908 wants the user portal over TLS too: on the HTTPS API, the same name and port.
    portal_url = f"https://{request.host}/portal" if request.secure else portal.settings.portal_url
    state: dict[str, Any] = {"captive": session is None, "user-portal-url": portal_url}
    if session is not None:
        seconds = session.seconds_remaining(portal.service.clock())
        if seconds is not None:
            state["seconds-remaining"] = seconds
        remaining = session.bytes_remaining()
        if remaining is not None:
            state["bytes-remaining"] = remaining
        state["can-extend-session"] = False
    return web.Response(
        body=json.dumps(state).encode(), content_type=CAPTIVE_JSON, headers=NO_STORE
    )


async def static_file(request: web.Request) -> web.StreamResponse:
    """A static file from the merchant's template folder, else from the default one."""
    portal = request.app[PORTAL]
    name = request.match_info["name"]
    for folder in portal.dirs:
        path = folder / "static" / name
        if path.is_file():
            return web.FileResponse(path, headers={"Cache-Control": "max-age=3600"})
    raise web.HTTPNotFound()


async def home(request: web.Request) -> web.StreamResponse:
    """The router's own address goes to the portal."""
    raise web.HTTPFound("/portal")


def build_app(
    settings: Settings,
    service: AgentService,
    csrf_key: bytes | None = None,
    desk: CouponDesk | None = None,
) -> web.Application:
    """The portal application for one agent; `desk` for coupons (None: none here)."""
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    portal = Portal(settings, service, csrf_key or secrets.token_bytes(32))
    app[SERVICE] = service
    app[DESK] = desk
    app[PORTAL] = portal
    app.router.add_get("/", home)
    app.router.add_get("/portal", show_portal)
    app.router.add_post("/portal/accept", accept)
    app.router.add_get("/portal/online", online)
    app.router.add_get("/api/captive", captive_api)
    app.router.add_get(r"/static/{name:[A-Za-z0-9_-][A-Za-z0-9._-]*}", static_file)
    app.router.add_route("*", "/{tail:.*}", captive)
    return app
