"""`make demo` starts a working shop and tells the newcomer where to look."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest

from lab import netns
from lab.freeport import free_port
from lab.polling import wait_until

pytestmark = pytest.mark.lab


SIMULATED = 3  # simulated routers beside the demo shop (the demo plays 20 by default)


def cloud_cli(config: str, *argv: str) -> dict[str, Any]:
    """`loopspot-cloud --config CONFIG --json ARGV`, as the banner says to run it."""
    done = subprocess.run(
        [sys.executable, "-m", "cloud.cli", "--config", config, "--json", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def routers_online(config: str) -> list[str]:
    return [
        r["router_id"] for r in cloud_cli(config, "routers")["routers"] if r["state"] == "online"
    ]


def test_demo_runs_shop_and_cloud_prints_where_to_look_and_cleans_up() -> None:
    port, dashboard_port = free_port(), free_port()
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lab.demo",
            "--relay-port",
            str(port),
            "--simulated",
            str(SIMULATED),
            "--dashboard-port",
            str(dashboard_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    banner = ""
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 60
        while "Stop:" not in banner and time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            banner += line
        assert f"http://127.0.0.1:{port}/portal" in banner, banner
        assert "ip netns exec" in banner and "nft list table inet loopspot" in banner
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/portal", timeout=10) as page:
            body = page.read()
        assert b'id="accept"' in body
        config = re.search(r"--config (\S+cloud\.toml)", banner)
        router = re.search(r"claim code as (r-[a-z0-9]+)", banner)
        assert config and router, banner
        listing = subprocess.run(
            [sys.executable, "-m", "cloud.cli", "--config", config.group(1), "--json", "routers"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        states = {r["router_id"]: r["state"] for r in json.loads(listing.stdout)["routers"]}
        assert states[router.group(1)] == "online"
        assert wait_until(lambda: len(routers_online(config.group(1))) == 1 + SIMULATED, 60)
        campaigns = cloud_cli(config.group(1), "campaign", "list")["campaigns"]
        assert [c["title_en"] for c in campaigns] == ["Free foot massage"]
        assert f"http://127.0.0.1:{dashboard_port}/login" in banner
        for role in ("operator", "channel_agent", "merchant_owner", "merchant_staff"):
            assert role in banner
        with urllib.request.urlopen(
            f"http://127.0.0.1:{dashboard_port}/login", timeout=10
        ) as login:
            assert b'name="password"' in login.read()
        namespaces = [n for n in netns.list_namespaces() if n in banner]
        assert namespaces, "the banner names the lab's namespaces"
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(30)
    assert not set(namespaces) & set(netns.list_namespaces())
