"""The fleet as the dashboard shows it: filtered, paginated rows, one router's history.

Every select goes through the caller's Scope. Pages are keyset-paginated on router id, so no
page ever counts the table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from cloud.account_models import AgentMerchant, ChannelAgent
from cloud.enrol_fleet import utc
from cloud.models import Command, Event, Merchant, Router, RouterConfig, Site
from cloud.web.tenancy import Scope

PAGE_SIZE = 50
MAX_PAGE = 500
HISTORY = 50
COLUMNS = (
    "router_id",
    "merchant",
    "site",
    "city",
    "channel_agent",
    "state",
    "last_seen",
    "agent_version",
    "clients",
    "config_wanted",
    "config_applied",
    "spool_backlog",
    "spool_dropped",
)


@dataclass(frozen=True, slots=True)
class FleetFilter:
    """What the operator narrowed the table to; empty strings mean no filter."""

    city: str = ""
    merchant: str = ""
    channel_agent: str = ""


@dataclass(frozen=True, slots=True)
class FleetRow:
    """One router's line in the fleet table."""

    router_id: str
    merchant_id: int
    merchant: str
    site: str
    city: str
    channel_agent: str
    state: str
    last_seen: str | None
    agent_version: str
    clients: int
    config_wanted: int
    config_applied: int
    spool_backlog: int
    spool_dropped: int

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON-ready values."""
        return asdict(self)


def _stamp(moment: datetime | None) -> str | None:
    return None if moment is None else utc(moment).isoformat(timespec="seconds")


def _wanted() -> Any:
    """A subquery: each router's newest config version (the one it should run)."""
    return (
        select(RouterConfig.router_id, func.max(RouterConfig.version).label("wanted"))
        .group_by(RouterConfig.router_id)
        .subquery()
    )


def _fleet_select(scope: Scope, where: FleetFilter) -> Select[Any]:
    wanted = _wanted()
    statement = (
        select(
            Router,
            Site.name,
            Site.city,
            Merchant.id,
            Merchant.name,
            ChannelAgent.name,
            wanted.c.wanted,
        )
        .join(Site, Router.site_id == Site.id)
        .join(Merchant, Site.merchant_id == Merchant.id)
        .outerjoin(AgentMerchant, AgentMerchant.merchant_id == Merchant.id)
        .outerjoin(ChannelAgent, ChannelAgent.id == AgentMerchant.channel_agent_id)
        .outerjoin(wanted, wanted.c.router_id == Router.id)
    )
    if where.city:
        statement = statement.where(Site.city == where.city)
    if where.merchant:
        statement = statement.where(Merchant.name == where.merchant)
    if where.channel_agent:
        statement = statement.where(ChannelAgent.name == where.channel_agent)
    return scope.limit(statement, Router)


def _row(found: Any) -> FleetRow:
    router, site, city, merchant_id, merchant, agent, wanted = found
    return FleetRow(
        router_id=router.id,
        merchant_id=merchant_id,
        merchant=merchant,
        site=site,
        city=city or "",
        channel_agent=agent or "",
        state=router.state,
        last_seen=_stamp(router.last_seen),
        agent_version=router.agent_version or "",
        clients=router.clients or 0,
        config_wanted=wanted or 0,
        config_applied=router.config_version or 0,
        spool_backlog=router.spool_depth or 0,
        spool_dropped=router.spool_dropped or 0,
    )


def fleet_page(
    session: Session, scope: Scope, where: FleetFilter, after: str = "", size: int = PAGE_SIZE
) -> tuple[list[FleetRow], str | None]:
    """One page of routers after router id `after`, and the cursor of the next page."""
    size = max(1, min(size, MAX_PAGE))
    statement = _fleet_select(scope, where).order_by(Router.id).limit(size + 1)
    if after:
        statement = statement.where(Router.id > after)
    rows = [_row(found) for found in session.execute(statement)]
    more = len(rows) > size
    rows = rows[:size]
    return rows, (rows[-1].router_id if more and rows else None)


def fleet_rows(
    session: Session, scope: Scope, where: FleetFilter, ids: list[str]
) -> list[FleetRow]:
    """The rows of these routers (those the caller may see)."""
    statement = _fleet_select(scope, where).where(Router.id.in_(ids)).order_by(Router.id)
    return [_row(found) for found in session.execute(statement)]


def router_history(session: Session, scope: Scope, router_id: str) -> dict[str, Any] | None:
    """One router's row, recent events, configs and commands; None if not the caller's."""
    rows = fleet_rows(session, scope, FleetFilter(), [router_id])
    if not rows:
        return None
    events = session.scalars(
        select(Event).where(Event.router_id == router_id).order_by(Event.id.desc()).limit(HISTORY)
    )
    configs = session.scalars(
        select(RouterConfig)
        .where(RouterConfig.router_id == router_id)
        .order_by(RouterConfig.version.desc())
        .limit(HISTORY)
    )
    commands = session.scalars(
        select(Command)
        .where(Command.router_id == router_id)
        .order_by(Command.issued_at.desc())
        .limit(HISTORY)
    )
    return {
        "router": rows[0].as_dict(),
        "events": [
            {"at": e.at, "kind": e.kind, "device_id": e.device_id, "reason": e.reason}
            for e in events
        ],
        "configs": [
            {
                "version": c.version,
                "created_at": _stamp(c.created_at),
                "acked_at": _stamp(c.acked_at),
                "error": c.ack_error,
            }
            for c in configs
        ],
        "commands": [
            {
                "id": c.id,
                "action": c.action,
                "issued_at": _stamp(c.issued_at),
                "acked_at": _stamp(c.acked_at),
                "ok": c.ok,
                "error": c.error,
            }
            for c in commands
        ],
    }


def fingerprints(session: Session) -> dict[str, tuple[Any, ...]]:
    """Each router's changeable columns (and newest config), to spot changes between polls."""
    wanted = _wanted()
    statement = select(
        Router.id,
        Router.state,
        Router.last_seen,
        Router.agent_version,
        Router.clients,
        Router.config_version,
        Router.spool_depth,
        Router.spool_dropped,
        wanted.c.wanted,
    ).outerjoin(wanted, wanted.c.router_id == Router.id)
    return {found[0]: tuple(found[1:]) for found in session.execute(statement)}
