"""The gate adapter: applies rendered rules through an Nft backend and reads the kernel set."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from agent.clients import Client
from agent.errors import GateError
from agent.gate.nft import Nft
from agent.ruleset import (
    CLIENTS_SET,
    DOWNLOADS_SET,
    TABLE,
    GateSpec,
    Grant,
    render_grant,
    render_revoke,
    render_table,
    render_walled_garden,
)


@dataclass(frozen=True, slots=True)
class KernelClient:
    """What the kernel set holds for one client: time left and bytes both ways."""

    client: Client
    expires_in: int | None
    bytes_up: int
    bytes_down: int

    @property
    def bytes_total(self) -> int:
        """Bytes counted both ways since the element was added."""
        return self.bytes_up + self.bytes_down


class Gate:
    """The agent's table `inet loopspot`; every change is one nft transaction."""

    def __init__(self, nft: Nft, spec: GateSpec) -> None:
        self.nft = nft
        self.spec = spec

    def install(self, grants: Iterable[Grant] = ()) -> None:
        """Replace the whole table atomically, with these clients already let through."""
        self.nft.run(render_table(self.spec, grants))

    def grant(self, grant: Grant, *, replace: bool = False) -> None:
        """Let a client through until its timeout."""
        self.nft.run(render_grant(grant, replace=replace))

    def revoke(self, client: Client) -> None:
        """Stop letting a client through; its open connections are cut by `forget_connections`."""
        self.nft.run(render_revoke(client))

    def set_walled_garden(self, addresses: Iterable[IPv4Network]) -> None:
        """Replace the addresses reachable before authorization."""
        self.nft.run(render_walled_garden(addresses))

    def exists(self) -> bool:
        """True when the table is in the kernel (it survives agent restarts)."""
        try:
            self.nft.list_json(f"list table {TABLE}")
        except GateError:
            return False
        return True

    def read_clients(self) -> dict[Client, KernelClient]:
        """Every authorized client in the kernel set, with its counters."""
        downloads = {str(e["val"]): e for e in self._elements(DOWNLOADS_SET)}
        result: dict[Client, KernelClient] = {}
        for elem in self._elements(CLIENTS_SET):
            mac, ip = elem["val"]["concat"]
            client = Client(str(mac), IPv4Address(ip))
            counter = elem.get("counter") or {}
            down_counter = (downloads.get(str(ip)) or {}).get("counter") or {}
            expires = elem.get("expires")
            result[client] = KernelClient(
                client,
                int(expires) if elem.get("timeout") is not None and expires is not None else None,
                int(counter.get("bytes", 0)),
                int(down_counter.get("bytes", 0)),
            )
        return result

    def _elements(self, name: str) -> list[dict[str, Any]]:
        """The elements of one of the table's sets, as nft's JSON gives them."""
        elements: list[dict[str, Any]] = []
        for item in self.nft.list_json(f"list set {TABLE} {name}").get("nftables", []):
            for raw in item.get("set", {}).get("elem", []):
                elem = raw["elem"] if isinstance(raw, dict) and "elem" in raw else raw
                if isinstance(elem, dict):
                    elements.append(elem)
        return elements


def forget_connections(ip: IPv4Address) -> None:
    """Delete the conntrack entries of a revoked client, so open connections stop at once."""
    binary = shutil.which("conntrack")
    if binary is None:
        return
    for direction in ("--orig-src", "--reply-src"):
        # exit status 1 only means there was nothing to delete
        subprocess.run(
            [binary, "-D", direction, str(ip)], capture_output=True, timeout=10, check=False
        )
