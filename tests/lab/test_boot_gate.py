"""The LAN is never open: captive from boot, before the agent runs, and a table deleted
under a running agent is put back; sessions return both times."""

from __future__ import annotations

import shutil

import pytest

from agent.gate.gate import BOOT_GATE_FILE
from agent.ruleset import TABLE
from lab import netns
from lab.polling import wait_until
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


def test_a_table_deleted_under_a_running_agent_is_put_back_with_its_sessions(
    lab: Lab, agent: RouterAgent
) -> None:
    online, newcomer = lab.phones[0], lab.phones[1]
    assert accept_terms(online).status == 303
    before = agent.ctl_json("clients")["clients"][0]
    netns.run(lab.router, "nft", "flush", "ruleset")  # e.g. a script that resets nftables
    # the next counter poll (every 0.5 s in the lab) notices and puts the table back
    assert wait_until(lambda: not reaches_wan(newcomer, timeout=0.5), timeout=5)
    assert reaches_wan(online)
    after = agent.ctl_json("clients")["clients"][0]
    assert after["mac"] == online.mac and after["bytes_used"] >= before["bytes_used"]
    assert after["seconds_remaining"] <= before["seconds_remaining"]
    assert "was gone; putting it back with 1 sessions" in agent.logs()
