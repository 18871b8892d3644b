"""`make demo`: a shop router running the agent, two phones and the internet, in namespaces.

Beside it the cloud, with a coupon campaign in a closed loop (Lotus Spa's coupon handed out
at the demo shop), and a simulator playing a day of 20 more routers of the same alliance
through the real MQTT path, so the cloud's numbers fill up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from cloud.db import migrate
from lab import addresses as A
from lab.cloud import CloudStack
from lab.errors import ServiceError
from lab.polling import wait_until
from lab.relay import serve_relay
from lab.router import RouterAgent
from lab.sim_fleet import ALLIANCE
from lab.simulator import Simulator
from lab.topology import Lab, cleanup_stale, require_root

PIDFILE = Path("/run/loopspot-demo.pid")
RELAY_PORT = 8050
DASHBOARD_PORT = 8080
DEMO_PASSWORD = "loopspot-demo"  # every demo login's; the demo's cloud lives in a temp folder
CHANNEL_AGENT = "Riverside Partners"
# (email, role, tenant option, tenant): one login a role, all in the demo's alliance
LOGINS = (
    ("operator@demo.loopspot", "operator", "", ""),
    ("agent@demo.loopspot", "channel_agent", "--channel-agent", CHANNEL_AGENT),
    ("owner@demo.loopspot", "merchant_owner", "--merchant", "Demo Bistro"),
    ("staff@demo.loopspot", "merchant_staff", "--merchant", "Demo Bistro"),
)
SHOP, PARTNER = "Demo Bistro", "Lotus Spa"  # the partner is one of the simulator's merchants
STAFF_PIN = "2468"
SIMULATED_ROUTERS = 20
DAY = 86400


def _banner(
    lab: Lab,
    agent: RouterAgent,
    cloud: CloudStack,
    router_id: str,
    relay_port: int,
    simulated: int,
    dashboard: str,
) -> str:
    phone = lab.phones[0]
    run = f"ip netns exec {phone.ns}"
    ctl = f"python -m cloud.cli --config {cloud.config_file}"
    logins = "\n".join(f"  {role:<15} {email}" for email, role, _, _ in LOGINS)
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

Coupons: accept on the portal and the "you're online" page shows a {PARTNER} coupon, given
at {SHOP} for its partner (the closed loop). Then:
  open http://127.0.0.1:{relay_port}/portal/wallet   # the wallet, short codes, QR codes
  open http://127.0.0.1:{relay_port}/staff           # the staff page, PIN {STAFF_PIN}
  {ctl} campaign list
  {ctl} flows --alliance "{ALLIANCE}"
The simulator plays a day of {simulated} more routers of "{ALLIANCE}":
  {ctl} routers   # all of them

The dashboard: open {dashboard}/login   (every password: {DEMO_PASSWORD})
{logins}
The fleet page updates live as the simulated routers come and go.

Agent log: {agent.log}   Cloud logs: {cloud.workdir}
Stop: Ctrl-C here, or `make demo-stop` from another shell.
"""


async def _simulate(simulator: Simulator) -> None:
    """A day of the simulated fleet; its routers then stay online until the demo stops."""
    try:
        await simulator.start()
        await simulator.play()
    except Exception as error:  # the demo's own shop goes on without the simulated ones
        print(f"warning: the simulated fleet stopped: {error}", file=sys.stderr, flush=True)


async def _serve(
    lab: Lab,
    agent: RouterAgent,
    cloud: CloudStack,
    router_id: str,
    relay_port: int,
    simulated: int,
    dashboard: str,
) -> None:
    relay = await serve_relay(lab.phones[0].ns, (A.ROUTER_LAN_IP, 2050), relay_port)
    simulator = Simulator(
        cloud.settings, cloud.workdir / "simulator", routers=simulated, connect_host="127.0.0.1"
    )
    fleet = asyncio.create_task(_simulate(simulator), name="demo-simulator") if simulated else None
    print(_banner(lab, agent, cloud, router_id, relay_port, simulated, dashboard), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        relay.close()
        if fleet is not None:
            fleet.cancel()
            await asyncio.gather(fleet, return_exceptions=True)
            await simulator.stop()


def _start_shop(lab: Lab) -> tuple[CloudStack, RouterAgent, str]:
    """The cloud on SQLite, and the lab router enrolled with a claim code and running."""
    workdir = Path(tempfile.mkdtemp(prefix="loopspot-demo-cloud-"))
    url = f"sqlite:///{workdir}/cloud.db"
    migrate(url)
    cloud = CloudStack(lab, url, workdir).start(workers=1)
    cloud.wait_subscribed()
    cloud.cli("merchant", "create", SHOP, "--alliance", ALLIANCE)
    router_id, code = cloud.claim(SHOP, "Main Street")
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
    _start_campaign(cloud)
    return cloud, agent, router_id


def _start_campaign(cloud: CloudStack) -> None:
    """Lotus Spa's coupon, handed out at the demo shop, which accepts; plans pushed."""
    with contextlib.suppress(ServiceError):  # the simulator may have made the spa already
        cloud.cli("merchant", "create", PARTNER, "--alliance", ALLIANCE)
    now = int(time.time())
    cloud.cli(
        "campaign",
        "create",
        "--merchant",
        PARTNER,
        "--title-en",
        "Free foot massage",
        "--title-zh",
        "免费足底按摩",
        "--terms-en",
        "One per visit, weekdays.",
        "--terms-zh",
        "每次到店限用一张，仅限工作日。",  # noqa: RUF001 -- Chinese punctuation
        "--starts-at",
        str(now - DAY),
        "--ends-at",
        str(now + 30 * DAY),
        "--budget",
        "500",
        "--reach",
        "partners",
    )
    cloud.cli("partner", "propose", "--merchant", PARTNER, "--partner", SHOP)
    cloud.cli("partner", "accept", "--merchant", PARTNER, "--partner", SHOP)
    cloud.cli("staff-pin", "set", "--merchant", SHOP, STAFF_PIN)
    cloud.cli("coupons", "push")


def _start_dashboard(cloud: CloudStack, port: int) -> str:
    """`loopspot-cloud serve` on loopback and a login for each role; the dashboard's URL."""
    os.environ["LOOPSPOT_NEW_PASSWORD"] = DEMO_PASSWORD
    try:
        for email, role, option, tenant in LOGINS:
            cloud.cli(
                "user", "create", email, "--role", role, *([option, tenant] if option else [])
            )
    finally:
        os.environ.pop("LOOPSPOT_NEW_PASSWORD", None)
    cloud.cli("channel-agent", "assign", CHANNEL_AGENT, "--merchant", SHOP)
    cloud.start_web(port)
    return f"http://127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> int:
    """Run the demo until interrupted, or stop a running one with --stop."""
    parser = argparse.ArgumentParser(prog="python -m lab.demo")
    parser.add_argument("--stop", action="store_true", help="stop a running demo")
    parser.add_argument("--phones", type=int, default=2)
    parser.add_argument(
        "--dashboard-port", type=int, default=DASHBOARD_PORT, help="the dashboard's loopback port"
    )
    parser.add_argument(
        "--simulated",
        type=int,
        default=SIMULATED_ROUTERS,
        help="routers the simulator plays beside the demo shop (0: none)",
    )
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
                dashboard = _start_dashboard(cloud, args.dashboard_port)
                asyncio.run(
                    _serve(lab, agent, cloud, router_id, args.relay_port, args.simulated, dashboard)
                )
            finally:
                agent.stop()
                cloud.close()
    finally:
        PIDFILE.unlink(missing_ok=True)
    print("lab removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
