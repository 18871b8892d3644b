"""The gate's clients as `nft -j list set` shows them: nft's own view, to hold the agent's to."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from agent.ruleset import CLIENTS_SET, DOWNLOADS_SET, TABLE
from lab import netns

# (mac, ip) -> (seconds left or None, bytes up, bytes down)
Listed = dict[tuple[str, str], tuple[int | None, int, int]]


def _elements(name: str, ns: str | None) -> list[dict[str, Any]]:
    argv = ("nft", "-j", "list", "set", *TABLE.split(), name)
    if ns is None:
        shown = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    else:
        shown = netns.run(ns, *argv).stdout
    sets = [item["set"] for item in json.loads(shown)["nftables"] if "set" in item]
    return [e["elem"] for e in sets[0].get("elem", [])]


def listed_clients(ns: str | None = None) -> Listed:
    """Every client in the gate's sets with its counters, in namespace `ns` (None: this one)."""
    downloads = {e["val"]: e["counter"]["bytes"] for e in _elements(DOWNLOADS_SET, ns)}
    listed: Listed = {}
    for elem in _elements(CLIENTS_SET, ns):
        mac, ip = elem["val"]["concat"]
        listed[(mac, ip)] = (elem.get("expires"), elem["counter"]["bytes"], downloads.get(ip, 0))
    return listed
