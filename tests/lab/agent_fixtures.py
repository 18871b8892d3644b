"""Fixtures that run the real agent in a lab's router namespace."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from lab.router import RouterAgent
from lab.topology import Lab


@pytest.fixture
def make_agent(lab: Lab) -> Iterator[Callable[..., RouterAgent]]:
    """Start the agent on `lab` with UCI options overridden by keyword (e.g. timeout='3s')."""
    started: list[RouterAgent] = []

    def start(**options: str | list[str]) -> RouterAgent:
        agent = RouterAgent(lab, **options)
        started.append(agent)
        agent.start()
        return agent

    yield start
    for agent in started:
        agent.stop()
        print(f"--- agent log ({agent.log}) ---\n{agent.logs()[-6000:]}")  # shown on failure


@pytest.fixture
def agent(make_agent: Callable[..., RouterAgent]) -> RouterAgent:
    """The agent with the lab's default config, started."""
    return make_agent()
