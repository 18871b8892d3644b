"""Three shops of one alliance in the lab: a restaurant, a spa and a gym, each its own router.

Each shop is a lab of its own (router, wan, phones). The shopper's phone is a phone with the
same MAC in each shop, as one phone walking down the street keeps its private address on
the alliance's one SSID. One real cloud (broker, enrolment, ingest) serves all three, each
router reaching it through its own wan, so one shop's uplink can be cut alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.models import RouterConfig
from lab import netns
from lab.addresses import ROUTER_WAN_IF
from lab.cloud import CloudStack
from lab.polling import wait_until
from lab.pytest_plugin import LabFactory
from lab.router import RouterAgent
from lab.topology import Lab, Phone
from tests.lab.cloud_fixtures import enrol, linked_agent, router_state

ALLIANCE = "Harbour Street"
SHOPPER_MAC = "02:aa:bb:cc:dd:01"  # locally administered, as iOS's private addresses are
STAFF_PIN = "2468"
DAY = 86400


@dataclass
class Shop:
    """One merchant's shop: its lab, its router's agent, the shopper's phone and a staff phone."""

    merchant: str
    lab: Lab
    agent: RouterAgent
    router_id: str

    @property
    def shopper(self) -> Phone:
        """The shopper's phone, in this shop."""
        return self.lab.phones[0]

    @property
    def till(self) -> Phone:
        """The phone staff use at the counter."""
        return self.lab.phones[1]

    def cut_uplink(self) -> None:
        """The shop's internet goes down: the router's wan link is cut."""
        netns.run(self.lab.router, "ip", "link", "set", ROUTER_WAN_IF, "down")

    def restore_uplink(self) -> None:
        """The shop's internet comes back."""
        netns.run(self.lab.router, "ip", "link", "set", ROUTER_WAN_IF, "up")

    def status(self) -> dict[str, object]:
        """`loopspot-agent status` of the shop's router."""
        return self.agent.ctl_json("status")


class Alliance:
    """Merchants of one alliance, their shops, and the cloud that runs their campaigns."""

    def __init__(self, cloud: CloudStack, make_lab: LabFactory) -> None:
        self.cloud = cloud
        self.make_lab = make_lab
        self.shops: dict[str, Shop] = {}

    def open_shop(self, merchant: str, site: str = "", **cloud_options: str) -> Shop:
        """A merchant joins the alliance (once) and enrols a router at a site of its own lab."""
        lab = (
            self.cloud.lab if not self.shops else self.make_lab(phones=1, phone_macs=[SHOPPER_MAC])
        )
        if lab.phones[0].mac != SHOPPER_MAC:
            lab.change_mac(lab.phones[0], SHOPPER_MAC)
        if len(lab.phones) < 2:
            lab.add_phone()  # the till
        if lab is not self.cloud.lab:
            self.cloud.reach(lab)
        if not any(s.merchant == merchant for s in self.shops.values()):
            self.cloud.cli("merchant", "create", merchant, "--alliance", ALLIANCE)
        site_name = site or f"{merchant} shop"
        self.cloud.cli("site", "create", "--merchant", merchant, site_name)
        found = next(s for s in self.cloud.cli("sites")["sites"] if s["site"] == site_name)
        made = self.cloud.cli("claim", "create", "--site", str(found["id"]))
        agent = linked_agent(lab, self.cloud, **cloud_options)
        assert enrol(agent, self.cloud, made["code"]) == 0, agent.logs()
        agent.start()
        router_id = str(made["router_id"])
        assert wait_until(lambda: router_state(self.cloud, router_id) == "online", 20), agent.logs()
        self.cloud.cli("staff-pin", "set", "--merchant", merchant, STAFF_PIN)
        shop = Shop(merchant, lab, agent, router_id)
        self.shops[site_name] = shop
        return shop

    def campaign(self, honoured_by: str, handed_out_by: str, title: str, **rules: str) -> int:
        """`honoured_by` runs a campaign handed out at `handed_out_by`'s sites (who accepts)."""
        now = int(time.time())
        made = self.cloud.cli(
            "campaign",
            "create",
            "--merchant",
            honoured_by,
            "--title-en",
            title,
            "--title-zh",
            f"优惠 {title}",
            "--starts-at",
            str(now - DAY),
            "--ends-at",
            str(now + 30 * DAY),
            "--budget",
            rules.pop("budget", "100"),
            "--reach",
            "partners",
            *[item for key, value in rules.items() for item in (f"--{key}", value)],
        )
        self.cloud.cli("partner", "propose", "--merchant", honoured_by, "--partner", handed_out_by)
        self.cloud.cli("partner", "accept", "--merchant", honoured_by, "--partner", handed_out_by)
        return int(made["id"])

    def push_plans(self, timeout: float = 15.0) -> None:
        """Push every router its coupon plan; return once each has applied one."""
        self.cloud.cli("coupons", "push")
        for shop in self.shops.values():
            assert wait_until(lambda s=shop: self.plan_applied(s), timeout), shop.agent.logs()[
                -3000:
            ]

    def plan_applied(self, shop: Shop) -> bool:
        """True when the shop's router acknowledged a config carrying a coupon plan."""
        with Session(self.cloud.engine) as session:
            rows = session.scalars(
                select(RouterConfig).where(RouterConfig.router_id == shop.router_id)
            ).all()
        return any(r.acked_at and not r.ack_error and '"coupons"' in r.body for r in rows)


@pytest.fixture
def alliance(cloud: CloudStack, lab_factory: LabFactory) -> Iterator[Alliance]:
    """An empty alliance beside the cloud; shops are opened by the test."""
    made = Alliance(cloud, lab_factory)
    try:
        yield made
    finally:
        for shop in made.shops.values():
            shop.agent.stop()
            print(f"--- {shop.merchant} agent log ---\n{shop.agent.logs()[-3000:]}")
