"""The `loopspot-cloud` command: set up the cloud, the fleet and claim codes; run services.

Exit codes: 0 done, 1 refused (unknown merchant, duplicate name, ...), 2 bad settings or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from cloud import cli_coupons, cli_privacy, cli_users
from cloud.ca import CertificateAuthority, ca_directory, server_names
from cloud.db import make_engine, migrate, sessions
from cloud.errors import CloudConfigError, CloudError
from cloud.models import Merchant, Site
from cloud.settings import CloudSettings, load_cloud_settings

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration(text: str) -> timedelta:
    """`90s`, `30m`, `24h`, `7d`, `2w` or plain seconds, as a positive timedelta."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", text.lower())
    if not match or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30m, 24h or 7d")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2) or "s"])


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    parser = argparse.ArgumentParser(prog="loopspot-cloud", description=__doc__, parents=[common])
    parser.add_argument("--config", type=Path, help="TOML settings (LOOPSPOT_* variables win)")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str, into: Any = commands) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = into.add_parser(name, help=help_text, parents=[common])
        return sub

    for name, what in (
        ("init", "migrate the database, make the CA and broker config"),
        ("broker-config", "write Mosquitto's config, ACL and password file"),
    ):
        sub = add(name, what)
        sub.add_argument("--bind", default="", help="address of the routers' TLS listener")
    merchant = add("merchant", "merchants").add_subparsers(dest="action", required=True)
    create = add("create", "add a merchant", merchant)
    create.add_argument("name")
    create.add_argument("--alliance", help="join (or found) this alliance; default: its own")
    site = add("site", "sites").add_subparsers(dest="action", required=True)
    create = add("create", "add a site (shop) to a merchant", site)
    create.add_argument("--merchant", required=True)
    create.add_argument("name")
    claim = add("claim", "claim codes").add_subparsers(dest="action", required=True)
    create = add("create", "add a router to a site and print its one-time claim code", claim)
    create.add_argument("--site", type=int, required=True, help="the site's id")
    create.add_argument("--ttl", type=duration, help="validity, e.g. 24h (default: settings)")
    config = add("config", "router configs").add_subparsers(dest="action", required=True)
    push = add("push", "send a router its next config version (retained)", config)
    push.add_argument("router_id")
    push.add_argument(
        "--set",
        dest="changes",
        action="append",
        required=True,
        metavar="FIELD=JSON",
        help="e.g. session_timeout=1800 (repeatable)",
    )
    cert = add("portal-cert", "name a router's HTTPS portal; it gets its certificate over ACME")
    cert.add_argument("router_id")
    command = add("command", "send a router one allow-listed command")
    command.add_argument("router_id")
    command.add_argument("do", choices=["revoke_device", "reload_config", "send_status"])
    command.add_argument("--device", default="", help="device_id, for revoke_device")
    retire = add("retire", "take a router out of the fleet for good")
    retire.add_argument("router_id")
    add("sites", "list merchants' sites with their ids")
    add("routers", "list routers and their state")
    ingest = add("ingest", "run an ingest worker (MQTT to database)")
    ingest.add_argument("--worker-name", help="unique, stable per worker (MQTT client id)")
    add("serve-enrol", "serve router enrolment over HTTPS")
    cli_coupons.add_parsers(add, commands)
    cli_privacy.add_parsers(add, commands)
    cli_users.add_parsers(add)
    return parser


@contextmanager
def _session(settings: CloudSettings) -> Iterator[Session]:
    engine = make_engine(settings.database_url)
    try:
        with sessions(engine)() as session:
            yield session
    finally:
        engine.dispose()


