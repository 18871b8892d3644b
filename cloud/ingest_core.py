"""The pure core of ingest: reading messages, deciding when to flush, and planning rows.

Nothing here touches MQTT or the database; time comes in as an argument. The adapters in
cloud.ingest (MQTT) and cloud.ingest_store (SQL) do the I/O around these decisions.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import BigInteger, Integer, String, Table

from agent import wire
from cloud.coupon_ingest import CouponDesk
from cloud.models import Base
from cloud.receipts import (  # re-exported: the receipt rules are part of ingest's core
    RECEIPT_MAX_RANGES as RECEIPT_MAX_RANGES,
)
from cloud.receipts import RECEIPT_REASON_MAX as RECEIPT_REASON_MAX
from cloud.receipts import Origin as Origin
from cloud.receipts import Refusal as Refusal
from cloud.receipts import receipts as receipts
from cloud.receipts import runs as runs
from cloud.status import Will

DEAD_LETTER_PAYLOAD_MAX = 64 * 1024  # bytes of a refused payload kept for inspection
DEAD_LETTER_TOPIC_MAX = 255  # the dead_letters.topic column
_INT32_MAX = 2**31 - 1
_UNBOUNDED = 2**62  # a Text column: no length limit, but still no NUL

EVENTS: Table = Base.metadata.tables["events"]
ROUTERS: Table = Base.metadata.tables["routers"]
CONFIGS: Table = Base.metadata.tables["router_configs"]
COMMANDS: Table = Base.metadata.tables["commands"]
UPSTREAM = (wire.Channel.EVENTS, wire.Channel.STATUS, wire.Channel.ACK, wire.Channel.REQUEST)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A message that follows the wire contract, still to be checked against the database."""

    topic: str
    payload: bytes
    router_id: str
    message: wire.EventBatch | wire.Status | wire.Ack | wire.WalletRequest


@dataclass(frozen=True, slots=True)
class Refused:
    """A message that goes to dead_letters; `reason` names the field and what is wrong."""

    topic: str
    payload: bytes
    reason: str


Inbound = Accepted | Refused


def read_message(topic: str, payload: bytes) -> Inbound:
    """Decode and validate one delivered message; never raises for bad input."""
    try:
        parsed, message = wire.decode_from(topic, payload)
    except wire.WireError as exc:
        return Refused(topic, payload, str(exc))
    if parsed.channel not in UPSTREAM or not isinstance(
        message, wire.EventBatch | wire.Status | wire.Ack | wire.WalletRequest
    ):
        return Refused(topic, payload, f"topic: {topic!r} is not an upstream channel")
    return Accepted(topic, payload, parsed.router_id, message)


def weight(item: Inbound) -> int:
    """How much `item` counts toward a batch: its number of events, at least 1."""
    if isinstance(item, Accepted) and isinstance(item.message, wire.EventBatch):
        return max(1, len(item.message.events))
    return 1


T = TypeVar("T")


@dataclass(slots=True)
class Batcher(Generic[T]):
    """Holds items until `max_weight` weight, `max_items` items, or `max_wait` s after the first.

    take() hands over one batch of at most `max_weight` (but at least one item) and
    `max_items`; what arrived meanwhile waits for the next batch.
    """

    max_weight: int
    max_wait: float
    max_items: int
    _held: deque[tuple[T, int, float]] = field(default_factory=deque)
    _weight: int = 0

    def add(self, item: T, item_weight: int, now: float) -> None:
        """Hold `item`, which arrived at `now`."""
        self._held.append((item, item_weight, now))
        self._weight += item_weight

    def due(self, now: float) -> bool:
        """True when the oldest held items should be written now."""
        if not self._held:
            return False
        return (
            self._weight >= self.max_weight
            or len(self._held) >= self.max_items
            or now >= self._held[0][2] + self.max_wait  # the same sum as deadline()
        )

    def deadline(self) -> float | None:
        """When the held items become due by age alone; None when nothing is held."""
        return self._held[0][2] + self.max_wait if self._held else None

    def take(self) -> list[T]:
        """Hand over the oldest items, one batch's worth at most."""
        batch: list[T] = []
        weight = 0
        while self._held and len(batch) < self.max_items:
            item, item_weight, _ = self._held[0]
            if batch and weight + item_weight > self.max_weight:
                break
            self._held.popleft()
            batch.append(item)
            weight += item_weight
        self._weight -= weight
        return batch

    def __len__(self) -> int:
        return len(self._held)


