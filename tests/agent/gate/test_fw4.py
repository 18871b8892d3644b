"""The agent notices fw4's flow offloading, which would let connections skip the gate."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.gate.fw4 import flow_offloading_on

DEFAULTS = """config defaults
\toption input 'REJECT'
\toption forward 'REJECT'
{offload}
config zone
\toption name 'lan'
\toption flow_offloading '1'
"""


@pytest.mark.parametrize(
    ("offload", "on"),
    [
        ("\toption flow_offloading '1'\n", True),
        ("\toption flow_offloading 'yes'\n", True),
        ("\toption flow_offloading '0'\n", False),
        ("", False),  # fw4's default: off
        ("\toption flow_offloading 'sometimes'\n", False),  # fw4 would not read it as on
    ],
)
def test_flow_offloading_is_read_from_fw4_s_defaults_only(
    tmp_path: Path, offload: str, on: bool
) -> None:
    firewall = tmp_path / "firewall"
    firewall.write_text(DEFAULTS.format(offload=offload))
    assert flow_offloading_on(firewall) is on


def test_no_or_broken_firewall_file_means_no_offloading(tmp_path: Path) -> None:
    assert flow_offloading_on(tmp_path / "missing") is False
    broken = tmp_path / "firewall"
    broken.write_text("config defaults\n\toption flow_offloading '1\n")  # unterminated quote
    assert flow_offloading_on(broken) is False
