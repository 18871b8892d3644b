"""cloud.web.tenancy.Scope: one filter for every kind of table, on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from cloud.account_models import User
from cloud.models import Command, DeadLetter, Event, Merchant, Router, RouterConfig, Site
from cloud.web.tenancy import OPERATOR_SCOPE, Scope, scope_of
from tests.cloud.dashboard_world import World, email


def _count(session: Session, scope: Scope, table: object) -> int:
    statement = scope.limit(select(func.count()).select_from(table), table)  # type: ignore[arg-type]
    return int(session.scalar(statement) or 0)


def _user(session: Session, name: str) -> User:
    return session.scalars(select(User).where(User.email == email(name))).one()


@pytest.mark.parametrize(
    "table",
    [Merchant, Site, Router, Event, RouterConfig, Command, User],
    ids=lambda t: t.__tablename__,
)
def test_each_tenant_sees_its_own_rows_of_every_table(
    engine: Engine, world: World, table: object
) -> None:
    with Session(engine) as session:
        everyone = _count(session, OPERATOR_SCOPE, table)
        a = _count(session, scope_of(session, _user(session, "owner_a")), table)
        b = _count(session, scope_of(session, _user(session, "owner_b")), table)
        agent = _count(session, scope_of(session, _user(session, "agent_a")), table)
    assert a >= 1 and b >= 1 and agent == a
    if table is not User:  # users without a merchant (operators, agents) belong to nobody
        assert a + b == everyone


def test_a_table_without_a_tenant_column_shows_nothing_to_a_tenant(
    engine: Engine, world: World
) -> None:
    with Session(engine) as session, session.begin():
        session.add(DeadLetter(topic="t", payload=b"x", reason="r"))
    with Session(engine) as session:
        assert _count(session, OPERATOR_SCOPE, DeadLetter) == 1
        assert _count(session, scope_of(session, _user(session, "owner_a")), DeadLetter) == 0


def test_a_channel_agent_without_merchants_sees_nothing(engine: Engine, world: World) -> None:
    lonely = Scope(role="channel_agent", user_id=None, merchant_ids=frozenset())
    with Session(engine) as session:
        assert _count(session, lonely, Router) == 0
        assert not lonely.sees_router(session, "ra-1")
        assert OPERATOR_SCOPE.sees_router(session, "ra-1")