@functools.cache
def _limits(table: Table) -> tuple[tuple[tuple[str, int], ...], tuple[str, ...]]:
    """Each text column with the most characters it keeps, and the 32-bit integer columns."""
    texts = tuple(
        (c.name, c.type.length or _UNBOUNDED) for c in table.columns if isinstance(c.type, String)
    )
    int32 = tuple(
        c.name
        for c in table.columns
        if isinstance(c.type, Integer) and not isinstance(c.type, BigInteger)
    )
    return texts, int32


def misfit(table: Table, values: dict[str, Any]) -> str | None:
    """Why `values` cannot be stored in `table` (a text too long, a number too big), or None."""
    texts, int32 = _limits(table)
    for name, limit in texts:
        text = values.get(name)
        if type(text) is str:
            if len(text) > limit:
                return f"{name}: is longer than the {limit} characters {table.name} keeps"
            if "\x00" in text:
                return f"{name}: contains a NUL character, which {table.name} cannot keep"
    for name in int32:
        number = values.get(name)
        if type(number) is int and number > _INT32_MAX:
            return f"{name}: is larger than {_INT32_MAX}, the most {table.name} keeps"
    return None


EVENT_FIELDS = (
    "router_id",
    "boot_id",
    "seq",
    "at",
    "kind",
    "device_id",
    "randomized",
    "session_bytes",
    "duration",
    "reason",
    "terms_version",
    "count",
    "coupon_id",
    "campaign_id",
    "replaces",
    "to_device",
)


def event_row(event: wire.Event) -> dict[str, Any]:
    """The events row for one event; the device is known only by its device_id pseudonym."""
    return {
        "router_id": event.router_id,
        "boot_id": event.boot_id,
        "seq": event.seq,
        "at": event.at,
        "kind": event.kind.value,
        "device_id": event.device_id,
        "randomized": event.randomized,
        "session_bytes": event.session_bytes,
        "duration": event.duration,
        "reason": event.reason,
        "terms_version": event.terms_version,
        "count": event.count,
        "coupon_id": event.coupon_id,
        "campaign_id": event.campaign_id,
        "replaces": event.replaces,
        "to_device": event.to_device,
    }


def status_values(status: wire.Status, now: datetime) -> dict[str, Any]:
    """The routers columns a status sets; None leaves the stored value as it is."""
    online = status.state is not wire.RouterState.OFFLINE
    return {
        "state": status.state.value,
        "status_at": status.at,
        "last_seen": now if online else None,  # a Last Will is not the router being seen
        "boot_id": status.boot_id or None,
        "agent_version": status.agent_version or None,
        "clients": status.clients,
        "config_version": status.config_version,
        "spool_depth": status.spool_depth,
        "spool_dropped": status.spool_dropped,
        "connected_at": status.connected_at or None,  # older agents do not say
    }


@dataclass(slots=True)
class Plan:
    """What one transaction writes for a batch of messages received at `received_at`."""

    received_at: datetime
    events: list[dict[str, Any]] = field(default_factory=list)
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)  # newest per router
    wills: dict[str, Will] = field(default_factory=dict)  # a router's will, if it has one
    heard: set[str] = field(default_factory=set)  # routers whose events bump last_seen
    config_acks: list[dict[str, Any]] = field(default_factory=list)
    command_acks: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)  # events dead-lettered, by origin
    coupons: CouponDesk | None = None  # gathers coupon rows, when the batch has coupon events

    def origins(self) -> tuple[Origin, ...]:
        """The events this plan stores (or finds already stored), by origin."""
        return tuple((row["router_id"], row["boot_id"], row["seq"]) for row in self.events)

    def refuse(self, topic: str, payload: bytes, reason: str) -> None:
        """Send a message to dead_letters, with its topic and payload cut to what is kept."""
        self.dead_letters.append(
            {
                "topic": topic[:DEAD_LETTER_TOPIC_MAX],
                "payload": payload[:DEAD_LETTER_PAYLOAD_MAX],
                "reason": reason,
            }
        )


