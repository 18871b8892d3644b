"""`loopspot-cloud` commands for privacy (retention, erasure, export) and sites' analytics rules."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cloud.db import make_engine
from cloud.errors import CloudError
from cloud.settings import CloudSettings

Add = Callable[..., argparse.ArgumentParser]
Handler = Callable[[CloudSettings, Any], dict[str, Any]]


def _seconds(text: str) -> float:
    from cloud.cli import duration

    return duration(text).total_seconds()


def add_parsers(add: Add, commands: Any) -> None:
    """Add the privacy and analytics commands to the `loopspot-cloud` parser."""
    privacy = add("privacy", "retention, erasure and export of a device's data")
    actions = privacy.add_subparsers(dest="action", required=True)
    retention = add("retention", "delete what is older than the retention settings", actions)
    retention.add_argument("--dry-run", action="store_true", help="count only, change nothing")
    erase = add("erase", "erase what is held for a device_id (recorded)", actions)
    erase.add_argument("device_id")
    erase.add_argument("--by", default="operator", help="who asked (kept with the record)")
    export = add("export", "everything held for a device_id, as JSON", actions)
    export.add_argument("device_id")
    analytics = add("analytics", "a site's visitor analytics").add_subparsers(
        dest="action", required=True
    )
    rules = add("rules", "show or change a site's time zone and passer-by threshold", analytics)
    rules.add_argument("site_id", type=int)
    rules.add_argument("--timezone", help="IANA zone of the shop, e.g. Asia/Shanghai")
    rules.add_argument(
        "--passer-by", type=_seconds, help="a visit shorter than this is a passer-by, e.g. 5m"
    )


def _retention(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    from cloud.privacy import Retention, apply_retention

    engine = make_engine(settings.database_url)
    try:
        done = apply_retention(
            engine, Retention.of(settings), datetime.now(UTC), dry_run=args.dry_run
        )
    finally:
        engine.dispose()
    return {("would remove " if args.dry_run else "removed ") + name: n for name, n in done.items()}


def _erase(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    from cloud.privacy import erase_device

    engine = make_engine(settings.database_url)
    try:
        return erase_device(engine, args.device_id, args.by, datetime.now(UTC))
    finally:
        engine.dispose()


def _export(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    from cloud.privacy import export_device

    engine = make_engine(settings.database_url)
    try:
        held = export_device(engine, args.device_id, datetime.now(UTC))
    finally:
        engine.dispose()
    print(json.dumps(held, indent=2, sort_keys=True))  # always JSON: it is the export
    return {}


def _rules(settings: CloudSettings, args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy import select

    from cloud.models import Site
    from cloud.rollup_store import current_rules, set_rules
    from cloud.rollups import RulesError

    now = time.time()
    engine = make_engine(settings.database_url)
    try:
        with engine.begin() as connection:
            if connection.scalar(select(Site.id).where(Site.id == args.site_id)) is None:
                raise CloudError(
                    f"site_id: no site {args.site_id}; `loopspot-cloud sites` lists them"
                )
            rules = current_rules(connection, args.site_id, now)
            if args.timezone is not None or args.passer_by is not None:
                try:
                    rules = set_rules(
                        connection,
                        args.site_id,
                        now,
                        args.timezone or rules.timezone,
                        args.passer_by or rules.passer_by_seconds,
                    )
                except RulesError as exc:
                    raise CloudError(str(exc)) from None
    finally:
        engine.dispose()
    return {
        "site_id": args.site_id,
        "timezone": rules.timezone,
        "passer_by_seconds": rules.passer_by_seconds,
        "valid_from": datetime.fromtimestamp(rules.valid_from, UTC).isoformat(timespec="seconds"),
    }


COMMANDS: dict[tuple[str, str | None], Handler] = {
    ("privacy", "retention"): _retention,
    ("privacy", "erase"): _erase,
    ("privacy", "export"): _export,
    ("analytics", "rules"): _rules,
}
