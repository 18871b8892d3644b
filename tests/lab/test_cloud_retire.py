"""The operator retires a running lab router: the real agent is cut off at the broker at once
and stays out, with the broker CloudStack started (SIGHUP through its pid file)."""

from __future__ import annotations

import time

import pytest

from lab.cloud import CloudStack
from lab.polling import wait_until
from lab.router import RouterAgent
from tests.lab.cloud_fixtures import router_state

pytestmark = pytest.mark.lab
REFUSED = "certificate verify failed"


def test_a_retired_router_is_cut_off_at_once_and_cannot_connect_again(
    cloud: CloudStack, enrolled: tuple[RouterAgent, str]
) -> None:
    _, router_id = enrolled
    refused_before = cloud.log("mosquitto").count(REFUSED)

    started = time.monotonic()
    retired = cloud.cli("retire", router_id)

    assert retired["connection_ended"] is True, retired
    assert retired["revoked_certificates"] == 1
    assert retired["broker_reload"].startswith("SIGHUP to mosquitto")
    assert time.monotonic() - started < 5.0
    # The agent tries again (its backoff starts at about a second); the handshake fails.
    assert wait_until(lambda: cloud.log("mosquitto").count(REFUSED) > refused_before + 1, 30)
    assert router_state(cloud, router_id) == "retired"
    after = cloud.log("mosquitto").split("Reloading config.")[-1].splitlines()
    assert not [
        line for line in after if "New client connected" in line and f"u'{router_id}'" in line
    ]
