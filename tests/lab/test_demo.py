"""`make demo` starts a working shop and tells the newcomer where to look."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from lab import netns
from lab.freeport import free_port

pytestmark = pytest.mark.lab


def test_demo_runs_shop_and_cloud_prints_where_to_look_and_cleans_up() -> None:
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "lab.demo", "--relay-port", str(port)],
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
        assert states == {router.group(1): "online"}
        namespaces = [n for n in netns.list_namespaces() if n in banner]
        assert namespaces, "the banner names the lab's namespaces"
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(30)
    assert not set(namespaces) & set(netns.list_namespaces())
