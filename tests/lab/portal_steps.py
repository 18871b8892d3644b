"""What a shopper does on the portal, as plain steps the lab tests share."""

from __future__ import annotations

import re

from lab import addresses as A
from lab.client import HttpResponse, connect, http_get, http_post_form
from lab.router import RouterAgent
from lab.topology import Phone

PORTAL = f"http://{A.ROUTER_LAN_IP}:2050"
WAN_PAGE = f"http://{A.WEB_IP}/"
_CSRF = re.compile(rb'name="csrf" value="([^"]+)"')


def open_portal(phone: Phone, portal: str = PORTAL) -> HttpResponse:
    """The portal page as the phone's browser gets it."""
    return http_get(phone.ns, f"{portal}/portal")


def csrf_of(page: HttpResponse) -> str:
    """The CSRF token in a portal page."""
    found = _CSRF.search(page.body)
    assert found, f"no CSRF field in the portal page:\n{page.text[:500]}"
    return found.group(1).decode()


def accept_terms(
    phone: Phone, terms_version: str = "2026-11", portal: str = PORTAL
) -> HttpResponse:
    """Open the portal (at `portal`, its LAN's) and tap 'accept', as a shopper does."""
    token = csrf_of(open_portal(phone, portal))
    return http_post_form(
        phone.ns,
        f"{portal}/portal/accept",
        {"csrf": token, "terms_version": terms_version, "lang": "en"},
    )


def reaches_wan(phone: Phone, timeout: float = 2.0) -> bool:
    """True when the phone loads the wan web page (not the portal, not a reset)."""
    try:
        page = http_get(phone.ns, WAN_PAGE, timeout=timeout)
    except OSError:
        return False
    return page.status == 200 and b"WAN OK" in page.body


def tcp_outcome(phone: Phone, address: str, port: int, timeout: float = 1.5) -> str:
    """'open', 'reset' or 'dropped': what a TCP connect from the phone meets."""
    try:
        connect(phone.ns, address, port, timeout=timeout).close()
    except ConnectionRefusedError:
        return "reset"
    except TimeoutError:
        return "dropped"
    return "open"


def is_authorized(agent: RouterAgent, phone: Phone) -> bool:
    """True when the agent lists the phone among its clients."""
    clients = agent.ctl_json("clients")["clients"]
    return any(c["mac"] == phone.mac and c["ip"] == phone.ip for c in clients)
