"""Two hundred phones authorize at once; none is let through before its own acceptance."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from lab.router import RouterAgent
from lab.topology import Lab
from tests.lab.portal_steps import accept_terms, reaches_wan

pytestmark = pytest.mark.lab

PHONES = 200


def test_200_phones_authorize_concurrently_and_each_reaches_the_wan(
    lab: Lab, agent: RouterAgent
) -> None:
    lab.add_phones(PHONES - len(lab.phones))
    phones = list(lab.phones)
    assert len(phones) == PHONES
    with ThreadPoolExecutor(max_workers=32) as pool:
        assert not any(pool.map(lambda p: reaches_wan(p, timeout=1.0), phones))

        def accept_then_check(index: int) -> tuple[bool, bool]:
            phone = phones[index]
            accepted = accept_terms(phone).status == 303
            return accepted, reaches_wan(phone)

        first_half = list(pool.map(accept_then_check, range(0, PHONES, 2)))
        assert all(accepted and online for accepted, online in first_half)
        still_captive = list(
            pool.map(lambda i: reaches_wan(phones[i], timeout=1.0), range(1, PHONES, 2))
        )
        assert not any(still_captive), "a phone got through before accepting"
        second_half = list(pool.map(accept_then_check, range(1, PHONES, 2)))
        assert all(accepted and online for accepted, online in second_half)
    assert len(agent.ctl_json("clients")["clients"]) == PHONES
