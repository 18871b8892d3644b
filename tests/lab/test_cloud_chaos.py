"""Chaos between the shop and the cloud: afterwards the database holds exactly what was made."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.models import Event
from lab import netns
from lab.addresses import ROUTER_WAN_IF
from lab.client import http_get
from lab.cloud import CloudStack
from lab.polling import wait_until
from lab.router import RouterAgent
from lab.topology import Lab
from tests.lab.portal_steps import PORTAL

pytestmark = pytest.mark.lab


class Shoppers:
    """Phones opening the portal page over and over; each page shown is one portal_viewed."""

    def __init__(self, lab: Lab) -> None:
        self.phones = list(lab.phones)
        self.shown = 0
        self.running = threading.Event()
        self.stopped = threading.Event()
        self.idle = threading.Event()
        self.thread = threading.Thread(target=self._browse, name="shoppers", daemon=True)

    def _browse(self) -> None:
        while not self.stopped.is_set():
            if not self.running.is_set():
                self.idle.set()
                time.sleep(0.02)
                continue
            self.idle.clear()
            for phone in self.phones:
                try:
                    if http_get(phone.ns, f"{PORTAL}/portal", timeout=2).status == 200:
                        self.shown += 1
                except OSError:
                    pass
            time.sleep(0.05)

    def start(self) -> None:
        self.running.set()
        self.thread.start()

    def pause(self) -> None:
        self.running.clear()
        self.idle.clear()
        assert self.idle.wait(10)

    def stop(self) -> None:
        self.pause()
        self.stopped.set()
        self.thread.join(10)


def stored(cloud: CloudStack, router_id: str) -> dict[str, list[int]]:
    """boot_id -> the seqs stored for it."""
    seqs: dict[str, list[int]] = defaultdict(list)
    with Session(cloud.engine) as session:
        for boot_id, seq in session.execute(
            select(Event.boot_id, Event.seq).where(Event.router_id == router_id)
        ):
            seqs[boot_id].append(seq)
    return seqs


def portal_views(cloud: CloudStack, router_id: str) -> int:
    with Session(cloud.engine) as session:
        return (
            session.scalar(
                select(func.count()).where(
                    Event.router_id == router_id, Event.kind == "portal_viewed"
                )
            )
            or 0
        )


def test_broker_restart_worker_outage_agent_kill_and_uplink_cut_lose_and_double_nothing(
    lab: Lab, cloud: CloudStack, enrolled: tuple[RouterAgent, str]
) -> None:
    agent, router_id = enrolled
    lab.add_phones(2)
    shoppers = Shoppers(lab)
    shoppers.start()
    try:
        time.sleep(2)
        cloud.stop_broker()  # the broker restarts (clean stop: it keeps queued messages)
        time.sleep(2)
        cloud.start_broker()
        time.sleep(2)
        cloud.stop_worker("ingest-0")  # the cloud's worker is away for a while
        time.sleep(3)
        cloud.start_worker("ingest-0")
        time.sleep(2)
        shoppers.pause()  # a page being shown at the very instant of the kill is not counted
        time.sleep(0.5)
        agent.kill()
        agent.start()
        shoppers.running.set()
        time.sleep(2)
        netns.ip(lab.router, "link", "set", ROUTER_WAN_IF, "down")  # the shop's uplink is cut
        time.sleep(4)
        netns.ip(lab.router, "link", "set", ROUTER_WAN_IF, "up")
        time.sleep(2)
    finally:
        shoppers.stop()
    made = shoppers.shown
    assert made > 50
    arrived = wait_until(lambda: portal_views(cloud, router_id) >= made, 90)
    seqs = stored(cloud, router_id)
    gaps = {b: sorted(set(range(1, max(n) + 1)) - set(n))[:20] for b, n in seqs.items()}
    maxima = {b: (min(n), max(n), len(n)) for b, n in seqs.items()}
    assert arrived, (
        f"{portal_views(cloud, router_id)} of {made} portal views arrived; gaps {gaps}; "
        f"seqs {maxima}; agent status {agent.ctl_json('status')}"
    )
    time.sleep(1)  # anything doubled would arrive now
    assert portal_views(cloud, router_id) == made
    seqs = stored(cloud, router_id)
    assert len(seqs) == 2, "one boot before the kill and one after"
    for boot_id, numbers in seqs.items():
        assert len(numbers) == len(set(numbers)), f"a doubled event in boot {boot_id}"
        assert sorted(numbers) == list(range(1, max(numbers) + 1)), f"a gap in boot {boot_id}"
