"""With the real cloud, a router forgets an event when the cloud says it is stored, not before."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agent.link.spool import RECEIPT_TIMEOUT
from cloud.models import Event
from lab.cloud import CloudStack
from lab.polling import wait_until
from lab.router import RouterAgent
from lab.topology import Lab
from tests.lab.portal_steps import open_portal

pytestmark = pytest.mark.lab


def spool(agent: RouterAgent) -> tuple[int, int]:
    """(events the agent keeps, of which the broker has and the cloud did not yet receipt)."""
    local = agent.ctl_json("status")["status"]
    return local["spool_depth"], local["spool_unconfirmed"]


def stored(cloud: CloudStack, router_id: str) -> int:
    with Session(cloud.engine) as session:
        count = session.scalar(select(func.count()).where(Event.router_id == router_id))
    return count or 0


def test_the_brokers_puback_keeps_events_and_the_clouds_receipt_deletes_them(
    lab: Lab, cloud: CloudStack, enrolled: tuple[RouterAgent, str]
) -> None:
    agent, router_id = enrolled
    assert wait_until(lambda: spool(agent) == (0, 0), 10), spool(agent)
    cloud.stop_worker("ingest-0")  # the broker still takes (and queues) what the router sends
    phone = lab.phones[0]
    for _ in range(5):
        assert open_portal(phone).status == 200
    kept = wait_until(lambda: spool(agent)[1] >= 5 and spool(agent), 10)
    assert kept and kept[0] == kept[1], spool(agent)  # PUBACKed, every one still kept
    assert stored(cloud, router_id) == 0
    cloud.start_worker("ingest-0")
    # Well inside RECEIPT_TIMEOUT and without a reconnect: only receipts can empty the spool.
    assert wait_until(lambda: spool(agent) == (0, 0), RECEIPT_TIMEOUT / 2), spool(agent)
    assert stored(cloud, router_id) >= 5
