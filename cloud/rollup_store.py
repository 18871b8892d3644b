"""Visitor rollups in SQL, inside the ingest batch's transaction (cloud.rollups decides).

Exactly once: the ingest passes only the events its INSERT ... ON CONFLICT DO NOTHING
RETURNING stored for the first time, so a redelivered batch adds nothing, and the counts
commit or roll back with the events. Concurrent workers stay exact: each (site, device)
row of site_devices is locked (an upsert that writes it back unchanged, in sorted order)
before that device's days are read, so two batches with the same device take turns.
Blocking: call from the ingest's worker thread.
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    Date,
    Integer,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    column,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from cloud import rollups
from cloud.models import Base
from cloud.rollups import Day, DayKey, DeviceKey, Known, Rules, SiteRules

HOURS: Table = Base.metadata.tables["site_hours"]
DAYS: Table = Base.metadata.tables["site_days"]
DEVICES: Table = Base.metadata.tables["site_devices"]
TERMS: Table = Base.metadata.tables["site_terms"]
RULES: Table = Base.metadata.tables["site_analytics"]
ROUTERS: Table = Base.metadata.tables["routers"]

Origin = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class _Upsert:
    """INSERT rows of `table` ... ON CONFLICT (`keys`) DO UPDATE SET update(excluded)."""

    table: Table
    keys: tuple[str, ...]
    update: Callable[[Any], dict[str, Any]]
    returning: tuple[str, ...] = ()


@functools.cache
def _statement(dialect: str, upsert: _Upsert) -> Any:
    """The statement, compiled once per dialect: executemany on SQLite; on PostgreSQL one
    JSON parameter carries the rows (as cloud.ingest_store does for events)."""
    statement: postgresql.Insert | sqlite.Insert
    if dialect == "postgresql":
        records = (
            func.json_to_recordset(cast(bindparam("rows", type_=Text()), JSON))
            .table_valued(*(column(c.name, c.type) for c in upsert.table.columns))
            .render_derived(name="batch", with_types=True)
        )
        statement = postgresql.insert(upsert.table).from_select(
            [c.name for c in upsert.table.columns], select(*records.c)
        )
    else:
        statement = sqlite.insert(upsert.table)
    made = statement.on_conflict_do_update(
        index_elements=list(upsert.keys), set_=upsert.update(statement.excluded)
    )
    if upsert.returning:
        return made.returning(*(upsert.table.c[name] for name in upsert.returning))
    return made


def _write(connection: Connection, upsert: _Upsert, rows: Sequence[dict[str, Any]]) -> list[Any]:
    """Upsert `rows` (each with every column of the table, dates as ISO text); the rows
    returned, if any."""
    if not rows:
        return []
    if connection.dialect.name == "postgresql":
        statement = _statement("postgresql", upsert)
        result = connection.execute(statement, {"rows": json.dumps(rows, default=str)})
        return list(result) if upsert.returning else []
    if upsert.returning:
        raise NotImplementedError("RETURNING through sqlite3's executemany")
    # SQLite: straight to sqlite3's executemany; SQLAlchemy's per-row parameter handling
    # cost more than the statement (dates as SQLAlchemy stores them: ISO text).
    sql, names = _sqlite_sql(upsert)
    connection.exec_driver_sql(sql, list(map(operator.itemgetter(*names), rows)))
    return []


@functools.cache
def _sqlite_sql(upsert: _Upsert) -> tuple[str, tuple[str, ...]]:
    """The SQLite statement's text and the column of each of its positional parameters."""
    compiled = _statement("sqlite", upsert).compile(dialect=sqlite.dialect())
    return compiled.string, tuple(compiled.positiontup or ())


