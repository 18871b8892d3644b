"""After a reboot the LAN is captive from boot, before the agent runs, and sessions return."""

from __future__ import annotations

import shutil

import pytest

from agent.gate.gate import BOOT_GATE_FILE
from agent.ruleset import TABLE
from lab import netns
from lab.pytest_plugin import LabFactory
from lab.router import RouterAgent
from lab.topology import Lab
from tests.deploy.test_openwrt_package import BOOT_GATE
from tests.lab.portal_steps import accept_terms, reaches_wan

pytestmark = pytest.mark.lab


@pytest.fixture
def lab(lab_factory: LabFactory) -> Lab:
    """A shop with two phones."""
    return lab_factory(phones=2)


def reboot(lab: Lab, agent: RouterAgent) -> None:
    """What a power cycle does to the gate: the agent and the kernel's table gone, tmpfs empty."""
    agent.stop()
    netns.run(lab.router, "nft", "delete", "table", *TABLE.split())
    shutil.rmtree(agent.workdir / "tmpfs")


def test_phones_are_captive_from_boot_until_the_agent_restores_their_sessions(
    lab: Lab, agent: RouterAgent
) -> None:
    online, newcomer = lab.phones[0], lab.phones[1]
    assert accept_terms(online).status == 303
    assert reaches_wan(online)
    reboot(lab, agent)
    assert reaches_wan(newcomer), "with no table at all, the LAN is open: the gap to close"

    boot_file = agent.workdir / "flash" / BOOT_GATE_FILE
    netns.run(lab.router, "sh", str(BOOT_GATE), str(boot_file))  # as loopspot-gate does
    assert not reaches_wan(newcomer)
    assert not reaches_wan(online)  # its session waits on flash for the agent

    agent.start()
    assert reaches_wan(online)
    assert not reaches_wan(newcomer)


def test_the_boot_gate_leaves_a_running_agents_table_and_clients_alone(
    lab: Lab, agent: RouterAgent
) -> None:
    phone = lab.phones[0]
    assert accept_terms(phone).status == 303
    boot_file = agent.workdir / "flash" / BOOT_GATE_FILE
    netns.run(lab.router, "sh", str(BOOT_GATE), str(boot_file))
    assert reaches_wan(phone)
