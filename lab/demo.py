"""`make demo`: a shop router running the agent, two phones and the internet, in namespaces."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from cloud.db import migrate
from lab import addresses as A
from lab.cloud import CloudStack
from lab.polling import wait_until
from lab.relay import serve_relay
from lab.router import RouterAgent
from lab.topology import Lab, cleanup_stale, require_root

PIDFILE = Path("/run/loopspot-demo.pid")
RELAY_PORT = 8050


def _banner(
    lab: Lab, agent: RouterAgent, cloud: CloudStack, router_id: str, relay_port: int
) -> str:
    phone = lab.phones[0]
    run = f"ip netns exec {phone.ns}"
    ctl = f"python -m cloud.cli --config {cloud.config_file}"
    return f"""
Loopspot demo is running: a shop router (agent + nftables), {len(lab.phones)} phones, the internet,
and the cloud (SQLite, Mosquitto, enrolment, an ingest worker). The router enrolled
itself with a claim code as {router_id} and reports over MQTT with TLS.

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

The cloud, as an operator sees it (from this shell, in .venv):
  {ctl} routers   # {router_id} online
  sqlite3 {cloud.settings.database_url.split("///", 1)[1]} \\
    "select kind, device_id, at from events order by id desc limit 10"   # no MACs, ever
  {ctl} config push {router_id} --set 'walled_garden_addresses=["{A.WEB_IP}/32"]'
  {ctl} command {router_id} send_status

Agent log: {agent.log}   Cloud logs: {cloud.workdir}
Stop: Ctrl-C here, or `make demo-stop` from another shell.
"""


async def _serve(
    lab: Lab, agent: RouterAgent, cloud: CloudStack, router_id: str, relay_port: int
) -> None:
    relay = await serve_relay(lab.phones[0].ns, (A.ROUTER_LAN_IP, 2050), relay_port)
    print(_banner(lab, agent, cloud, router_id, relay_port), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        relay.close()


def _start_shop(lab: Lab) -> tuple[CloudStack, RouterAgent, str]:
    """The cloud on SQLite, and the lab router enrolled with a claim code and running."""
    workdir = Path(tempfile.mkdtemp(prefix="loopspot-demo-cloud-"))
    url = f"sqlite:///{workdir}/cloud.db"
    migrate(url)
    cloud = CloudStack(lab, url, workdir).start(workers=1)
    router_id, code = cloud.claim("Demo Bistro", "Main Street")
    credentials = lab.workdir / "agent" / "credentials"
    agent = RouterAgent(
        lab,
        sections={
            "cloud": {
                "enabled": "1",
                "tls": "1",
                "credentials_dir": str(credentials),
                "keepalive": "30",
                "status_interval": "60",
            }
        },
    )
    shutil.copy(cloud.ca_file, agent.workdir / "cloud-ca.crt")
    enrolled = agent.ctl(
        "enrol", code, "--url", cloud.enrol_url, "--ca", str(agent.workdir / "cloud-ca.crt")
    )
    if enrolled.returncode != 0:
        cloud.close()
        raise SystemExit(f"enrolment failed: {enrolled.stderr}")
    agent.start()
    online = wait_until(
        lambda: any(
            r["router_id"] == router_id and r["state"] == "online"
            for r in cloud.cli("routers")["routers"]
        ),
        20,
    )
    if not online:
        print("warning: the cloud has not seen the router online yet", file=sys.stderr)
    return cloud, agent, router_id


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
            cloud, agent, router_id = _start_shop(lab)
            try:
                asyncio.run(_serve(lab, agent, cloud, router_id, args.relay_port))
            finally:
                agent.stop()
                cloud.close()
    finally:
        PIDFILE.unlink(missing_ok=True)
    print("lab removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
