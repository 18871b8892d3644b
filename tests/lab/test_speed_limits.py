"""A phone's speed limit holds both ways, and an unlimited phone beside it is not slowed."""

from __future__ import annotations

import pytest

from lab import iperf
from lab.pytest_plugin import LabFactory
from lab.router import RouterAgent
from tests.lab.portal_steps import accept_terms, is_authorized, reaches_wan

pytestmark = pytest.mark.lab

DOWN_KBIT, UP_KBIT = 20_000, 8_000
SECONDS = 5.0  # measured, after 2 s not counted: the kernel's bucket starts with 1 s full
PORTS = (5201, 5202)


def within(rate: float, kbit: int, share: float = 0.10) -> bool:
    return abs(rate - kbit * 1000) <= share * kbit * 1000


def test_a_limited_phone_stays_within_10_percent_and_an_unlimited_one_is_not_slowed(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(phones=2)
    agent = RouterAgent(lab, download_limit=f"{DOWN_KBIT}kbit", upload_limit=f"{UP_KBIT}kbit")
    agent.start()
    try:
        limited, staff = lab.phones
        accept_terms(limited)  # the default class: the limits above
        assert agent.ctl("grant", staff.mac, "--ip", staff.ip).returncode == 0  # staff: none
        assert is_authorized(agent, limited) and reaches_wan(staff)
        for port in PORTS:
            iperf.start_server(lab, port)

        alone = iperf.tcp_rate(staff, PORTS[1], SECONDS, download=True)
        up = iperf.tcp_rate(limited, PORTS[0], SECONDS)
        down = iperf.tcp_rate(limited, PORTS[0], SECONDS, download=True)
        print(f"limited: up {up / 1e6:.2f} Mbit/s, down {down / 1e6:.2f}; staff {alone / 1e6:.0f}")
        assert within(up, UP_KBIT), f"upload {up / 1e6:.2f} Mbit/s, limit {UP_KBIT / 1000}"
        assert within(down, DOWN_KBIT), (
            f"download {down / 1e6:.2f} Mbit/s, limit {DOWN_KBIT / 1000}"
        )

        # Both at once: the limited phone still holds its limit, the staff phone runs free.
        test = iperf.tcp_client(limited, PORTS[0], SECONDS, download=True)
        beside = iperf.tcp_rate(staff, PORTS[1], SECONDS, download=True)
        down_beside = iperf.received(test, SECONDS + 2)
        print(f"at once: limited {down_beside / 1e6:.2f} Mbit/s, staff {beside / 1e6:.0f}")
        assert within(down_beside, DOWN_KBIT)
        assert beside > 20 * DOWN_KBIT * 1000  # not held to anyone's limit
        assert beside > 0.5 * alone  # the machine's two cores share both tests
    finally:
        agent.stop()
        print(agent.logs()[-3000:])
