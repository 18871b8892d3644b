"""When to reconnect: an explicit, pure state machine with capped, jittered exponential backoff.

The caller does the I/O and the sleeping; it reports what happened and gets the next delay.
Time and randomness are passed in, so tests never sleep.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from agent.link.errors import StateError

INITIAL_DELAY = 1.0  # seconds before the first retry
MULTIPLIER = 2.0  # each failure in a row doubles the ceiling ...
MAX_DELAY = 60.0  # ... up to this cap, so a fleet retries at least once a minute
JITTER = 0.5  # a delay is drawn from (1 - JITTER, 1] x ceiling: a fleet does not reconnect in step
STABLE_AFTER = 30.0  # a connection up this long was a success: the backoff starts over


class LinkState(enum.Enum):
    """Where the link stands."""

    IDLE = "idle"  # not started
    CONNECTING = "connecting"
    CONNECTED = "connected"
    WAITING = "waiting"  # backing off before the next attempt
    STOPPED = "stopped"


def backoff_delay(failures: int, draw: float) -> float:
    """Seconds to wait after `failures` failures in a row (0 = the first); `draw` is in [0, 1)."""
    if not 0.0 <= draw < 1.0:
        raise ValueError(f"draw must be in [0, 1), not {draw}")
    ceiling = min(MAX_DELAY, INITIAL_DELAY * MULTIPLIER ** min(failures, 64))
    return ceiling * (1.0 - JITTER * draw)


_ALLOWED: dict[LinkState, frozenset[LinkState]] = {
    LinkState.IDLE: frozenset({LinkState.CONNECTING, LinkState.STOPPED}),
    LinkState.CONNECTING: frozenset({LinkState.CONNECTED, LinkState.WAITING, LinkState.STOPPED}),
    LinkState.CONNECTED: frozenset({LinkState.WAITING, LinkState.STOPPED}),
    LinkState.WAITING: frozenset({LinkState.CONNECTING, LinkState.STOPPED}),
    LinkState.STOPPED: frozenset(),
}


@dataclass(slots=True)
class Reconnect:
    """The link's connection state; each method is one transition and says how long to wait."""

    state: LinkState = LinkState.IDLE
    failures: int = 0  # failed or short-lived connections in a row
    connected_at: float | None = None

    def _go(self, new: LinkState, *, only_from: LinkState | None = None) -> None:
        if new not in _ALLOWED[self.state] or only_from not in (None, self.state):
            raise StateError(f"the link cannot go from {self.state.value} to {new.value}")
        self.state = new

    def attempt(self) -> None:
        """A connection attempt begins."""
        self._go(LinkState.CONNECTING)

    def connected(self, now: float) -> None:
        """The broker accepted the connection (CONNACK)."""
        self._go(LinkState.CONNECTED)
        self.connected_at = now

    def failed(self, draw: float) -> float:
        """The attempt failed; returns the seconds to wait before the next one."""
        self._go(LinkState.WAITING, only_from=LinkState.CONNECTING)
        delay = backoff_delay(self.failures, draw)
        self.failures += 1
        return delay

    def lost(self, now: float, draw: float) -> float:
        """An established connection dropped; returns the seconds to wait before reconnecting."""
        up_for = now - (self.connected_at if self.connected_at is not None else now)
        self._go(LinkState.WAITING, only_from=LinkState.CONNECTED)
        self.connected_at = None
        if up_for >= STABLE_AFTER:
            self.failures = 0  # it worked for a while: start over from the shortest delay
        delay = backoff_delay(self.failures, draw)
        self.failures += 1
        return delay

    def stop(self) -> None:
        """The agent is shutting down; no more attempts."""
        if self.state is not LinkState.STOPPED:
            self._go(LinkState.STOPPED)
