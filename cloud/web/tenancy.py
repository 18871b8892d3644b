"""The one place where a caller's tenant limits what any query can see.

A Scope is built from the user once per request. `Scope.limit` adds the tenant filter to a
select on any table with a merchant_id, site_id or router_id column (or on merchants,
sites and routers themselves), so a handler never writes that WHERE clause itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, false, select
from sqlalchemy.orm import Session

from cloud.account_models import (
    CHANNEL_AGENT,
    MERCHANT_OWNER,
    MERCHANT_STAFF,
    OPERATOR,
    AgentMerchant,
    User,
)
from cloud.models import Merchant, Router, Site

S = TypeVar("S", bound=Select[*tuple[Any, ...]])


@dataclass(frozen=True, slots=True)
class Scope:
    """What one caller may see: every merchant (operators) or a fixed set of merchant ids."""

    role: str
    user_id: int | None
    merchant_ids: frozenset[int] | None  # None: the whole fleet

    @property
    def whole_fleet(self) -> bool:
        """Whether the caller sees every tenant (an operator)."""
        return self.merchant_ids is None

    def _ids(self) -> list[int]:
        return sorted(self.merchant_ids or ())

    def site_ids(self) -> Select[Any]:
        """A subquery of the site ids the caller may see."""
        return select(Site.id).where(Site.merchant_id.in_(self._ids()))

    def router_ids(self) -> Select[Any]:
        """A subquery of the router ids the caller may see."""
        return (
            select(Router.id)
            .join(Site, Router.site_id == Site.id)
            .where(Site.merchant_id.in_(self._ids()))
        )

    def limit(self, statement: S, table: Any) -> S:
        """`statement` filtered to the caller's tenants on `table` (a model or Table)."""
        if self.merchant_ids is None:
            return statement
        found = getattr(table, "__table__", table)
        columns, name = found.c, found.name
        if name == "merchants":
            return statement.where(columns["id"].in_(self._ids()))
        if name == "sites":
            return statement.where(columns["id"].in_(self.site_ids()))
        if name == "routers":
            return statement.where(columns["id"].in_(self.router_ids()))
        if "merchant_id" in columns:
            return statement.where(columns["merchant_id"].in_(self._ids()))
        if "site_id" in columns:
            return statement.where(columns["site_id"].in_(self.site_ids()))
        if "router_id" in columns:
            return statement.where(columns["router_id"].in_(self.router_ids()))
        return statement.where(false())  # a table with no tenant: nothing, never everything

    def sees_router(self, session: Session, router_id: str) -> bool:
        """Whether the router exists and is the caller's."""
        found = session.scalar(self.limit(select(Router.id).where(Router.id == router_id), Router))
        return found is not None


OPERATOR_SCOPE = Scope(role=OPERATOR, user_id=None, merchant_ids=None)


def scope_of(session: Session, user: User) -> Scope:
    """The Scope of a logged-in user, from their role and tenant."""
    if user.role == OPERATOR:
        return Scope(role=OPERATOR, user_id=user.id, merchant_ids=None)
    if user.role == CHANNEL_AGENT:
        ids = session.scalars(
            select(AgentMerchant.merchant_id).where(
                AgentMerchant.channel_agent_id == user.channel_agent_id
            )
        )
        return Scope(role=user.role, user_id=user.id, merchant_ids=frozenset(ids))
    if user.role in (MERCHANT_OWNER, MERCHANT_STAFF) and user.merchant_id is not None:
        return Scope(role=user.role, user_id=user.id, merchant_ids=frozenset({user.merchant_id}))
    return Scope(role=user.role, user_id=user.id, merchant_ids=frozenset())


def merchants_query(scope: Scope) -> Select[Any]:
    """The merchants the caller may see, by name."""
    return scope.limit(select(Merchant).order_by(Merchant.name), Merchant)