def _plan_events(plan: Plan, item: Accepted, batch: wire.EventBatch) -> None:
    """Store the events that fit; dead-letter each one that does not, on its own.

    A refused event goes to dead_letters as its own JSON, and the router is told of it
    (a receipt's `refused`), so it stops sending what would only be refused again. Its
    batch-mates are stored as usual: one bad field costs one event, not a hundred.
    """
    stored = False
    for i, event in enumerate(batch.events):
        row = event_row(event)
        problem = misfit(EVENTS, row)
        if problem is None and plan.coupons is not None:
            problem = plan.coupons.take(event, row)
        if problem is None:
            plan.events.append(row)
            stored = True
            continue
        reason = f"events[{i}].{problem}"
        plan.refuse(item.topic, event.encode(), reason)
        if event.router_id == item.router_id:  # read_message checked; never another's
            plan.refused.append(((item.router_id, event.boot_id, event.seq), reason))
    if stored:
        plan.heard.add(item.router_id)


def is_timeless_will(status: wire.Status) -> bool:
    """An offline status without a time: a Last Will composed at connect (as agent.link does)."""
    return status.state is wire.RouterState.OFFLINE and status.at == 0


def _plan_status(plan: Plan, item: Accepted, status: wire.Status) -> None:
    values = status_values(status, plan.received_at)
    problem = misfit(ROUTERS, values)
    if problem is not None:
        plan.refuse(item.topic, item.payload, problem)
        return
    if is_timeless_will(status):
        plan.wills[item.router_id] = Will(values["boot_id"], values["connected_at"])
        return
    plan.wills.pop(item.router_id, None)  # it spoke after its will: it is back
    if plan.coupons is not None:
        plan.coupons.status(status)
    held = plan.statuses.get(item.router_id)
    if held is None or held["status_at"] <= status.at:
        plan.statuses[item.router_id] = values


def _plan_ack(plan: Plan, item: Accepted, ack: wire.Ack) -> None:
    error = None if ack.ok else (ack.error or "refused")
    if ack.ref == "cmd":
        problem = misfit(COMMANDS, {"id": ack.id, "error": error})
    else:
        problem = misfit(CONFIGS, {"ack_error": error})
    if problem is not None:
        plan.refuse(item.topic, item.payload, problem)
        return
    if ack.ref == "config":
        if not ack.id.isdigit() or int(ack.id) > _INT32_MAX:
            plan.refuse(item.topic, item.payload, "id: must be the config version, a number")
            return
        plan.config_acks.append({"rid": item.router_id, "version": int(ack.id), "error": error})
    elif ack.ref == "cmd":
        plan.command_acks.append(
            {"rid": item.router_id, "cid": ack.id, "ok": ack.ok, "error": error}
        )
    else:
        plan.refuse(item.topic, item.payload, f"ref: is {ack.ref!r}; expected 'config' or 'cmd'")


def plan_batch(
    items: Sequence[Inbound],
    known_routers: Collection[str],
    now: datetime,
    coupons: CouponDesk | None = None,
) -> Plan:
    """The rows a batch becomes: events, the newest status per router, acks, dead letters
    (and, through `coupons`, the coupon ledger's rows)."""
    plan = Plan(received_at=now, coupons=coupons)
    for item in items:
        if isinstance(item, Refused):
            plan.refuse(item.topic, item.payload, item.reason)
        elif item.router_id not in known_routers:
            plan.refuse(item.topic, item.payload, f"router_id: {item.router_id!r} is not enrolled")
        elif isinstance(item.message, wire.EventBatch):
            _plan_events(plan, item, item.message)
        elif isinstance(item.message, wire.Status):
            _plan_status(plan, item, item.message)
        elif isinstance(item.message, wire.WalletRequest):
            continue  # answered at once by the worker, never batched
        else:
            _plan_ack(plan, item, item.message)
    # One order for every writer, so concurrent workers never wait on each other in a cycle.
    plan.events.sort(key=lambda row: (row["router_id"], row["boot_id"], row["seq"]))
    return plan


def routers_named(items: Sequence[Inbound]) -> set[str]:
    """The router ids the accepted messages of a batch come from."""
    return {item.router_id for item in items if isinstance(item, Accepted)}