def _stamp(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[str("-" if r[c] is None else r[c]) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _setup(settings: CloudSettings, bind: str, with_db: bool) -> dict[str, Any]:
    from cloud.broker_config import broker_directory, service_password, write_broker_config

    now = datetime.now(UTC)
    if with_db:
        migrate(settings.database_url)
    ca = CertificateAuthority.load_or_create(ca_directory(settings.data_dir), now)
    config = write_broker_config(settings, ca, public_bind=bind, now=now)
    enrol = ca.ensure_server_credentials(
        server_names(settings.enrol_host, settings.public_broker_host),
        settings.data_dir / "enrol",
        now,
    )
    password_file = broker_directory(settings) / "service-password"
    service_password(settings)
    return {
        "ca_certificate": str(ca.certificate_path),
        "broker_config": str(config),
        "enrol_certificate": str(enrol.certificate),
        "service_password": "from settings" if settings.broker_password else str(password_file),
    }


def _merchant_create(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    from cloud.enrol_fleet import create_merchant, ensure_alliance

    with _session(settings) as session:
        merchant = create_merchant(session, args.name, args.alliance)
        alliance = ensure_alliance(session, merchant)
        session.commit()
        return {"merchant_id": merchant.id, "merchant": merchant.name, "alliance": alliance.name}


def _site_create(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    from cloud.enrol_fleet import create_site

    with _session(settings) as session:
        site = create_site(session, args.merchant, args.name)
        session.commit()
        return {"site_id": site.id, "site": site.name, "merchant": args.merchant}


def _claim_create(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    from cloud.enrol_claims import create_claim

    ttl = args.ttl or timedelta(seconds=settings.claim_code_ttl)
    now = datetime.now(UTC)
    with _session(settings) as session:
        router_id, code = create_claim(session, args.site, now, ttl)
        session.commit()
    return {"router_id": router_id, "code": code, "expires_at": _stamp(now + ttl)}


def _sites(settings: CloudSettings, _args: argparse.Namespace) -> dict[str, Any]:
    with _session(settings) as session:
        rows = session.execute(
            select(Site.id, Site.name, Merchant.name)
            .join(Merchant, Site.merchant_id == Merchant.id)
            .order_by(Merchant.name, Site.name)
        )
        return {"sites": [{"id": i, "site": s, "merchant": m} for i, s, m in rows]}


def _routers(settings: CloudSettings, _args: argparse.Namespace) -> dict[str, Any]:
    from cloud.enrol_fleet import list_routers

    with _session(settings) as session:
        listing = list_routers(session, datetime.now(UTC))
    return {
        "routers": [
            {
                "router_id": r.router_id,
                "merchant": r.merchant,
                "site": r.site,
                "state": r.state,
                "enrolled_at": _stamp(r.enrolled_at),
                "last_seen": _stamp(r.last_seen),
                "claim_expires_at": _stamp(r.claim_expires_at),
            }
            for r in listing
        ]
    }


def _changes(items: list[str]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise CloudConfigError(f"--set {item!r}: write FIELD=VALUE, e.g. session_timeout=1800")
        try:
            changes[name.strip()] = json.loads(text)
        except ValueError:
            changes[name.strip()] = text  # a bare word is a string
    return changes


def _config_push(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    from cloud.fleet_push import broker_publisher, latest_config, push_config
    from cloud.portal_cert import PORTAL_FIELDS

    engine = make_engine(settings.database_url)
    try:
        factory = sessions(engine)
        changes = _changes(args.changes)
        # The portal's name is portal-cert's to change: a settings push keeps it.
        previous = latest_config(factory, args.router_id)
        kept = {k: previous[k] for k in PORTAL_FIELDS if k in previous and k not in changes}
        config = push_config(factory, broker_publisher(settings), args.router_id, kept | changes)
    finally:
        engine.dispose()
    return {"router_id": args.router_id, "version": config.version}


def _portal_cert(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    from cloud.acme_dns import txt_publisher
    from cloud.fleet_push import broker_publisher, latest_config, push_config
    from cloud.portal_cert import portal_name, with_portal_name

    name = portal_name(args.router_id, settings.portal_domain)
    txt_publisher(settings.acme_dns, settings.acme_dns_tsig_file)  # serve-enrol needs it too
    engine = make_engine(settings.database_url)
    try:
        factory = sessions(engine)
        previous = latest_config(factory, args.router_id)  # an unknown router stops here
        changes = with_portal_name(previous, name)
        config = push_config(factory, broker_publisher(settings), args.router_id, changes)
    finally:
        engine.dispose()
    # The router makes its key and asks serve-enrol for the certificate (agent.portal.certify).
    return {"router_id": args.router_id, "version": config.version, "portal_name": name}


def _retire(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    from cloud.enrol_fleet import retire_router
    from cloud.revocation import cut_off

    with _session(settings) as session:
        router = retire_router(session, args.router_id)
        session.commit()
        state = router.state
    # After the commit: a retire run again (say, the broker was down) revokes again.
    ca = CertificateAuthority.load(ca_directory(settings.data_dir))
    done = cut_off(settings, ca, args.router_id, datetime.now(UTC))
    return {
        "router_id": args.router_id,
        "state": state,
        "revoked_certificates": len(done.revoked),
        "broker_reload": done.reload,
        "connection_ended": done.session_ended,
    }


def _command(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    from agent.wire import CommandAction
    from cloud.fleet_push import broker_publisher, send_command

    engine = make_engine(settings.database_url)
    try:
        command = send_command(
            sessions(engine),
            broker_publisher(settings),
            args.router_id,
            CommandAction(args.do),
            args.device,
            datetime.now(UTC).timestamp(),
        )
    finally:
        engine.dispose()
    return {"router_id": args.router_id, "command_id": command.id, "action": args.do}


def _ingest(settings: CloudSettings, _args: argparse.Namespace) -> dict[str, Any]:
    from cloud.broker_config import service_password

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_ingest = importlib.import_module("cloud.ingest").run_ingest
    # The broker refuses anonymous services: use the generated password unless one is set.
    outcome = run_ingest(
        replace(settings, broker_password=service_password(settings)), _args.worker_name
    )
    if inspect.isawaitable(outcome):
        asyncio.run(_wait(outcome))
    return {}


async def _wait(awaitable: Any) -> None:
    await awaitable


def _serve_enrol(settings: CloudSettings, _args: argparse.Namespace) -> dict[str, Any]:
    from cloud.enrol import serve_enrol

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    serve_enrol(settings)
    return {}


_COMMANDS: dict[tuple[str, str | None], Callable[[CloudSettings, Any], dict[str, Any]]] = {
    ("init", None): lambda s, a: _setup(s, a.bind, with_db=True),
    ("broker-config", None): lambda s, a: _setup(s, a.bind, with_db=False),
    ("merchant", "create"): _merchant_create,
    ("site", "create"): _site_create,
    ("claim", "create"): _claim_create,
    ("config", "push"): _config_push,
    ("command", None): _command,
    ("portal-cert", None): _portal_cert,
    ("retire", None): _retire,
    ("sites", None): _sites,
    ("routers", None): _routers,
    ("ingest", None): _ingest,
    ("serve-enrol", None): _serve_enrol,
    **cli_coupons.COMMANDS,
    **cli_privacy.COMMANDS,
    **cli_users.COMMANDS,
}


def _show(result: dict[str, Any]) -> None:
    if "routers" in result:
        columns = ["router_id", "merchant", "site", "state", "enrolled_at", "last_seen"]
        print(_table(result["routers"], columns) if result["routers"] else "no routers yet")
    elif "sites" in result:
        print(_table(result["sites"], ["id", "merchant", "site"]) if result["sites"] else "none")
    elif cli_coupons.show(result):
        pass
    elif set(result) & set(cli_coupons.TABLES):
        key = next(k for k in cli_coupons.TABLES if k in result)
        print(_table(result[key], cli_coupons.TABLES[key]) if result[key] else "none")
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # usage errors exit 2, --help 0
        return exc.code if isinstance(exc.code, int) else 2
    try:
        settings = load_cloud_settings(args.config)
        result = _COMMANDS[(args.command, getattr(args, "action", None))](settings, args)
    except CloudConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OperationalError, ProgrammingError) as exc:
        print(f"error: database: {exc.orig}; is it reachable, and did `init` run?", file=sys.stderr)
        return 2
    except IntegrityError as exc:
        print(f"error: refused by the database: {exc.orig}", file=sys.stderr)
        return 1
    except CloudError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if result and getattr(args, "json", False):
        print(json.dumps(result, indent=2, sort_keys=True))
    elif result:
        _show(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
