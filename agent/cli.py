"""The `loopspot-agent` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from agent.config import load_settings
from agent.control import call
from agent.errors import LoopspotError
from agent.settings import Settings

DEFAULT_CONFIG = Path("/etc/config/loopspot")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loopspot-agent", description=__doc__)
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="UCI config file (default: %(default)s)"
    )
    parser.add_argument("--socket", type=Path, help="control socket (default: from the config)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    # --config/--socket/--json also work after the command: `loopspot-agent run --config F`
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS)
    common.add_argument("--socket", type=Path, default=argparse.SUPPRESS)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the agent", parents=[common])
    run.add_argument("--log-level", default="INFO")
    check = commands.add_parser(
        "config-check", help="validate a config file, start nothing", parents=[common]
    )
    check.add_argument("file", type=Path, nargs="?")
    commands.add_parser("status", help="the running agent's state", parents=[common])
    commands.add_parser("clients", help="the authorized clients", parents=[common])
    grant = commands.add_parser(
        "grant", help="let a device through without the portal", parents=[common]
    )
    grant.add_argument("mac")
    grant.add_argument("--ip", help="its IPv4 address (default: from the neighbour table)")
    revoke = commands.add_parser(
        "revoke", help="end a device's session and cut its connections", parents=[common]
    )
    revoke.add_argument("mac")
    enrol = commands.add_parser(
        "enrol", help="enrol this router in the cloud with a claim code", parents=[common]
    )
    enrol.add_argument("code", help="the one-time claim code, e.g. 7KQ4-M2XD-9PRT")
    enrol.add_argument("--url", required=True, help="the cloud's enrolment URL (https://...)")
    enrol.add_argument("--ca", type=Path, help="the cloud's CA certificate that came with it")
    enrol.add_argument("--force", action="store_true", help="replace an existing identity")
    renew = commands.add_parser(
        "renew", help="renew this router's cloud certificate", parents=[common]
    )
    renew.add_argument(
        "--if-due", action="store_true", help="only within 30 days of its end (the daemon's way)"
    )
    return parser


def _settings(path: Path) -> Settings:
    return load_settings(path) if path.exists() or path != DEFAULT_CONFIG else Settings()


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return
    if "status" in result:
        for key, value in result["status"].items():
            print(f"{key:>16}: {value}")
    elif "clients" in result:
        print(f"{'MAC':<18} {'IP':<15} {'time left':>9} {'bytes used':>12} {'data left':>12}")
        for c in result["clients"]:
            left = "-" if c["seconds_remaining"] is None else f"{c['seconds_remaining']}s"
            data = "-" if c["bytes_remaining"] is None else str(c["bytes_remaining"])
            print(f"{c['mac']:<18} {c['ip']:<15} {left:>9} {c['bytes_used']:>12} {data:>12}")
    else:
        session = result.get("session") or result.get("ended") or {}
        print(f"ok: {session.get('mac', '')} {session.get('ip', '')}".rstrip())


def main(argv: list[str] | None = None) -> int:
    """Run one command; exit 0 on success, 1 when the agent refused, 2 on a bad config."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "config-check":
            settings = load_settings(args.file or args.config)
            if args.json:
                print(json.dumps({"ok": True, "file": str(args.file or args.config)}))
            else:
                print(
                    f"{args.file or args.config}: OK ({len(settings.lan_interfaces)} LAN "
                    f"interface(s), portal {settings.portal_url})"
                )
            return 0
        settings = _settings(args.config)
        if args.command == "enrol":
            from agent.enrol import DEFAULT_CLOUD_CA, enrol_main

            forwarded = [
                args.code,
                "--url",
                args.url,
                "--ca",
                str(args.ca or DEFAULT_CLOUD_CA),
                "--dir",
                str(settings.cloud_credentials_dir),
            ]
            return enrol_main(forwarded + ["--force"] * args.force + ["--json"] * args.json)
        if args.command == "renew":
            from agent.renewal import renewal_main  # may load cryptography: not in the daemon

            return renewal_main(
                settings.cloud_credentials_dir, only_if_due=args.if_due, as_json=args.json
            )
        if args.command == "run":
            from agent.process import prepare_daemon

            prepare_daemon()  # other commands skip it
            from agent.daemon import run

            logging.basicConfig(
                level=args.log_level.upper(),
                format="%(asctime)s %(name)s %(levelname)s %(message)s",
            )
            asyncio.run(run(settings, config_file=args.config if args.config.exists() else None))
            return 0
        request: dict[str, Any] = {"command": args.command}
        if args.command in ("grant", "revoke"):
            request["mac"] = args.mac
        if args.command == "grant" and args.ip:
            request["ip"] = args.ip
        result = call(args.socket or settings.control_socket, request)
    except LoopspotError as exc:
        print(f"loopspot-agent: {exc}", file=sys.stderr)
        return 2
    if not result.get("ok"):
        print(f"loopspot-agent: {result.get('error', 'failed')}", file=sys.stderr)
        if args.json:
            print(json.dumps(result))
        return 1
    _print(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
