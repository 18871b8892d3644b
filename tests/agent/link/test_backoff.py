"""The reconnect state machine: capped, jittered, exponential, starting over after success."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.link.backoff import (
    INITIAL_DELAY,
    JITTER,
    MAX_DELAY,
    STABLE_AFTER,
    LinkState,
    Reconnect,
    backoff_delay,
)
from agent.link.errors import StateError


def fail(machine: Reconnect, draw: float = 0.0) -> float:
    machine.attempt()
    return machine.failed(draw)


def test_each_failure_in_a_row_doubles_the_wait_until_the_cap() -> None:
    machine = Reconnect()
    delays = [fail(machine) for _ in range(10)]
    assert delays[:4] == [INITIAL_DELAY, 2 * INITIAL_DELAY, 4 * INITIAL_DELAY, 8 * INITIAL_DELAY]
    assert max(delays) == MAX_DELAY
    assert delays == sorted(delays)


@given(st.integers(0, 10_000), st.floats(0, 1, exclude_max=True))
def test_a_delay_is_never_zero_and_never_past_the_cap(failures: int, draw: float) -> None:
    delay = backoff_delay(failures, draw)
    ceiling = min(MAX_DELAY, INITIAL_DELAY * 2 ** min(failures, 64))
    assert (1 - JITTER) * ceiling <= delay <= ceiling <= MAX_DELAY
    assert delay > 0


def test_jitter_spreads_a_fleet_that_failed_together() -> None:
    delays = {round(backoff_delay(5, draw / 10), 3) for draw in range(10)}
    assert len(delays) == 10
    assert min(delays) >= (1 - JITTER) * 32 * INITIAL_DELAY


def test_a_connection_that_held_resets_the_backoff() -> None:
    machine = Reconnect()
    for _ in range(6):
        fail(machine)
    machine.attempt()
    machine.connected(now=100.0)
    assert machine.lost(now=100.0 + STABLE_AFTER, draw=0.0) == INITIAL_DELAY


def test_a_connection_dropped_at_once_keeps_backing_off() -> None:
    machine = Reconnect()
    for _ in range(3):
        fail(machine)
    machine.attempt()
    machine.connected(now=100.0)
    assert machine.lost(now=101.0, draw=0.0) == 8 * INITIAL_DELAY  # a flapping broker


def test_transitions_follow_the_machine() -> None:
    machine = Reconnect()
    states = [machine.state]
    machine.attempt()
    states.append(machine.state)
    machine.connected(now=0.0)
    states.append(machine.state)
    with pytest.raises(StateError):
        machine.failed(0.0)  # only an attempt can fail; a connection is lost
    machine.lost(now=1.0, draw=0.5)
    states.append(machine.state)
    machine.stop()
    states.append(machine.state)
    assert states == [
        LinkState.IDLE, LinkState.CONNECTING, LinkState.CONNECTED, LinkState.WAITING,
        LinkState.STOPPED,
    ]  # fmt: skip
    with pytest.raises(StateError):
        machine.attempt()


def test_a_draw_outside_0_1_is_a_bug() -> None:
    with pytest.raises(ValueError):
        backoff_delay(0, 1.0)
