"""The gate adapter: applies the rendered table through an Nft backend, grants through a
GrantWriter, and reads the kernel's sets."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Protocol

from agent.access import UNLIMITED, SpeedLimit
from agent.clients import Client
from agent.gate.netlink_grants import NetlinkGrants
from agent.gate.nfnetlink import KernelSets, SetElement
from agent.gate.nft import Nft
from agent.ruleset import (
    CLIENTS_SET,
    DOWNLOADS_SET,
    TABLE,
    TRUSTED_MACS_SET,
    GateSpec,
    Grant,
    client_of_key,
    clients_key,
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


class GrantWriter(Protocol):
    """Adds and removes one client's elements, each change one transaction."""

    name: str

    def grant(self, grant: Grant, *, replace: bool = False) -> None:
        """Let a client through until its timeout; `replace` first drops its elements."""

    def revoke(self, client: Client, limit: SpeedLimit = UNLIMITED) -> None:
        """Take a client granted at `limit` out of every set; absent already is no error."""


class ScriptedGrants:
    """Grants and revokes as nft scripts (agent.ruleset), run by an Nft backend."""

    def __init__(self, nft: Nft) -> None:
        self.nft = nft
        self.name = nft.name

    def grant(self, grant: Grant, *, replace: bool = False) -> None:
        """Let a client through until its timeout."""
        self.nft.run(render_grant(grant, replace=replace))

    def revoke(self, client: Client, limit: SpeedLimit = UNLIMITED) -> None:
        """Take a client granted at `limit` out of every set."""
        self.nft.run(render_revoke(client, limit))


def open_grants(backend: str, nft: Nft) -> GrantWriter:
    """Netlink for `auto` and `netlink`; otherwise scripts through the chosen Nft backend."""
    if backend in ("auto", "netlink"):
        return NetlinkGrants(TABLE)
    return ScriptedGrants(nft)


class SetReader(Protocol):
    """Reads the table's sets from the kernel (agent.gate.nfnetlink.KernelSets)."""

    def table_exists(self) -> bool:
        """True when the table is in the kernel."""

    def elements(self, set_name: str) -> list[SetElement]:
        """Every element of one set, with its counter."""


# On flash: the table with no client in it, which the OpenWrt package loads at boot, long
# before the agent starts (deploy/openwrt/files/loopspot-boot-gate.sh), so that the LAN is
# never open to phones that have not passed the portal.
BOOT_GATE_FILE = "captive-at-boot.nft"


class Gate:
    """The agent's table `inet loopspot`; every change is one nft transaction."""

    def __init__(
        self,
        nft: Nft,
        spec: GateSpec,
        sets: SetReader | None = None,
        grants: GrantWriter | None = None,
        route_to_portal: Callable[[Iterable[str]], None] | None = None,
    ) -> None:
        self.nft = nft
        self.spec = spec
        self.sets = sets if sets is not None else KernelSets(TABLE)
        self.grants = grants if grants is not None else ScriptedGrants(nft)
        # Puts in place what, beside the table, takes captive phones' web traffic to the
        # portal (agent.gate.interception.ensure_portal_route); None where nothing must.
        self.route_to_portal = route_to_portal
        # The Client objects granted, by `clients` key: a poll hands back these same
        # objects, not a second copy of every client (200 bytes each).
        self._clients: dict[bytes, Client] = {}
        # The limit each limited client was granted at: its revoke names the same limit sets.
        self._limits: dict[bytes, SpeedLimit] = {}

    def install(self, grants: Iterable[Grant] = ()) -> None:
        """Replace the whole table atomically, with these clients already let through."""
        grants = list(grants)
        if self.route_to_portal is not None:
            self.route_to_portal([lan.interface for lan in self.spec.lan_portals])
        self.nft.run(render_table(self.spec, grants))
        self._clients = {clients_key(g.client): g.client for g in grants}
        self._limits = {clients_key(g.client): g.limit for g in grants if not g.limit.unlimited}

    def boot_script(self) -> str:
        """The table as installed at boot, before the agent runs: captive, no client yet."""
        return render_table(self.spec)

    def grant(self, grant: Grant, *, replace: bool = False) -> None:
        """Let a client through until its timeout, at its speed limit."""
        key = clients_key(grant.client)
        before = self._limits.get(key, UNLIMITED)
        if before != grant.limit:  # granted at another limit: its old buckets go first
            self._revoke(grant.client, before)
        self.grants.grant(grant, replace=replace)
        self._clients[key] = grant.client
        if grant.limit.unlimited:
            self._limits.pop(key, None)
        else:
            self._limits[key] = grant.limit

    def revoke(self, client: Client) -> None:
        """Stop letting a client through; its open connections are cut by `forget_connections`."""
        key = clients_key(client)
        self._revoke(client, self._limits.get(key, UNLIMITED))
        self._clients.pop(key, None)
        self._limits.pop(key, None)

    def _revoke(self, client: Client, limit: SpeedLimit) -> None:
        if limit.unlimited:
            self.grants.revoke(client)
        else:
            self.grants.revoke(client, limit)

    def trust(self, macs: Iterable[str]) -> None:
        """Let these devices pass without the portal, with any address (spec.trusted keeps them
        across installs)."""
        listed = ", ".join(macs)
        if listed:
            self.nft.run(f"add element {TABLE} {TRUSTED_MACS_SET} {{ {listed} }}\n")

    def set_walled_garden(self, addresses: Iterable[IPv4Network]) -> None:
        """Replace the addresses reachable before authorization."""
        self.nft.run(render_walled_garden(addresses))

    def exists(self) -> bool:
        """True when the table is in the kernel (it survives agent restarts)."""
        return self.sets.table_exists()

    def read_clients(self) -> dict[Client, KernelClient]:
        """Every authorized client in the kernel set, with its counters."""
        downloads = {e.key: e.bytes for e in self.sets.elements(DOWNLOADS_SET)}
        result: dict[Client, KernelClient] = {}
        known = self._clients
        seen: set[bytes] = set()
        for element in self.sets.elements(CLIENTS_SET):
            client = known.get(element.key)
            if client is None:
                client = client_of_key(element.key)
                if client is None:
                    continue
                known[element.key] = client
            seen.add(element.key)
            expires = element.expires_ms
            result[client] = KernelClient(
                client,
                None if expires is None else expires // 1000,
                element.bytes,
                downloads.get(client.ip.packed, 0),
            )
        for gone in known.keys() - seen:  # expired in the kernel; a grant made since is
            known.pop(gone, None)  # only copied again at the next poll
            self._limits.pop(gone, None)
        return result


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
