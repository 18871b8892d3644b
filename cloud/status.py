"""Router status keeping in SQL: the newest status wins, last_seen, and config/command acks.

The rows come from cloud.ingest_core.plan_batch; every function here runs inside the
caller's transaction and is safe to repeat, so a redelivered message changes nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    DateTime,
    Float,
    Integer,
    String,
    Table,
    bindparam,
    cast,
    func,
    or_,
    select,
    update,
)

from cloud.models import RETIRED, Base

LAST_SEEN_RESOLUTION = 1.0  # seconds; a fresher last_seen is left alone (less row locking)
ROUTERS: Table = Base.metadata.tables["routers"]
CONFIGS: Table = Base.metadata.tables["router_configs"]
COMMANDS: Table = Base.metadata.tables["commands"]
_AT = DateTime(timezone=True)


@dataclass(frozen=True, slots=True)
class Will:
    """A router's Last Will: the boot and the connection it was set on (None: not said)."""

    boot_id: str | None
    connected_at: float | None


# Bound names differ from column names: SQLAlchemy reserves those for SET clauses.
_r = ROUTERS.c
_APPLY_STATUS = (
    update(ROUTERS)
    .where(
        _r.id == bindparam("b_id"),
        _r.state != RETIRED,
        # Equal counts as newer: a Last Will carries the time of the status it follows.
        or_(_r.status_at.is_(None), _r.status_at <= bindparam("b_status_at")),
    )
    .values(
        state=bindparam("b_state"),
        status_at=bindparam("b_status_at"),
        last_seen=func.coalesce(bindparam("b_last_seen", type_=_AT), _r.last_seen),
        boot_id=func.coalesce(bindparam("b_boot_id", type_=String()), _r.boot_id),
        agent_version=func.coalesce(bindparam("b_agent_version", type_=String()), _r.agent_version),
        clients=bindparam("b_clients", type_=Integer()),
        config_version=bindparam("b_config_version", type_=Integer()),
        spool_depth=bindparam("b_spool_depth", type_=Integer()),
        spool_dropped=bindparam("b_spool_dropped"),
        connected_at=bindparam("b_connected_at", type_=Float()),
    )
)
# A will has no time to compare; it stands unless the router has rebooted since, or has
# spoken on a newer connection (agents that do not say when theirs began: always).
_APPLY_WILL = (
    update(ROUTERS)
    .where(
        _r.id == bindparam("b_id"),
        _r.state != RETIRED,
        or_(
            bindparam("b_boot_id", type_=String()).is_(None),
            _r.boot_id.is_(None),
            _r.boot_id == bindparam("b_boot_id", type_=String()),
        ),
        or_(
            # typed in SQL: PostgreSQL cannot tell the type of a NULL parameter on its own
            cast(bindparam("b_connected_at", type_=Float()), Float).is_(None),
            _r.connected_at.is_(None),
            _r.connected_at <= bindparam("b_connected_at", type_=Float()),
        ),
    )
    .values(state="offline")
)
_c = CONFIGS.c
_ACK_CONFIG = (
    update(CONFIGS)
    .where(
        _c.router_id == bindparam("b_rid"),
        _c.version == bindparam("b_version"),
        _c.acked_at.is_(None),  # the first answer stands; a redelivery changes nothing
    )
    .values(acked_at=bindparam("b_at", type_=_AT), ack_error=bindparam("b_error"))
)
_m = COMMANDS.c
_ACK_COMMAND = (
    update(COMMANDS)
    .where(
        _m.id == bindparam("b_cid"),
        _m.router_id == bindparam("b_rid"),  # a router answers only for its own commands
        _m.acked_at.is_(None),
    )
    .values(
        acked_at=bindparam("b_at", type_=_AT),
        ok=bindparam("b_ok"),
        error=bindparam("b_error"),
    )
)


def enrolled(connection: Connection, router_ids: Collection[str]) -> set[str]:
    """Which of `router_ids` have a row in routers and are not retired."""
    if not router_ids:
        return set()
    found = connection.execute(
        select(_r.id).where(_r.id.in_(sorted(router_ids)), _r.state != RETIRED)
    )
    return {row[0] for row in found}


def lock_routers(connection: Connection, router_ids: Collection[str]) -> None:
    """Lock these router rows in id order (PostgreSQL), so concurrent writers cannot deadlock.

    FOR NO KEY UPDATE, the lock an UPDATE of these columns takes anyway: it leaves rows
    that point at a router (a command for it) free to be inserted by another transaction,
    which FOR UPDATE would make wait, in a cycle with that transaction's own locks.
    """
    if router_ids and connection.dialect.name == "postgresql":
        connection.execute(
            select(_r.id)
            .where(_r.id.in_(sorted(router_ids)))
            .order_by(_r.id)
            .with_for_update(key_share=True)
        )


def apply_statuses(
    connection: Connection,
    statuses: Mapping[str, dict[str, Any]],
    wills: Mapping[str, Will] | None = None,
) -> None:
    """Store each router's status unless the stored one is newer (by the router's `at`).

    `wills` are Last Wills without a time: the router goes offline unless the stored status
    comes from another boot or a newer connection. They apply after `statuses`.
    """
    if statuses:
        rows = [
            {"b_id": router_id, **{f"b_{key}": value for key, value in values.items()}}
            for router_id, values in sorted(statuses.items())
        ]
        connection.execute(_APPLY_STATUS, rows)
    if wills:
        connection.execute(
            _APPLY_WILL,
            [
                {"b_id": r, "b_boot_id": will.boot_id, "b_connected_at": will.connected_at}
                for r, will in sorted(wills.items())
            ],
        )


def mark_heard(connection: Connection, router_ids: Collection[str], now: datetime) -> None:
    """Set last_seen to `now` for routers that just sent events, unless it is that fresh already."""
    if router_ids:
        fresh = now - timedelta(seconds=LAST_SEEN_RESOLUTION)
        connection.execute(
            update(ROUTERS)
            .where(
                _r.id.in_(sorted(router_ids)),
                or_(_r.last_seen.is_(None), _r.last_seen < fresh),
            )
            .values(last_seen=now)
        )


def mark_acks(
    connection: Connection,
    config_acks: Sequence[dict[str, Any]],
    command_acks: Sequence[dict[str, Any]],
    now: datetime,
) -> None:
    """Record routers' answers to configs (by version) and commands (by id)."""
    if config_acks:
        connection.execute(
            _ACK_CONFIG,
            [
                {"b_rid": a["rid"], "b_version": a["version"], "b_at": now, "b_error": a["error"]}
                for a in config_acks
            ],
        )
    if command_acks:
        connection.execute(
            _ACK_COMMAND,
            [
                {
                    "b_cid": a["cid"],
                    "b_rid": a["rid"],
                    "b_at": now,
                    "b_ok": a["ok"],
                    "b_error": a["error"],
                }
                for a in command_acks
            ],
        )
