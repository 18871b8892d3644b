"""`loopspot-cloud user create` and friends, on real SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from cloud import accounts
from cloud.account_models import AgentMerchant, User
from cloud.cli import main


@pytest.fixture
def env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPSPOT_DATABASE_URL", database_url)
    monkeypatch.setenv("LOOPSPOT_NEW_PASSWORD", "a-good-long-password")


def test_an_operator_creates_users_of_every_role(
    env: None, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["merchant", "create", "tea-house"]) == 0
    assert main(["user", "create", "op@example.com", "--role", "operator"]) == 0
    assert (
        main(
            [
                "user",
                "create",
                "Boss@Example.com",
                "--role",
                "merchant_owner",
                "--merchant",
                "tea-house",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "user",
                "create",
                "agent@example.com",
                "--role",
                "channel_agent",
                "--channel-agent",
                "south",
            ]
        )
        == 0
    )
    assert main(["channel-agent", "assign", "south", "--merchant", "tea-house"]) == 0
    capsys.readouterr()
    assert main(["user", "token", "boss@example.com", "--json"]) == 0
    assert '"token": "lsk_' in capsys.readouterr().out
    with Session(engine) as session:
        boss = session.scalars(select(User).where(User.email == "boss@example.com")).one()
        assert boss.role == "merchant_owner" and boss.merchant_id is not None
        assert accounts.check_password("a-good-long-password", boss.password_hash)
        assert session.scalars(select(AgentMerchant)).one().merchant_id == boss.merchant_id


def test_a_user_without_their_tenant_or_a_weak_password_is_refused(
    env: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["user", "create", "s@example.com", "--role", "merchant_staff"]) == 1
    assert "needs --merchant" in capsys.readouterr().err
    assert (
        main(
            ["user", "create", "s@example.com", "--role", "merchant_staff", "--merchant", "nobody"]
        )
        == 1
    )
    assert "nobody" in capsys.readouterr().err
    monkeypatch.setenv("LOOPSPOT_NEW_PASSWORD", "short")
    assert main(["user", "create", "op@example.com", "--role", "operator"]) == 1
    assert "password: use at least" in capsys.readouterr().err
    assert (
        main(["user", "create", "op@example.com", "--role", "operator", "--generate-password"]) == 0
    )
    assert "password: " in capsys.readouterr().out
