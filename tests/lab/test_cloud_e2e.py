"""An installer enrols a router; the operator sees it online, its visits, and its going offline."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from agent import wire
from cloud.models import Alliance, Event, Merchant, Router, RouterConfig, Site
from lab import addresses as A
from lab.cloud import CloudStack
from lab.polling import wait_until
from lab.router import RouterAgent
from lab.topology import Lab
from tests.lab.cloud_fixtures import enrol, linked_agent, router_state
from tests.lab.portal_steps import accept_terms, reaches_wan

pytestmark = pytest.mark.lab


def kinds(cloud: CloudStack, router_id: str) -> list[str]:
    with Session(cloud.engine) as session:
        return list(session.scalars(select(Event.kind).where(Event.router_id == router_id)))


def alliance_key(cloud: CloudStack, router_id: str) -> bytes:
    with Session(cloud.engine) as session:
        key = session.scalar(
            select(Alliance.device_key)
            .join(Merchant, Merchant.alliance_id == Alliance.id)
            .join(Site, Site.merchant_id == Merchant.id)
            .join(Router, Router.site_id == Site.id)
            .where(Router.id == router_id)
        )
    assert key is not None
    return bytes(key)


def test_a_shopper_visit_reaches_the_operator_without_the_phones_mac(
    lab: Lab, cloud: CloudStack, enrolled: tuple[RouterAgent, str]
) -> None:
    _, router_id = enrolled
    phone = lab.phones[0]
    assert accept_terms(phone).status == 303
    assert wait_until(
        lambda: {"session_started", "terms_accepted"} <= set(kinds(cloud, router_id)), 15
    ), kinds(cloud, router_id)
    expected = wire.device_id(alliance_key(cloud, router_id), phone.mac)
    with Session(cloud.engine) as session:
        started = session.scalars(
            select(Event).where(Event.router_id == router_id, Event.kind == "session_started")
        ).one()
        dump = "\n".join(
            str(row)
            for table in ("events", "routers", "dead_letters")
            for row in session.execute(text(f"SELECT * FROM {table}"))
        ).lower()
    assert started.device_id == expected
    assert started.randomized is True  # the lab's MACs are locally administered
    for form in (phone.mac, phone.mac.replace(":", ""), phone.mac.replace(":", "-")):
        assert form not in dump


def test_a_claim_code_works_once(lab: Lab, cloud: CloudStack) -> None:
    _, code = cloud.claim()
    agent = linked_agent(lab, cloud)
    assert enrol(agent, cloud, code) == 0
    again = agent.ctl(
        "enrol",
        code,
        "--url",
        cloud.enrol_url,
        "--ca",
        str(agent.workdir / "cloud-ca.crt"),
        "--force",
    )
    assert again.returncode == 1
    assert "invalid or expired claim code" in again.stderr


def test_an_expired_claim_code_is_refused(lab: Lab, cloud: CloudStack) -> None:
    sites = cloud.cli("sites")["sites"] or None
    if sites is None:
        cloud.claim()
        sites = cloud.cli("sites")["sites"]
    code = cloud.cli("claim", "create", "--site", str(sites[0]["id"]), "--ttl", "1s")["code"]
    time.sleep(1.5)
    agent = linked_agent(lab, cloud)
    assert enrol(agent, cloud, code) == 1


def test_a_killed_router_is_marked_offline_within_its_keepalive(
    cloud: CloudStack, enrolled: tuple[RouterAgent, str]
) -> None:
    agent, router_id = enrolled
    agent.kill()
    started = time.monotonic()
    assert wait_until(lambda: router_state(cloud, router_id) == "offline", 5 * 1.5 + 5)
    assert time.monotonic() - started <= 5 * 1.5 + 5


def test_a_pushed_config_is_applied_and_acknowledged_within_2_seconds(
    lab: Lab, cloud: CloudStack, enrolled: tuple[RouterAgent, str]
) -> None:
    _, router_id = enrolled
    phone = lab.phones[0]
    assert not reaches_wan(phone, timeout=1.0)  # captive: the web site is not in the garden
    started = time.monotonic()
    pushed = cloud.cli(
        "config", "push", router_id, "--set", f'walled_garden_addresses=["{A.WEB_IP}/32"]'
    )

    def acked() -> bool:
        with Session(cloud.engine) as session:
            row = session.get(RouterConfig, (router_id, pushed["version"]))
            return row is not None and row.acked_at is not None and row.ack_error is None

    assert wait_until(acked, 2.0, step=0.05), "the router did not acknowledge within 2 s"
    assert time.monotonic() - started <= 2.5
    assert reaches_wan(phone)  # the new walled-garden address works before accepting
