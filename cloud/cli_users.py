"""`loopspot-cloud` commands for dashboard accounts: users, their API tokens, channel agents."""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud import accounts
from cloud.account_models import ROLES, User
from cloud.db import make_engine, sessions
from cloud.enrol_fleet import merchant_named
from cloud.settings import CloudSettings

Add = Callable[..., argparse.ArgumentParser]
Handler = Callable[[CloudSettings, Any], dict[str, Any]]
PASSWORD_ENV = "LOOPSPOT_NEW_PASSWORD"


def add_parsers(add: Add) -> None:
    """Add the account commands to the `loopspot-cloud` parser."""
    user = add("user", "dashboard users").add_subparsers(dest="action", required=True)
    create = add(
        "create",
        "add a dashboard user (password: $LOOPSPOT_NEW_PASSWORD, a prompt, or --generate-password)",
        user,
    )
    create.add_argument("email")
    create.add_argument("--role", required=True, choices=ROLES)
    tenant = create.add_mutually_exclusive_group()
    tenant.add_argument("--merchant", help="for merchant_owner and merchant_staff")
    tenant.add_argument("--channel-agent", help="for channel_agent (created if new)")
    create.add_argument("--generate-password", action="store_true", help="print a random one")
    token = add("token", "issue a user an API token for scripts (shown once)", user)
    token.add_argument("email")
    token.add_argument("--name", default="", help="what the token is for")
    agent = add("channel-agent", "channel agents").add_subparsers(dest="action", required=True)
    assign = add("assign", "record that a channel agent brought a merchant in", agent)
    assign.add_argument("name")
    assign.add_argument("--merchant", required=True)


@contextmanager
def _transaction(settings: CloudSettings) -> Iterator[Session]:
    engine = make_engine(settings.database_url)
    try:
        with sessions(engine)() as session, session.begin():
            yield session
    finally:
        engine.dispose()


def _password(args: argparse.Namespace) -> tuple[str, bool]:
    if args.generate_password:
        return secrets.token_urlsafe(12), True
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV], False
    return getpass.getpass("password for the new user: "), False


def _user_create(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    password, generated = _password(args)
    with _transaction(settings) as session:
        user = accounts.create_user(
            session, args.email, args.role, password, args.merchant, args.channel_agent
        )
        result: dict[str, Any] = {"user_id": user.id, "email": user.email, "role": user.role}
    if generated:
        result["password"] = password
    return result


def _user_token(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    with _transaction(settings) as session:
        user = session.scalar(select(User).where(User.email == args.email.strip().lower()))
        if user is None:
            raise accounts.AccountError(f"email: no user {args.email!r}")
        token = accounts.issue_api_token(session, user, args.name, datetime.now(UTC))
    return {"email": args.email, "token": token}


def _agent_assign(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    with _transaction(settings) as session:
        agent = accounts.channel_agent_named(session, args.name, create=True)
        merchant = merchant_named(session, args.merchant)
        accounts.assign_merchant(session, agent, merchant.id)
    return {"channel_agent": args.name, "merchant": args.merchant}


COMMANDS: dict[tuple[str, str | None], Handler] = {
    ("user", "create"): _user_create,
    ("user", "token"): _user_token,
    ("channel-agent", "assign"): _agent_assign,
}
