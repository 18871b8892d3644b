"""`make demo`: a shop router running the agent, two phones and the internet, in namespaces."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

from lab import addresses as A
from lab.relay import serve_relay
from lab.router import RouterAgent
from lab.topology import Lab, cleanup_stale, require_root

PIDFILE = Path("/run/loopspot-demo.pid")
RELAY_PORT = 8050


def _banner(lab: Lab, agent: RouterAgent, relay_port: int) -> str:
    phone = lab.phones[0]
    run = f"ip netns exec {phone.ns}"
    return f"""
Loopspot demo is running: a shop router (agent + nftables), {len(lab.phones)} phones, the internet.

  Namespaces   router {lab.router}, wan {lab.wan}, phones {", ".join(p.ns for p in lab.phones)}
  Portal       {agent.portal}/portal (inside the lab)

Be the phone from your browser on this machine:
  open http://127.0.0.1:{relay_port}/portal      (the router sees {phone.mac}, {phone.ip})

Or from the phone's shell:
  {run} curl -si http://captive.apple.com/hotspot-detect.html   # 302 to the portal
  {run} curl -s  http://{A.WEB_IP}/                             # captive: redirected
  {run} curl -sk https://{A.WEB_IP}/ ; echo $?                   # captive: TCP reset
  {run} curl -s  {agent.portal}/api/captive                     # RFC 8908 state
  python -m agent.cli --config {agent.config} grant {phone.mac}   # staff lets it through
  python -m agent.cli --config {agent.config} clients
  ip netns exec {lab.router} nft list table inet loopspot

Agent log: {agent.log}
Stop: Ctrl-C here, or `make demo-stop` from another shell.
"""


async def _serve(lab: Lab, agent: RouterAgent, relay_port: int) -> None:
    relay = await serve_relay(lab.phones[0].ns, (A.ROUTER_LAN_IP, 2050), relay_port)
    print(_banner(lab, agent, relay_port), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        relay.close()


def main(argv: list[str] | None = None) -> int:
    """Run the demo until interrupted, or stop a running one with --stop."""
    parser = argparse.ArgumentParser(prog="python -m lab.demo")
    parser.add_argument("--stop", action="store_true", help="stop a running demo")
    parser.add_argument("--phones", type=int, default=2)
    parser.add_argument(
        "--relay-port",
        type=int,
        default=RELAY_PORT,
        help="loopback port that reaches the portal as the first phone",
    )
    args = parser.parse_args(argv)
    require_root()
    if args.stop:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            os.kill(int(PIDFILE.read_text()), signal.SIGTERM)
            print("demo stopped")
        return 0
    cleanup_stale()
    PIDFILE.write_text(str(os.getpid()))
    try:
        with Lab.create(phones=args.phones, wan_services=True) as lab:
            agent = RouterAgent(lab)
            agent.start()
            asyncio.run(_serve(lab, agent, args.relay_port))
            agent.stop()
    finally:
        PIDFILE.unlink(missing_ok=True)
    print("lab removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
