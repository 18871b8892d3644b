"""Privacy controls: retention per kind of data, erasure of a device_id, and its export.

Erasure deletes what names the device (events, device days, dead letters quoting it) and
anonymises what the shop's books need (the coupon ledger keeps its rows for budgets and
redemption counts, without the device_id or the token that names it; commands keep their
rows without it). The rollups keep their counts: they name no device. Each erasure is
recorded with the device_id hashed again (SHA-256), so the record does not name it either.
Blocking: call from a thread, never on an event loop.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    delete,
    func,
    insert,
    select,
    text,
    tuple_,
    update,
)

from agent import wire
from cloud.errors import CloudError
from cloud.models import Base
from cloud.settings import CloudSettings

EVENTS: Table = Base.metadata.tables["events"]
DEAD_LETTERS: Table = Base.metadata.tables["dead_letters"]
SITE_DAYS: Table = Base.metadata.tables["site_days"]
SITE_DEVICES: Table = Base.metadata.tables["site_devices"]
SITE_HOURS: Table = Base.metadata.tables["site_hours"]
COUPONS: Table = Base.metadata.tables["coupons"]
REDEMPTIONS: Table = Base.metadata.tables["redemptions"]
COMMANDS: Table = Base.metadata.tables["commands"]
ERASURES: Table = Base.metadata.tables["erasures"]
BATCH = 5000  # rows deleted per transaction, so a long job never holds locks for long
_DEVICE_ID = re.compile(rf"[0-9a-f]{{{wire.DEVICE_ID_HEX}}}")


class PrivacyError(CloudError):
    """A privacy request was refused; the message names the field and the fix."""


def check_device_id(device_id: str) -> str:
    """`device_id` if it is one (32 lower-case hex digits); PrivacyError if not."""
    if not _DEVICE_ID.fullmatch(device_id):
        raise PrivacyError(
            f"device_id: {device_id!r} is not {wire.DEVICE_ID_HEX} lower-case hex digits "
            "(the pseudonym the routers send, never a MAC)"
        )
    return device_id


def device_hash(device_id: str) -> str:
    """The device_id hashed again, as the erasures table keeps it."""
    return hashlib.sha256(device_id.encode()).hexdigest()


# --- retention ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Retention:
    """Days each kind of data is kept; 0 keeps it for ever."""

    events: int = 180
    dead_letters: int = 30
    visits: int = 400
    rollups: int = 3 * 366
    coupons: int = 365

    @classmethod
    def of(cls, settings: CloudSettings) -> Retention:
        """The retention the settings ask for; PrivacyError for a negative number."""
        made = cls(
            settings.retention_events_days,
            settings.retention_dead_letters_days,
            settings.retention_visits_days,
            settings.retention_rollups_days,
            settings.retention_coupons_days,
        )
        for name in ("events", "dead_letters", "visits", "rollups", "coupons"):
            if getattr(made, name) < 0:
                raise PrivacyError(f"retention_{name}_days: must be 0 (for ever) or more days")
        return made


@dataclass(frozen=True, slots=True)
class Rule:
    """What one retention step removes: rows of `table` matching `where` (older than kept)."""

    name: str
    table: Table
    where: ColumnElement[bool]
    anonymise: dict[str, Any] | None = None  # update these columns instead of deleting


def retention_rules(retention: Retention, now: datetime) -> list[Rule]:
    """The steps a retention run takes at `now`, one per kind of data that is not kept for ever."""

    def before(days: int) -> datetime:
        return now - timedelta(days=days)

    def day_before(days: int) -> date:
        return before(days).astimezone(UTC).date()

    rules: list[Rule] = []
    if retention.events:
        rules.append(Rule("events", EVENTS, EVENTS.c.at < before(retention.events).timestamp()))
    if retention.dead_letters:
        when = before(retention.dead_letters)
        rules.append(Rule("dead_letters", DEAD_LETTERS, DEAD_LETTERS.c.received_at < when))
    if retention.visits:
        cutoff = day_before(retention.visits)
        rules.append(Rule("site_devices", SITE_DEVICES, SITE_DEVICES.c.last_day < cutoff))
        rules.append(Rule("site_days", SITE_DAYS, SITE_DAYS.c.day < cutoff))
    if retention.rollups:
        cutoff = day_before(retention.rollups)
        rules.append(Rule("site_hours", SITE_HOURS, SITE_HOURS.c.day < cutoff))
    if retention.coupons:
        expired = int(before(retention.coupons).timestamp())
        where = (COUPONS.c.not_after < expired) & (COUPONS.c.device_id != "")
        rules.append(Rule("coupons", COUPONS, where, anonymise={"device_id": "", "token": ""}))
    return rules


def _keys(table: Table) -> ColumnElement[Any]:
    columns = list(table.primary_key.columns)
    return columns[0] if len(columns) == 1 else tuple_(*columns)


def apply_retention(
    engine: Engine, retention: Retention, now: datetime, dry_run: bool = False, batch: int = BATCH
) -> dict[str, int]:
    """Remove what is older than kept, `batch` rows per transaction; rows per step (with
    `dry_run`, the rows it would remove, and nothing is changed)."""
    done: dict[str, int] = {}
    for rule in retention_rules(retention, now):
        if dry_run:
            with engine.connect() as connection:
                counting = select(func.count()).select_from(rule.table).where(rule.where)
                done[rule.name] = int(connection.scalar(counting) or 0)
            continue
        keys = _keys(rule.table)
        removed = 0
        while True:
            chosen = select(*rule.table.primary_key.columns).where(rule.where).limit(batch)
            with engine.begin() as connection:
                if rule.anonymise is None:
                    statement: Any = delete(rule.table).where(keys.in_(chosen))
                else:
                    statement = update(rule.table).where(keys.in_(chosen)).values(rule.anonymise)
                count = connection.execute(statement).rowcount
            removed += count
            if count < batch:
                break
        done[rule.name] = removed
    return done


# --- erasure and export -------------------------------------------------------------------


def _quoting(connection: Connection, device_id: str) -> ColumnElement[bool]:
    """Dead letters whose payload quotes `device_id`."""
    if connection.dialect.name == "postgresql":
        found = text("position(CAST(:needle AS bytea) in dead_letters.payload) > 0")
    else:
        found = text("instr(dead_letters.payload, :needle) > 0")
    return found.bindparams(needle=device_id.encode())  # type: ignore[return-value]


def erase_device(engine: Engine, device_id: str, by: str, now: datetime) -> dict[str, int]:
    """Erase what is held for `device_id`, in one transaction, and record it; rows per table."""
    check_device_id(device_id)
    if not by.strip():
        raise PrivacyError("by: say who asked for the erasure (an operator's name)")
    e, c = EVENTS.c, COUPONS.c
    with engine.begin() as connection:
        removed = {
            "events": connection.execute(delete(EVENTS).where(e.device_id == device_id)).rowcount,
            "events_moved_to": connection.execute(
                delete(EVENTS).where(e.to_device == device_id, e.to_device != "")
            ).rowcount,
            "site_days": connection.execute(
                delete(SITE_DAYS).where(SITE_DAYS.c.device_id == device_id)
            ).rowcount,
            "site_devices": connection.execute(
                delete(SITE_DEVICES).where(SITE_DEVICES.c.device_id == device_id)
            ).rowcount,
            "dead_letters": connection.execute(
                delete(DEAD_LETTERS).where(_quoting(connection, device_id))
            ).rowcount,
            "coupons_anonymised": connection.execute(
                update(COUPONS).where(c.device_id == device_id).values(device_id="", token="")
            ).rowcount,
            "commands_anonymised": connection.execute(
                update(COMMANDS).where(COMMANDS.c.device_id == device_id).values(device_id="")
            ).rowcount,
        }
        connection.execute(
            insert(ERASURES).values(
                device_hash=device_hash(device_id),
                erased_at=now,
                erased_by=by.strip()[:120],
                removed=json.dumps(removed, sort_keys=True),
            )
        )
    return removed


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _rows(connection: Connection, table: Table, where: ColumnElement[bool]) -> list[dict[str, Any]]:
    keys = list(table.primary_key.columns)
    return [
        {name: _plain(value) for name, value in row._mapping.items()}
        for row in connection.execute(select(table).where(where).order_by(*keys))
    ]


def export_device(engine: Engine, device_id: str, now: datetime) -> dict[str, Any]:
    """Everything held for `device_id`, as JSON-ready data, table by table."""
    check_device_id(device_id)
    with engine.connect() as connection:
        coupons = _rows(connection, COUPONS, COUPONS.c.device_id == device_id)
        ids = [row["coupon_id"] for row in coupons]
        days = _rows(connection, SITE_DAYS, SITE_DAYS.c.device_id == device_id)
        for row in days:
            row["hours"] = [hour for hour in range(24) if row["hours"] >> hour & 1]
        letters = _rows(connection, DEAD_LETTERS, _quoting(connection, device_id))
        return {
            "device_id": device_id,
            "exported_at": now.isoformat(timespec="seconds"),
            "events": _rows(
                connection,
                EVENTS,
                (EVENTS.c.device_id == device_id)
                | ((EVENTS.c.to_device == device_id) & (EVENTS.c.to_device != "")),
            ),
            "visit_days": days,
            "sites": _rows(connection, SITE_DEVICES, SITE_DEVICES.c.device_id == device_id),
            "coupons": coupons,
            "redemptions": _rows(connection, REDEMPTIONS, REDEMPTIONS.c.coupon_id.in_(ids)),
            "commands": _rows(connection, COMMANDS, COMMANDS.c.device_id == device_id),
            "dead_letters": letters,
            "erasures": _rows(
                connection, ERASURES, ERASURES.c.device_hash == device_hash(device_id)
            ),
            "not_held": "hourly counts (site_hours) count devices without naming them",
        }