_DAYS = _Upsert(
    DAYS,
    ("site_id", "day", "device_id"),
    lambda new: {"first_seen": new.first_seen, "hours": new.hours},
)
_DEVICES = _Upsert(
    DEVICES,
    ("site_id", "device_id"),
    lambda new: {"first_day": new.first_day, "last_day": new.last_day},
)
# Writes a device's row back unchanged: PostgreSQL locks it (or the one a concurrent
# transaction is inserting) until this transaction ends, and returns what is stored.
_LOCK = _Upsert(
    DEVICES,
    ("site_id", "device_id"),
    lambda _new: {"first_day": DEVICES.c.first_day},
    returning=("site_id", "device_id", "first_day", "last_day"),
)
_HOURS = _Upsert(
    HOURS,
    ("site_id", "day", "hour"),
    lambda new: {name: HOURS.c[name] + new[name] for name in rollups.COUNTS},
)
_TERMS = _Upsert(
    TERMS,
    ("site_id", "terms_version"),
    lambda new: {
        "first_at": func.min(TERMS.c.first_at, new.first_at),  # SQLite's two-argument min
        "last_at": func.max(TERMS.c.last_at, new.last_at),
        "acceptances": TERMS.c.acceptances + new.acceptances,
    },
)
_TERMS_PG = _Upsert(
    TERMS,
    ("site_id", "terms_version"),
    lambda new: {
        "first_at": func.least(TERMS.c.first_at, new.first_at),
        "last_at": func.greatest(TERMS.c.last_at, new.last_at),
        "acceptances": TERMS.c.acceptances + new.acceptances,
    },
)


def site_rules(connection: Connection, site_ids: Collection[int]) -> dict[int, SiteRules]:
    """Each site's rules history, oldest first."""
    if not site_ids:
        return {}
    r = RULES.c
    found: dict[int, list[Rules]] = {}
    for row in connection.execute(
        select(r.site_id, r.valid_from, r.timezone, r.passer_by_seconds)
        .where(r.site_id.in_(sorted(site_ids)))
        .order_by(r.site_id, r.valid_from)
    ):
        found.setdefault(row[0], []).append(Rules(row[1], row[2], row[3]))
    return {site_id: SiteRules(tuple(entries)) for site_id, entries in found.items()}


def set_rules(
    connection: Connection, site_id: int, now: float, timezone: str, passer_by_seconds: float
) -> Rules:
    """Make `timezone` and `passer_by_seconds` the site's rules from `now` on; RulesError if bad."""
    rollups.check_rules(timezone, passer_by_seconds)
    rules = Rules(now, timezone, passer_by_seconds)
    connection.execute(
        RULES.insert().values(
            site_id=site_id,
            valid_from=now,
            timezone=timezone,
            passer_by_seconds=passer_by_seconds,
        )
    )
    return rules


def current_rules(connection: Connection, site_id: int, now: float) -> Rules:
    """The site's rules in force at `now`."""
    return site_rules(connection, [site_id]).get(site_id, rollups.NO_RULES).at(now)


class Rollups:
    """Adds newly stored events to the rollups, in the caller's transaction."""

    def add(
        self, connection: Connection, rows: Sequence[dict[str, Any]], fresh: Collection[Origin]
    ) -> None:
        """Count the `rows` whose origin is in `fresh` (stored by this transaction)."""
        new = [r for r in rows if (r["router_id"], r["boot_id"], r["seq"]) in fresh]
        if not new:
            return
        routers = sorted({r["router_id"] for r in new})
        site_of: dict[str, int] = {
            row[0]: row[1]
            for row in connection.execute(
                select(ROUTERS.c.id, ROUTERS.c.site_id).where(ROUTERS.c.id.in_(routers))
            )
        }
        rules = site_rules(connection, set(site_of.values()))
        made = rollups.tally(new, site_of, rules)
        settled = self._presence(connection, made.presence, rules) if made.presence else None
        hours = rollups.merged_hours(made.hours, settled.hours if settled else {})
        _add_hours(connection, hours)
        if made.terms:
            _add_terms(connection, made.terms)

    def _presence(
        self, connection: Connection, touched: dict[DayKey, Day], rules: Mapping[int, SiteRules]
    ) -> rollups.Settled:
        known = _lock_devices(connection, touched)
        wanted = sorted(set(touched) | rollups.flipped_days(touched, known))
        stored = _stored_days(connection, wanted)
        settled = rollups.settle(touched, stored, known, rules)
        if settled.days:
            days = [
                {
                    "site_id": s,
                    "day": day.isoformat(),
                    "device_id": dev,
                    "first_seen": v.first_seen,
                    "hours": v.hours,
                }
                for (s, day, dev), v in sorted(settled.days.items())
            ]
            _write(connection, _DAYS, days)
        changed = [
            {
                "site_id": s,
                "device_id": dev,
                "first_day": v.first_day.isoformat(),
                "last_day": v.last_day.isoformat(),
            }
            for (s, dev), v in sorted(settled.devices.items())
        ]
        _write(connection, _DEVICES, changed)
        return settled


