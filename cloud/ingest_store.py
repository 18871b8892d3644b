"""The SQL adapter of ingest: a batch of messages in one transaction, duplicates ignored.

Blocking: call it from a worker thread, never on the event loop. A database outage
raises (the caller retries and acknowledges nothing); a message the database refuses
goes to dead_letters without holding up the rest of its batch.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    Insert,
    Table,
    Text,
    bindparam,
    cast,
    column,
    func,
    insert,
    select,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from agent import wire
from cloud import coupon_store, status
from cloud.coupon_ingest import CouponDesk, wants_coupons
from cloud.ingest_core import (
    EVENT_FIELDS,
    EVENTS,
    Inbound,
    Origin,
    Plan,
    Refusal,
    Refused,
    plan_batch,
    routers_named,
)
from cloud.issuer_keys import certify_keys
from cloud.models import Base
from cloud.rollup_store import Rollups

log = logging.getLogger(__name__)

DEAD_LETTERS: Table = Base.metadata.tables["dead_letters"]
ENROLLED_CACHE_SECONDS = 60.0  # how long a worker trusts that a router is enrolled
LAST_SEEN_RESOLUTION = status.LAST_SEEN_RESOLUTION
# Errors that say the database is unreachable or busy, not that a message is bad.
OUTAGE: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
)


def is_outage(error: BaseException) -> bool:
    """True when `error` means: retry later, the messages are fine."""
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, OUTAGE)


_ORIGIN = ("router_id", "boot_id", "seq")
_EVENT_COLUMNS = tuple(column for column in EVENTS.columns if column.name in EVENT_FIELDS)


def _postgresql_insert() -> Insert:
    # One JSON parameter carries the whole batch: psycopg's per-row executemany costs about
    # 5x the client CPU, and json_to_recordset parses the rows inside the server.
    records = (
        func.json_to_recordset(cast(bindparam("rows", type_=Text()), JSON))
        .table_valued(*(column(c.name, c.type) for c in _EVENT_COLUMNS))
        .render_derived(name="batch", with_types=True)
    )
    return (
        postgresql.insert(EVENTS)
        .from_select([c.name for c in _EVENT_COLUMNS], select(*records.c))
        .on_conflict_do_nothing(index_elements=_ORIGIN)
    )


class EventInserter:
    """INSERT INTO events ... ON CONFLICT (router_id, boot_id, seq) DO NOTHING, per dialect."""

    def __init__(self, engine: Engine, returning: bool = False) -> None:
        self.dialect = engine.dialect.name
        if self.dialect == "postgresql":
            self.statement = _postgresql_insert()
        elif self.dialect == "sqlite":
            self.statement = sqlite.insert(EVENTS).on_conflict_do_nothing(index_elements=_ORIGIN)
        else:
            raise NotImplementedError(f"ingest runs on SQLite and PostgreSQL, not {self.dialect}")
        self.returning = returning  # say which rows were stored now (the rollups count those)
        if returning:
            self.statement = self.statement.returning(*(EVENTS.c[name] for name in _ORIGIN))

    def __call__(self, connection: Connection, rows: list[dict[str, Any]]) -> set[Origin]:
        """Insert `rows`; a row whose origin is already stored is skipped. With `returning`,
        the origins stored by this call (else an empty set)."""
        if self.dialect == "postgresql":
            result = connection.execute(self.statement, {"rows": json.dumps(rows)})
        else:
            result = connection.execute(self.statement, rows)
        return {(r[0], r[1], r[2]) for r in result} if self.returning else set()


Outgoing = tuple[str, bytes, bool]  # topic, payload, retain


@dataclass(frozen=True, slots=True)
class Written:
    """What one write committed: events offered (duplicates included), by origin in `stored`
    (what the routers get receipts for), and dead letters, with the events among them by
    origin and reason in `refused` (what the routers get refusals for); and messages to
    publish once committed, in `outbox` (topic, payload, retain): spent coupons, plans."""

    events: int = 0
    dead_letters: int = 0
    stored: tuple[Origin, ...] = ()
    refused: tuple[Refusal, ...] = ()
    outbox: tuple[Outgoing, ...] = ()

    def __add__(self, other: Written) -> Written:
        return Written(
            self.events + other.events,
            self.dead_letters + other.dead_letters,
            self.stored + other.stored,
            self.refused + other.refused,
            self.outbox + other.outbox,
        )


class IngestStore:
    """Writes batches of inbound messages into one database."""

    def __init__(self, engine: Engine, rollups: bool = True) -> None:
        self.engine = engine
        self._insert_events = EventInserter(engine, returning=rollups)
        self._rollups = Rollups() if rollups else None  # visitor counts, in the same transaction
        self._heard: dict[str, float] = {}  # router_id: when this worker last bumped last_seen
        self._enrolled: set[str] = set()
        self._enrolled_until = 0.0
        self._verifiers = coupon_store.Verifiers()

    def write(self, items: Sequence[Inbound], now: datetime) -> Written:
        """Store `items` in one transaction; if the database refuses one, each on its own."""
        try:
            with self.engine.begin() as connection:
                written, plans = self._write(connection, items, now)
            return self._with_plans(written, plans, now)
        except sa_exc.DBAPIError as error:
            if is_outage(error):
                raise
            log.warning("a batch was refused (%s); writing its messages one by one", error.orig)
        written = Written()
        for item in items:
            written += self._write_alone(item, now)
        return written

    def _write_alone(self, item: Inbound, now: datetime) -> Written:
        try:
            with self.engine.begin() as connection:
                written, plans = self._write(connection, [item], now)
            return self._with_plans(written, plans, now)
        except sa_exc.DBAPIError as error:
            if is_outage(error):
                raise
            reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
            refused = Refused(item.topic, item.payload, f"database: {reason}")
            with self.engine.begin() as connection:
                return self._write(connection, [refused], now)[0]

    def unanswered_spent(self) -> list[tuple[str, wire.Command]]:
        """The spent-coupon commands to send again (see coupon_store.unanswered_spent)."""
        with self.engine.connect() as connection:
            return coupon_store.unanswered_spent(connection, datetime.now(UTC))

    def _with_plans(self, written: Written, routers: set[str], now: datetime) -> Written:
        """`written` with the coupon plans of `routers` stored as new configs, to publish."""
        if not routers:
            return written
        from cloud.coupon_plans import push_plan

        sent: list[Outgoing] = []
        for router_id in sorted(routers):
            try:
                push_plan(self.engine, lambda t, p, r: sent.append((t, p, r)), router_id, now)
            except Exception as error:  # the batch is committed; the next change pushes again
                log.warning("coupon plan for %s not pushed: %s", router_id, error)
        return replace(written, outbox=written.outbox + tuple(sent))

    def _known(self, connection: Connection, router_ids: set[str]) -> set[str]:
        clock = time.monotonic()
        if clock >= self._enrolled_until:
            self._enrolled, self._enrolled_until = set(), clock + ENROLLED_CACHE_SECONDS
        unknown = router_ids - self._enrolled
        if unknown:
            self._enrolled |= status.enrolled(connection, unknown)
        return self._enrolled & router_ids

    def _write(
        self, connection: Connection, items: Sequence[Inbound], now: datetime
    ) -> tuple[Written, set[str]]:
        """Write a batch; what was written, and the routers whose coupon plan is due."""
        known = self._known(connection, routers_named(items))
        desk = None
        if wants_coupons(items):
            where = coupon_store.places(connection, known)
            desk = CouponDesk(where, self._verifiers.verify(connection))
        plan = plan_batch(items, known, now, desk)
        self._execute(connection, plan)
        outbox: tuple[Outgoing, ...] = ()
        plans: set[str] = set()
        if desk is not None and desk.writes:
            outcome = coupon_store.apply(connection, desk.writes, dict(desk.places), now)
            outbox = tuple(
                (str(wire.Topic(router_id, wire.Channel.COMMAND)), command.encode(), False)
                for router_id, command in outcome.commands
            )
            keys = certify_keys(connection, desk.writes.issuer_keys, dict(desk.places), now)
            plans = outcome.plan_routers | keys
        written = Written(
            len(plan.events), len(plan.dead_letters), plan.origins(), tuple(plan.refused), outbox
        )
        return written, plans

    def _execute(self, connection: Connection, plan: Plan) -> None:
        heard = self._stale_heard(plan.heard)
        # Two workers touching the same routers in different orders deadlocked once in a
        # reconnect storm: take every router row this transaction will write, in one sorted pass.
        status.lock_routers(connection, set(plan.statuses) | set(plan.wills) | heard)
        if plan.events:
            fresh = self._insert_events(connection, plan.events)
            if self._rollups is not None:
                self._rollups.add(connection, plan.events, fresh)
        status.apply_statuses(connection, plan.statuses, plan.wills)
        status.mark_acks(connection, plan.config_acks, plan.command_acks, plan.received_at)
        if plan.dead_letters:
            connection.execute(insert(DEAD_LETTERS), plan.dead_letters)
        status.mark_heard(connection, heard, plan.received_at)

    def _stale_heard(self, router_ids: set[str]) -> set[str]:
        """The routers whose last_seen this worker has not bumped for LAST_SEEN_RESOLUTION."""
        clock = time.monotonic()
        stale = {r for r in router_ids if clock - self._heard.get(r, -1e9) >= LAST_SEEN_RESOLUTION}
        self._heard.update(dict.fromkeys(stale, clock))
        return stale
