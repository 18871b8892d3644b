"""Sessions and their limits: the pure core. Time is always passed in, never read."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from agent.access import DEFAULT_CLASS
from agent.clients import Client


class EndReason(enum.Enum):
    """Why a session ended."""

    TIMEOUT = "timeout"
    IDLE = "idle"
    QUOTA = "quota"
    REVOKED = "revoked"
    MOVED = "moved"  # the same device came back with another IP address


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-session limits; 0 means no limit."""

    session_timeout: int = 3600
    idle_timeout: int = 900
    data_quota: int = 0


@dataclass(frozen=True, slots=True)
class Session:
    """One authorized stay of one device. Bytes = carried from earlier elements + counted now."""

    client: Client
    started_at: float
    terms_version: str
    expires_at: float | None
    idle_timeout: int = 0
    data_quota: int = 0
    bytes_carried: int = 0
    bytes_counted: int = 0
    last_activity_at: float = 0.0
    speed_class: str = DEFAULT_CLASS  # whose per-phone limits apply (agent.access)

    @property
    def bytes_used(self) -> int:
        """Bytes both ways during the whole session."""
        return self.bytes_carried + self.bytes_counted

    def seconds_remaining(self, now: float) -> int | None:
        """Whole seconds left, or None when there is no time limit."""
        if self.expires_at is None:
            return None
        return max(0, math.ceil(self.expires_at - now))

    def bytes_remaining(self) -> int | None:
        """Bytes left, or None when there is no quota."""
        return max(0, self.data_quota - self.bytes_used) if self.data_quota else None

    def end_reason(self, now: float) -> EndReason | None:
        """Why this session must end at `now`, or None while it may go on."""
        if self.expires_at is not None and now >= self.expires_at:
            return EndReason.TIMEOUT
        if self.data_quota and self.bytes_used >= self.data_quota:
            return EndReason.QUOTA
        if self.idle_timeout and now - self.last_activity_at >= self.idle_timeout:
            return EndReason.IDLE
        return None

    def kernel_timeout(self, now: float) -> int | None:
        """Seconds for the kernel element, rounded up so the kernel never ends it early."""
        if self.expires_at is None:
            return None
        return max(1, math.ceil(self.expires_at - now))

    def with_fresh_counter(self) -> Session:
        """The same session after its kernel element is re-added with a zero counter."""
        return replace(self, bytes_carried=self.bytes_used, bytes_counted=0)


@dataclass(frozen=True, slots=True)
class Ended:
    """A session that ended, and why."""

    session: Session
    reason: EndReason
    at: float


@dataclass(frozen=True, slots=True)
class Observed:
    """What the counters said: sessions that must end, and elements to put back."""

    ended: list[Ended]
    lost: list[Session]


def start_session(
    client: Client,
    now: float,
    terms_version: str,
    limits: Limits,
    previous: Session | None,
    speed_class: str = DEFAULT_CLASS,
) -> Session:
    """A new session; a device still in a session keeps its time and bytes, even on a new IP."""
    if previous is not None and previous.end_reason(now) is None:
        if previous.client == client:
            return previous
        return replace(previous.with_fresh_counter(), client=client, last_activity_at=now)
    expires = now + limits.session_timeout if limits.session_timeout else None
    return Session(
        client=client,
        started_at=now,
        terms_version=terms_version,
        expires_at=expires,
        idle_timeout=limits.idle_timeout,
        data_quota=limits.data_quota,
        last_activity_at=now,
        speed_class=speed_class,
    )


def count_bytes(session: Session, counted: int, now: float) -> Session:
    """The session after the kernel counter of its element read `counted`."""
    if counted == session.bytes_counted:
        return session
    if counted < session.bytes_counted:  # the element was re-added, its counter restarted
        session = session.with_fresh_counter()
    return replace(session, bytes_counted=counted, last_activity_at=now)


class SessionBook:
    """The live sessions, one per device (MAC)."""

    def __init__(self, limits: Limits, sessions: Iterable[Session] = ()) -> None:
        self.limits = limits
        self._by_mac: dict[str, Session] = {s.client.mac: s for s in sessions}

    def __len__(self) -> int:
        return len(self._by_mac)

    def all(self) -> list[Session]:
        """Every live session."""
        return list(self._by_mac.values())

    def of_mac(self, mac: str) -> Session | None:
        """The live session of a device, whatever its IP."""
        return self._by_mac.get(mac)

    def of_client(self, client: Client) -> Session | None:
        """The live session of exactly this MAC and IP."""
        session = self._by_mac.get(client.mac)
        return session if session is not None and session.client == client else None

    def start(
        self, client: Client, now: float, terms_version: str, speed_class: str = DEFAULT_CLASS
    ) -> tuple[Session, Ended | None]:
        """Start (or move) the device's session; returns it and the session it replaced."""
        previous = self._by_mac.get(client.mac)
        session = start_session(client, now, terms_version, self.limits, previous, speed_class)
        self._by_mac[client.mac] = session
        if previous is None or previous.client == client:
            return session, None
        return session, Ended(previous, EndReason.MOVED, now)

    def end(self, mac: str, now: float, reason: EndReason) -> Ended | None:
        """End the device's session, if it has one."""
        session = self._by_mac.pop(mac, None)
        return None if session is None else Ended(session, reason, now)

    def counters_restarted(self) -> None:
        """Every element was added again with a zero counter: carry what was counted so far."""
        self._by_mac = {mac: s.with_fresh_counter() for mac, s in self._by_mac.items()}

    def observe(self, counted: Mapping[Client, int], now: float) -> Observed:
        """Apply the kernel's byte counters; end sessions past a limit; find lost elements."""
        ended: list[Ended] = []
        lost: list[Session] = []
        for mac, session in list(self._by_mac.items()):
            seen = counted.get(session.client)  # one lookup: hashing a Client is not free
            if seen is not None:
                session = count_bytes(session, seen, now)
                self._by_mac[mac] = session
            reason = session.end_reason(now)
            if reason is not None:
                del self._by_mac[mac]
                ended.append(Ended(session, reason, now))
            elif seen is None:
                lost.append(session)
        return Observed(ended, lost)


@dataclass(frozen=True, slots=True)
class Reconciled:
    """Saved sessions and kernel elements brought into agreement at start-up."""

    sessions: list[Session]
    ended: list[Ended]
    adopted: list[Session]


def reconcile(
    saved: Iterable[Session],
    kernel: Mapping[Client, tuple[int | None, int]],
    now: float,
    limits: Limits,
) -> Reconciled:
    """Agree saved sessions with the kernel set, given (seconds left, bytes) per element.

    Every kept session restarts its counter, because the table is re-installed with it.
    Elements the agent has no record of are adopted with the time the kernel gives them.
    """
    kept: list[Session] = []
    ended: list[Ended] = []
    known: set[Client] = set()
    for session in saved:
        known.add(session.client)
        element = kernel.get(session.client)
        if element is not None:
            session = count_bytes(session, element[1], now)
        session = session.with_fresh_counter()
        reason = session.end_reason(now)
        if reason is None:
            kept.append(session)
        else:
            ended.append(Ended(session, reason, now))
    adopted = [
        Session(
            client=client,
            started_at=now,
            terms_version="",
            expires_at=None if seconds_left is None else now + seconds_left,
            idle_timeout=limits.idle_timeout,
            data_quota=limits.data_quota,
            bytes_carried=bytes_counted,
            last_activity_at=now,
        )
        for client, (seconds_left, bytes_counted) in kernel.items()
        if client not in known
    ]
    return Reconciled(kept + adopted, ended, adopted)