@functools.cache
def _days_joined() -> Any:
    """PostgreSQL: the stored rows of the days in one JSON parameter (an index lookup each;
    a row-value IN list of hundreds is planned as a scan)."""
    d = DAYS.c
    keys = (
        func.json_to_recordset(cast(bindparam("keys", type_=Text()), JSON))
        .table_valued(column("site_id", Integer), column("day", Date), column("device_id", Text))
        .render_derived(name="wanted", with_types=True)
    )
    return select(d.site_id, d.day, d.device_id, d.first_seen, d.hours).join(
        keys,
        and_(d.site_id == keys.c.site_id, d.day == keys.c.day, d.device_id == keys.c.device_id),
    )


# SQLite: the keys in one JSON parameter, each looked up by primary key (json_each first).
_SQLITE_DAYS = (
    "SELECT d.site_id, d.day, d.device_id, d.first_seen, d.hours FROM json_each(?) AS k"
    " CROSS JOIN site_days AS d WHERE d.site_id = json_extract(k.value, '$[0]')"
    " AND d.day = json_extract(k.value, '$[1]') AND d.device_id = json_extract(k.value, '$[2]')"
)
_SQLITE_DEVICES = (
    "SELECT d.site_id, d.device_id, d.first_day, d.last_day FROM json_each(?) AS k"
    " CROSS JOIN site_devices AS d WHERE d.site_id = json_extract(k.value, '$[0]')"
    " AND d.device_id = json_extract(k.value, '$[1]')"
)


def _stored_days(connection: Connection, wanted: Sequence[DayKey]) -> dict[DayKey, Day]:
    """The stored site_days rows of `wanted`."""
    if connection.dialect.name == "postgresql":
        listed = [
            {"site_id": s, "day": day.isoformat(), "device_id": dev} for s, day, dev in wanted
        ]
        found = connection.execute(_days_joined(), {"keys": json.dumps(listed)}).all()
        return {(row[0], row[1], row[2]): Day(row[3], row[4]) for row in found}
    keys = json.dumps([(s, day.isoformat(), dev) for s, day, dev in wanted])
    found = connection.exec_driver_sql(_SQLITE_DAYS, (keys,)).all()
    return {(row[0], date.fromisoformat(row[1]), row[2]): Day(row[3], row[4]) for row in found}


def _lock_devices(connection: Connection, touched: Mapping[DayKey, Day]) -> dict[DeviceKey, Known]:
    """Lock (or create) each touched device's site_devices row, in sorted order; the stored
    first and last days of those that were there (a new row reads back as created)."""
    spans: dict[DeviceKey, tuple[Any, Any]] = {}
    for site_id, day, device in touched:
        held = spans.get((site_id, device))
        spans[(site_id, device)] = (
            (day, day) if held is None else (min(held[0], day), max(held[1], day))
        )
    rows = [
        {"site_id": s, "device_id": dev, "first_day": first, "last_day": last}
        for (s, dev), (first, last) in sorted(spans.items())
    ]
    if connection.dialect.name != "postgresql":  # SQLite: this transaction is the only writer
        pairs = json.dumps([(row["site_id"], row["device_id"]) for row in rows])
        found = connection.exec_driver_sql(_SQLITE_DEVICES, (pairs,)).all()
        return {
            (row[0], row[1]): Known(date.fromisoformat(row[2]), date.fromisoformat(row[3]))
            for row in found
        }
    locked = _write(connection, _LOCK, rows)
    return {(row[0], row[1]): Known(row[2], row[3]) for row in locked}


def _add_hours(connection: Connection, hours: Mapping[rollups.HourKey, dict[str, float]]) -> None:
    rows = [
        {"site_id": s, "day": day.isoformat(), "hour": hour, **counts}
        for (s, day, hour), counts in hours.items()
    ]
    _write(connection, _HOURS, rows)


def _add_terms(connection: Connection, terms: Mapping[tuple[int, str], rollups.TermsUse]) -> None:
    rows = [
        {
            "site_id": s,
            "terms_version": v,
            "first_at": u.first_at,
            "last_at": u.last_at,
            "acceptances": u.acceptances,
        }
        for (s, v), u in sorted(terms.items())
    ]
    _write(connection, _TERMS_PG if connection.dialect.name == "postgresql" else _TERMS, rows)
