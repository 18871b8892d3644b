"""Fixtures for lab tests with the real cloud: an enrolled, linked router beside a CloudStack."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.models import Router
from lab.cloud import CloudStack
from lab.polling import wait_until
from lab.router import RouterAgent
from lab.topology import Lab


@pytest.fixture
def cloud(lab: Lab, database_url: str, tmp_path: Path) -> Iterator[CloudStack]:
    """The cloud on SQLite or PostgreSQL, with one ingest worker, reachable from the lab."""
    stack = CloudStack(lab, database_url, tmp_path / "cloud")
    try:
        stack.start(workers=1)
        yield stack
    finally:
        stack.close()
        for name in ("mosquitto", "enrol", "ingest-0", "ingest-1"):
            log = stack.log(name)
            if log:
                print(f"--- {name} log ---\n{log[-3000:]}")


def linked_agent(
    lab: Lab,
    cloud: CloudStack,
    *,
    environment: Mapping[str, str] | None = None,
    agent_options: Mapping[str, str | list[str]] | None = None,
    **cloud_options: str,
) -> RouterAgent:
    """A router agent with the cloud section on (TLS, credentials from enrolment).

    `environment`, if given, is the agent's instead of os.environ (lab.router.RouterAgent);
    `agent_options` override the lab config's other options (e.g. lan=[...]).
    """
    workdir = lab.workdir / "agent"
    options = {
        "enabled": "1",
        "tls": "1",
        "credentials_dir": str(workdir / "credentials"),
        "keepalive": "5",
        "status_interval": "30",
        "spool_flush_interval": "10",
    } | cloud_options
    agent = RouterAgent(lab, sections={"cloud": options}, **(agent_options or {}))
    agent.environment = environment
    shutil.copy(cloud.ca_file, agent.workdir / "cloud-ca.crt")
    return agent


def enrol(agent: RouterAgent, cloud: CloudStack, code: str) -> int:
    """`loopspot-agent enrol CODE` on the router, as an installer types it."""
    done = agent.ctl(
        "enrol", code, "--url", cloud.enrol_url, "--ca", str(agent.workdir / "cloud-ca.crt")
    )
    print(done.stdout, done.stderr)
    return done.returncode


def router_state(cloud: CloudStack, router_id: str) -> str:
    """The router's state as the operator's fleet view shows it."""
    with Session(cloud.engine) as session:
        state = session.scalar(select(Router.state).where(Router.id == router_id))
    return state or ""


@pytest.fixture
def enrolled(lab: Lab, cloud: CloudStack) -> Iterator[tuple[RouterAgent, str]]:
    """A router enrolled with a claim code and running, seen online by the cloud."""
    router_id, code = cloud.claim()
    agent = linked_agent(lab, cloud)
    assert enrol(agent, cloud, code) == 0
    agent.start()
    try:
        assert wait_until(lambda: router_state(cloud, router_id) == "online", 20), agent.logs()
        yield agent, router_id
    finally:
        agent.stop()
        print(f"--- agent log ---\n{agent.logs()[-4000:]}")
