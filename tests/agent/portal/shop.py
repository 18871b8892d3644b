"""A portal with coupons for page tests: a real app, service and desk on a stand-in kernel."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from agent.coupons.desk import CouponDesk
from agent.coupons.pin import hash_pin
from agent.gate.gate import Gate
from agent.portal.app import build_app
from agent.ruleset import GateSpec
from agent.service import AgentService
from agent.settings import Settings
from agent.store import SessionStore
from agent.wire import WalletReply
from tests.agent.coupons.helpers import Clock, desk_at
from tests.agent.test_service import KernelStandIn

PHONE = "02:00:00:00:00:21"
NEW_ADDRESS = "06:11:22:33:44:55"  # the same phone with a new private address
STAFF_PIN = "2468"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _CSRF.search(html)
    assert found, f"no CSRF field in:\n{html[:800]}"
    return found.group(1)


class Cloud:
    """The cloud's wallet answer: the tokens it was given, for any device that asks."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    async def wallet(self, device_id: str) -> WalletReply | None:
        return WalletReply(device_id=device_id, coupons=tuple(self.tokens))


@dataclasses.dataclass
class Shop:
    """One router's portal: its desk, service, clock, neighbour table and an HTTP client."""

    desk: CouponDesk
    service: AgentService
    clock: Clock
    arp: Path
    http: TestClient  # type: ignore[type-arg]

    def phone_is(self, mac: str) -> None:
        """The test client's address (127.0.0.1) belongs to the phone with `mac` from now on."""
        self.arp.write_text(
            "IP address       HW type     Flags       HW address            Mask     Device\n"
            f"127.0.0.1        0x1         0x2         {mac}     *        br-lan\n"
        )

    async def page(self, path: str, **kwargs: object) -> tuple[ClientResponse, str]:
        response = await self.http.get(path, allow_redirects=True, **kwargs)  # type: ignore[arg-type]
        return response, await response.text()

    async def post(
        self, path: str, data: dict[str, str], **kwargs: object
    ) -> tuple[ClientResponse, str]:
        response = await self.http.post(path, data=data, **kwargs)  # type: ignore[arg-type]
        return response, await response.text()

    async def go_online(self) -> str:
        """Accept the terms as the phone does; the online page."""
        _, portal = await self.page("/portal?lang=en")
        _, online = await self.post(
            "/portal/accept?lang=en",
            {"csrf": csrf_of(portal), "terms_version": "1", "lang": "en"},
        )
        return online

    async def staff_login(self, pin: str = STAFF_PIN) -> tuple[ClientResponse, str]:
        """Log in on the staff page with `pin`."""
        _, login = await self.page("/staff?lang=en")
        return await self.post("/staff/login?lang=en", {"csrf": csrf_of(login), "pin": pin})

    async def staff_check(self, typed: str, action: str = "check") -> tuple[ClientResponse, str]:
        """Type `typed` in the check form (or tap redeem) as logged-in staff."""
        _, form = await self.page("/staff?lang=en")
        return await self.post(f"/staff/{action}?lang=en", {"csrf": csrf_of(form), "code": typed})


@asynccontextmanager
async def open_shop(
    tmp: Path,
    merchant: int,
    *,
    clock: Clock | None = None,
    cloud: Cloud | None = None,
    pin: str | None = STAFF_PIN,
    coupons: bool = True,
) -> AsyncIterator[Shop]:
    """The portal of `merchant`'s router, with the test alliance's plan and a staff PIN.

    coupons=False: the portal of an agent without the cloud link, which has no desk.
    """
    clock = clock or Clock()
    folder = tmp / f"shop-{merchant}"
    settings = Settings(
        state_dir=folder / "tmpfs",
        flash_dir=folder / "flash",
        terms_version="1",
        rate_limit=1000.0,
        rate_burst=1000,
    )
    kernel = KernelStandIn()
    gate = Gate(kernel, GateSpec.from_settings(settings), sets=kernel, grants=kernel)
    arp = folder / "arp"
    service = AgentService(
        settings,
        gate,
        SessionStore(settings.state_dir, settings.flash_dir),
        clock=clock,
        arp_table=arp,
        flush_conntrack=False,
    )
    desk = desk_at(folder, merchant, clock)
    desk.cloud = cloud
    desk.online_macs = lambda: [s.client.mac for s in service.book.all()]
    assert desk.plan is not None
    staff_pin = hash_pin(pin, iterations=1000) if pin else ""
    desk.apply_plan(dataclasses.replace(desk.plan.plan, staff_pin=staff_pin))
    await service.start()
    http = TestClient(
        TestServer(build_app(settings, service, b"k" * 32, desk=desk if coupons else None))
    )
    await http.start_server()
    shop = Shop(desk, service, clock, arp, http)
    shop.phone_is(PHONE)
    try:
        yield shop
    finally:
        await http.close()
        await service.close()
