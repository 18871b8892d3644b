"""The SQL adapter of ingest: a batch of messages in one transaction, duplicates ignored.

Blocking: call it from a worker thread, never on the event loop. A database outage
raises (the caller retries and acknowledges nothing); a message the database refuses
goes to dead_letters without holding up the rest of its batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Insert, Table, insert
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from cloud import status
from cloud.ingest_core import EVENTS, Inbound, Plan, Refused, plan_batch, routers_named
from cloud.models import Base

log = logging.getLogger(__name__)

DEAD_LETTERS: Table = Base.metadata.tables["dead_letters"]
ENROLLED_CACHE_SECONDS = 60.0  # how long a worker trusts that a router is enrolled
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


def insert_ignoring_duplicates(engine: Engine) -> Insert:
    """INSERT INTO events ... ON CONFLICT (router_id, boot_id, seq) DO NOTHING, per dialect."""
    key = [EVENTS.c.router_id, EVENTS.c.boot_id, EVENTS.c.seq]
    if engine.dialect.name == "postgresql":
        return postgresql.insert(EVENTS).on_conflict_do_nothing(index_elements=key)
    if engine.dialect.name == "sqlite":
        return sqlite.insert(EVENTS).on_conflict_do_nothing(index_elements=key)
    raise NotImplementedError(f"ingest supports SQLite and PostgreSQL, not {engine.dialect.name}")


@dataclass(frozen=True, slots=True)
class Written:
    """What one write stored: events offered (duplicates included) and dead letters."""

    events: int = 0
    dead_letters: int = 0

    def __add__(self, other: Written) -> Written:
        return Written(self.events + other.events, self.dead_letters + other.dead_letters)


class IngestStore:
    """Writes batches of inbound messages into one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert_events = insert_ignoring_duplicates(engine)
        self._enrolled: set[str] = set()
        self._enrolled_until = 0.0

    def write(self, items: Sequence[Inbound], now: datetime) -> Written:
        """Store `items` in one transaction; if the database refuses one, each on its own."""
        try:
            with self.engine.begin() as connection:
                return self._write(connection, items, now)
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
                return self._write(connection, [item], now)
        except sa_exc.DBAPIError as error:
            if is_outage(error):
                raise
            reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
            refused = Refused(item.topic, item.payload, f"database: {reason}")
            with self.engine.begin() as connection:
                return self._write(connection, [refused], now)

    def _known(self, connection: Connection, router_ids: set[str]) -> set[str]:
        clock = time.monotonic()
        if clock >= self._enrolled_until:
            self._enrolled, self._enrolled_until = set(), clock + ENROLLED_CACHE_SECONDS
        unknown = router_ids - self._enrolled
        if unknown:
            self._enrolled |= status.enrolled(connection, unknown)
        return self._enrolled & router_ids

    def _write(self, connection: Connection, items: Sequence[Inbound], now: datetime) -> Written:
        plan = plan_batch(items, self._known(connection, routers_named(items)), now)
        self._execute(connection, plan)
        return Written(len(plan.events), len(plan.dead_letters))

    def _execute(self, connection: Connection, plan: Plan) -> None:
        if plan.events:
            connection.execute(self._insert_events, plan.events)
        status.mark_heard(connection, plan.heard, plan.received_at)
        status.apply_statuses(connection, plan.statuses)
        status.mark_acks(connection, plan.config_acks, plan.command_acks, plan.received_at)
        if plan.dead_letters:
            rows: list[dict[str, Any]] = plan.dead_letters
            connection.execute(insert(DEAD_LETTERS), rows)
