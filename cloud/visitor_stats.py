"""What the visitor pages show, read from the rollups (never from raw events).

Every function takes the sites (one, or a merchant's: merchant_sites()) and an inclusive
range of the sites' local days, and returns plain rows. Merchants see counts under
rollups.FEWER_THAN as "<5" (the default); operators pass `exact=True`. A merchant's
figure is the sum of its sites' (a device at two of its shops counts at each).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import date
from typing import Any

from sqlalchemy import Connection, Table, func, select

from cloud import rollups
from cloud.models import Base

HOURS: Table = Base.metadata.tables["site_hours"]
TERMS: Table = Base.metadata.tables["site_terms"]
SITES: Table = Base.metadata.tables["sites"]

VISITORS = ("visitors",)
NEW_RETURNING = ("new_visitors", "returning_visitors")
STAYS = ("stays", "passers_by")
DWELL = (*(name for _, name in rollups.DWELL_BANDS), "dwell_seconds")
SESSIONS = ("sessions", "sessions_ended", "session_bytes", "session_seconds")
TERMS_ACCEPTED = ("terms_accepted", "portal_views")


def merchant_sites(connection: Connection, merchant_id: int) -> list[int]:
    """The ids of a merchant's sites."""
    s = SITES.c
    return list(connection.scalars(select(s.id).where(s.merchant_id == merchant_id).order_by(s.id)))


def _sums(
    connection: Connection,
    site_ids: Collection[int],
    first_day: date,
    last_day: date,
    columns: Sequence[str],
    by_hour: bool,
) -> list[dict[str, Any]]:
    h = HOURS.c
    keys = [h.day, h.hour] if by_hour else [h.day]
    rows = connection.execute(
        select(*keys, *(func.sum(h[name]).label(name) for name in columns))
        .where(h.site_id.in_(sorted(site_ids)), h.day >= first_day, h.day <= last_day)
        .group_by(*keys)
        .order_by(*keys)
    )
    made = []
    for row in rows:
        item: dict[str, Any] = {"day": row.day.isoformat()}
        if by_hour:
            item["hour"] = row.hour
        for name in columns:
            value = getattr(row, name) or 0
            item[name] = round(float(value), 3) if name.endswith("_seconds") else int(value)
        made.append(item)
    return made


def _shown(rows: list[dict[str, Any]], exact: bool) -> list[dict[str, Any]]:
    return rows if exact else [rollups.mask(row) for row in rows]


def visitors_by_hour(
    connection: Connection,
    site_ids: Collection[int],
    first_day: date,
    last_day: date,
    exact: bool = False,
) -> list[dict[str, Any]]:
    """Per local day and hour: distinct devices present, and new and returning ones."""
    rows = _sums(connection, site_ids, first_day, last_day, VISITORS + NEW_RETURNING, True)
    return _shown(rows, exact)


def visitors_by_day(
    connection: Connection,
    site_ids: Collection[int],
    first_day: date,
    last_day: date,
    exact: bool = False,
) -> list[dict[str, Any]]:
    """Per local day: distinct devices (new plus returning, each counted once a day)."""
    rows = [
        {"day": r["day"], "visitors": r["new_visitors"] + r["returning_visitors"], **r}
        for r in _sums(connection, site_ids, first_day, last_day, NEW_RETURNING, False)
    ]
    return _shown(rows, exact)


def new_and_returning(
    connection: Connection,
    site_ids: Collection[int],
    first_day: date,
    last_day: date,
    exact: bool = False,
) -> list[dict[str, Any]]:
    """Per local day: devices there for the first time, and those back from an earlier day."""
    return _shown(_sums(connection, site_ids, first_day, last_day, NEW_RETURNING, False), exact)


def visitors_and_passers_by(
    connection: Connection,
    site_ids: Collection[int],
    first_day: date,
    last_day: date,
    exact: bool = False,
    by_hour: bool = False,
) -> list[dict[str, Any]]:
    """Per local day (or hour): visits that stayed the site's threshold (`stays`) and not."""
    return _shown(_sums(connection, site_ids, first_day, last_day, STAYS, by_hour), exact)


def dwell_bands(
    connection: Connection,
    site_ids: Collection[int],
    first_day: date,
    last_day: date,
    exact: bool = False,
) -> list[dict[str, Any]]:
    """Per local day: visits by how long they lasted, and their total seconds."""
    columns = (*STAYS, *DWELL)
    return _shown(_sums(connection, site_ids, first_day, last_day, columns, False), exact)


def sessions_and_data(
    connection: Connection,
    site_ids: Collection[int],
    first_day: date,
    last_day: date,
    exact: bool = False,
    by_hour: bool = False,
) -> list[dict[str, Any]]:
    """Per local day (or hour): sessions started; sessions ended, their bytes and seconds."""
    return _shown(_sums(connection, site_ids, first_day, last_day, SESSIONS, by_hour), exact)


def terms_acceptances(
    connection: Connection,
    site_ids: Collection[int],
    first_day: date,
    last_day: date,
    exact: bool = False,
) -> list[dict[str, Any]]:
    """Per local day: terms accepted, and portal pages shown."""
    return _shown(_sums(connection, site_ids, first_day, last_day, TERMS_ACCEPTED, False), exact)


def terms_history(
    connection: Connection, site_ids: Collection[int], exact: bool = False
) -> list[dict[str, Any]]:
    """Each terms version the sites' shoppers accepted: from when to when (router time, Unix
    s), how often (under FEWER_THAN masked unless `exact`)."""
    t = TERMS.c
    rows = connection.execute(
        select(t.site_id, t.terms_version, t.first_at, t.last_at, t.acceptances)
        .where(t.site_id.in_(sorted(site_ids)))
        .order_by(t.site_id, t.first_at, t.terms_version)
    )
    made = [
        {
            "site_id": row.site_id,
            "terms_version": row.terms_version,
            "first_at": row.first_at,
            "last_at": row.last_at,
            "acceptances": row.acceptances,
        }
        for row in rows
    ]
    if not exact:
        for item in made:
            if 0 < item["acceptances"] < rollups.FEWER_THAN:
                item["acceptances"] = rollups.MASKED
    return made
