"""A simulated shop: a router namespace, phone namespaces on its LAN bridge, and the wan.

    phone i (eth0, 10.77.a.b/16, fd77::a:b/64) ── p<i> ─┐
                                        router: br-lan 10.77.0.1/16, fd77::1/64
                                                wan0 198.51.100.1/24, fd51::1/64
                                                  │
    wan: eth0 198.51.100.2 (DNS), .10 (web site and probe hosts), .20 (walled garden)

Namespace names are `ls<pid>-<n>` + `r`, `w` or `p<i>`, so a crashed run's leftovers can be
told apart from a live run's and removed with `cleanup_stale()`.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType, TracebackType

from agent.gate.interception import BRIDGE_NETFILTER
from lab import addresses as A
from lab import netns
from lab.errors import LabError, LabSetupError
from lab.services import WanServices

NAME_ROOT = "ls"
_NAME_RE = re.compile(r"^(?P<prefix>ls(?P<pid>\d+)-\d+)(?:r|w|p\d+)$")
_lab_numbers = itertools.count()
_open_labs: dict[int, Lab] = {}
_hooks_lock = threading.Lock()
_hooks_installed = False
STOP_GRACE = 3.0
_WORKDIR_PREFIX = "loopspot-lab-"


@dataclass(frozen=True, slots=True)
class Phone:
    """One phone on the shop's Wi-Fi: its namespace, MAC and addresses."""

    ns: str
    mac: str
    ip: str
    ip6: str
    port: str = ""
    index: int = 0
    lan: int = 0  # which of the router's LANs (lab.addresses.lan_bridge) it is on

    @property
    def link_local(self) -> str:
        """The phone's IPv6 link-local address (EUI-64 from its MAC)."""
        return A.link_local(self.mac)


def _owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_all(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _remove_namespaces(names: Sequence[str]) -> None:
    """Kill whatever still runs in `names`, then delete the namespaces and their /etc files."""
    live = [n for n in names if netns.exists(n)]
    _kill_all([pid for pids in netns.pids_in(live).values() for pid in pids])
    netns.ip_batch([f"netns del {n}" for n in live])
    for name in names:
        shutil.rmtree(netns.NETNS_ETC_DIR / name, ignore_errors=True)


def cleanup_stale(prefix: str = NAME_ROOT) -> list[str]:
    """Remove lab namespaces starting with `prefix` whose creating process has died.

    Only names in the lab's own pattern are considered; a live run's labs are left alone.
    Returns the names removed.
    """
    etc_names = (
        [p.name for p in netns.NETNS_ETC_DIR.iterdir()] if netns.NETNS_ETC_DIR.is_dir() else []
    )
    stale: list[str] = []
    for name in sorted(set(netns.list_namespaces()) | set(etc_names)):
        match = _NAME_RE.match(name)
        if not match or not name.startswith(prefix):
            continue
        pid = int(match["pid"])
        if pid != os.getpid() and not _owner_alive(pid):
            stale.append(name)
    _remove_namespaces(stale)
    for prefix_seen in {m["prefix"] for n in stale if (m := _NAME_RE.match(n))}:
        for workdir in Path(tempfile.gettempdir()).glob(f"{_WORKDIR_PREFIX}{prefix_seen}-*"):
            shutil.rmtree(workdir, ignore_errors=True)
    return stale


def _close_open_labs() -> None:
    for lab in list(_open_labs.values()):
        # Exiting: close every lab we can, even if one of them fails.
        with contextlib.suppress(Exception):
            lab.close()


def _on_sigterm(signum: int, _frame: FrameType | None) -> None:
    # Turn SIGTERM into SystemExit so context managers, finalizers and atexit all run.
    raise SystemExit(128 + signum)


def _install_exit_hooks() -> None:
    global _hooks_installed
    with _hooks_lock:
        if _hooks_installed:
            return
        _hooks_installed = True
        atexit.register(_close_open_labs)
        is_main = threading.current_thread() is threading.main_thread()
        if is_main and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)


def require_root() -> None:
    """Raise LabSetupError unless this process can build namespaces."""
    if os.geteuid() != 0:
        raise LabSetupError("the lab needs root (network namespaces, veth pairs)")
    if shutil.which("ip") is None:
        raise LabSetupError("iproute2's `ip` is not installed")


class Lab:
    """A shop in namespaces; use `Lab.create(...)` as a context manager, or call `close()`."""

    def __init__(self, prefix: str, workdir: Path, phone_dns: str) -> None:
        self.prefix = prefix
        self.router = f"{prefix}r"
        self.wan = f"{prefix}w"
        self.phones: list[Phone] = []
        self.workdir = workdir
        self.phone_dns = phone_dns
        self.wan_services = WanServices(self.wan, workdir)
        self._names: list[str] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._next_index = 0
        self.lans = 1
        self._closed = False

    @classmethod
    def create(
        cls,
        phones: int = 1,
        phone_macs: Sequence[str] | None = None,
        *,
        wan_services: bool = False,
        phone_dns: str = A.WAN_DNS_IP,
        lans: int = 1,
    ) -> Lab:
        """Build router, wan and `phones` phones; `phone_macs` sets the first phones' MACs.

        `lans` > 1 gives the router more LAN bridges (add_lan); the phones are on the first.
        """
        require_root()
        macs = [A.normalize_mac(mac) for mac in phone_macs or []]
        if len(macs) > phones:
            raise ValueError(f"{len(macs)} MACs given for only {phones} phones")
        if len(set(macs)) != len(macs):
            raise ValueError(f"phone_macs repeats a MAC: {macs}")
        _install_exit_hooks()
        prefix = f"{NAME_ROOT}{os.getpid()}-{next(_lab_numbers)}"
        lab = cls(prefix, Path(tempfile.mkdtemp(prefix=f"{_WORKDIR_PREFIX}{prefix}-")), phone_dns)
        _open_labs[id(lab)] = lab
        try:
            lab._build_core()
            for _ in range(lans - 1):
                lab.add_lan()
            lab.add_phones(phones, macs)
            if wan_services:
                lab.start_wan_services()
        except BaseException:
            lab.close()
            raise
        return lab

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def namespaces(self) -> list[str]:
        """Every namespace this lab created (and has not removed)."""
        return list(self._names)

    def _add_namespaces(self, names: Sequence[str]) -> None:
        self._names.extend(names)
        try:
            netns.ip_batch([f"netns add {n}" for n in names])
        except LabError as exc:
            raise LabSetupError(f"cannot create network namespaces: {exc}") from exc
        for name in names:
            # DAD would hold IPv6 addresses "tentative" for a second or two; the lab has no
            # duplicates, so addresses are usable the moment they are added.
            netns.sysctl_set(name, "net.ipv6.conf.all.accept_dad", 0)
            netns.sysctl_set(name, "net.ipv6.conf.default.accept_dad", 0)

    def _build_core(self) -> None:
        self._add_namespaces([self.router, self.wan])
        r = self.router
        netns.sysctl_set(r, "net.ipv4.ip_forward", 1)
        netns.sysctl_set(r, "net.ipv6.conf.all.forwarding", 1)
        netns.ip_batch(
            [
                "link set lo up",
                f"link add {A.LAN_BRIDGE} type bridge",
                f"addr add {A.ROUTER_LAN_IP}/{A.LAN_PREFIXLEN} dev {A.LAN_BRIDGE}",
                f"addr add {A.ROUTER_LAN_IP6}/64 dev {A.LAN_BRIDGE} nodad",
                f"link set {A.LAN_BRIDGE} up",
                f"link add {A.ROUTER_WAN_IF} type veth peer name {A.WAN_IF} netns {self.wan}",
                f"addr add {A.ROUTER_WAN_IP}/24 dev {A.ROUTER_WAN_IF}",
                f"addr add {A.ROUTER_WAN_IP6}/64 dev {A.ROUTER_WAN_IF} nodad",
                f"link set {A.ROUTER_WAN_IF} up",
            ],
            ns=r,
        )
        # OpenWrt loads no br_netfilter, so frames its bridges pass up skip the IP hooks of
        # the bridge layer. This host may have it, and it would lose tproxy's socket.
        if BRIDGE_NETFILTER.exists():
            for table in ("iptables", "ip6tables", "arptables"):
                netns.sysctl_set(r, f"net.bridge.bridge-nf-call-{table}", 0)
        # Bridge ports are layer 2 only; without IPv6 on them they send no RS/MLD noise.
        netns.sysctl_set(r, "net.ipv6.conf.default.disable_ipv6", 1)
        netns.ip_batch(
            [
                "link set lo up",
                f"addr add {A.WAN_IP}/24 dev {A.WAN_IF}",
                f"addr add {A.WEB_IP}/24 dev {A.WAN_IF}",
                f"addr add {A.GARDEN_IP}/24 dev {A.WAN_IF}",
                f"addr add {A.WAN_IP6}/64 dev {A.WAN_IF} nodad",
                f"link set {A.WAN_IF} up",
                f"route add {A.LAN_NET} via {A.ROUTER_WAN_IP}",
                f"route add {A.LAN6_NET} via {A.ROUTER_WAN_IP6}",
            ],
            ns=self.wan,
        )

    def add_lan(self) -> int:
        """Give the router one more LAN bridge (a guest VLAN), routed to the wan; its number."""
        lan = self.lans
        bridge = A.lan_bridge(lan)
        netns.ip_batch([f"link add {bridge} type bridge"], ns=self.router)
        # new interfaces start without IPv6 here (see _build_core); the bridge needs it
        netns.sysctl_set(self.router, f"net.ipv6.conf.{bridge}.disable_ipv6", 0)
        netns.ip_batch(
            [
                f"addr add {A.router_lan_ip(lan)}/{A.LAN_PREFIXLEN} dev {bridge}",
                f"addr add {A.router_lan_ip6(lan)}/64 dev {bridge} nodad",
                f"link set {bridge} up",
            ],
            ns=self.router,
        )
        netns.ip_batch(
            [
                f"route add {A.lan_net(lan)} via {A.ROUTER_WAN_IP}",
                f"route add {A.lan6_net(lan)} via {A.ROUTER_WAN_IP6}",
            ],
            ns=self.wan,
        )
        self.lans += 1
        return lan

    def add_phone(self, mac: str | None = None, lan: int = 0) -> Phone:
        """Connect one more phone to LAN `lan`, with `mac` or a generated one."""
        return self.add_phones(1, [mac], lan=lan)[0]

    def add_phones(
        self, count: int, macs: Sequence[str | None] | None = None, *, lan: int = 0
    ) -> list[Phone]:
        """Connect `count` phones to LAN `lan` at once (one `ip` batch for the router, one
        per phone)."""
        if self._closed:
            raise LabError("this lab is closed")
        if not 0 <= lan < self.lans:
            raise ValueError(f"LAN {lan} is not one of this lab's {self.lans} LANs (add_lan)")
        chosen = list(macs or [])
        if len(chosen) > count:
            raise ValueError(f"{len(chosen)} MACs given for only {count} phones")
        chosen += [None] * (count - len(chosen))
        taken = {p.mac for p in self.phones}
        new: list[Phone] = []
        for mac in chosen:
            index = self._next_index
            self._next_index += 1
            norm = A.normalize_mac(mac) if mac is not None else A.phone_mac(index)
            if norm in taken:
                raise ValueError(f"MAC {norm} is already on this lab's LAN")
            taken.add(norm)
            ns = f"{self.prefix}p{index}"
            ip, ip6 = A.phone_ip(index, lan), A.phone_ip6(index, lan)
            new.append(Phone(ns, norm, ip, ip6, f"p{index}", index, lan))
        if not new:
            return []
        self._add_namespaces([p.ns for p in new])
        netns.ip_batch(
            [
                f"link add {p.port} master {A.lan_bridge(p.lan)} up type veth"
                f" peer name {A.PHONE_IF} address {p.mac} netns {p.ns}"
                for p in new
            ],
            ns=self.router,
        )
        netns.ip_batches({p.ns: self._phone_batch(p) for p in new})
        for p in new:
            self._write_resolv_conf(p.ns)
        self.phones.extend(new)
        return new

    def _phone_batch(self, phone: Phone) -> list[str]:
        dev = A.PHONE_IF
        return [
            "link set lo up",
            f"link set {dev} up",
            f"addr add {phone.ip}/{A.LAN_PREFIXLEN} dev {dev}",
            f"addr add {phone.ip6}/64 dev {dev} nodad",
            f"route add default via {A.router_lan_ip(phone.lan)}",
            f"route add ::/0 via {A.router_lan_ip6(phone.lan)}",
        ]

    def _write_resolv_conf(self, ns: str) -> None:
        # Seen by programs started with `ip netns exec` (curl, chromium) in that phone.
        etc = netns.NETNS_ETC_DIR / ns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(f"nameserver {self.phone_dns}\n")

    def change_ip(self, phone: Phone, ip: str) -> Phone:
        """Give `phone` another IPv4 address on its LAN (as a new DHCP lease would)."""
        dev = A.PHONE_IF
        netns.ip_batch(
            [
                f"addr del {phone.ip}/{A.LAN_PREFIXLEN} dev {dev}",
                f"addr add {ip}/{A.LAN_PREFIXLEN} dev {dev}",
                f"route replace default via {A.router_lan_ip(phone.lan)}",
            ],
            ns=phone.ns,
        )
        updated = replace(phone, ip=ip)
        self.phones[self.phones.index(phone)] = updated
        return updated

    def change_mac(self, phone: Phone, mac: str) -> Phone:
        """Give `phone` a new MAC (as MAC randomisation or spoofing would); the new Phone."""
        norm = A.normalize_mac(mac)
        dev = A.PHONE_IF
        netns.ip_batch(
            [
                f"link set {dev} address {norm}",
                f"addr flush dev {dev} scope link",
                f"addr add {A.link_local(norm)}/64 dev {dev} nodad",
            ],
            ns=phone.ns,
        )
        updated = replace(phone, mac=norm)
        self.phones[self.phones.index(phone)] = updated
        return updated

    def remove_phone(self, phone: Phone) -> None:
        """Take `phone` off the LAN for good (it leaves the shop): its namespace goes."""
        _remove_namespaces([phone.ns])
        self.phones.remove(phone)
        self._names.remove(phone.ns)

    def start_wan_services(self, timeout: float = 10.0) -> None:
        """Start the wan web server and DNS; return once both answer. Idempotent."""
        self.wan_services.start(timeout)

    def popen(
        self,
        ns: str,
        *argv: str,
        stdout: netns.Stream = None,
        stderr: netns.Stream = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` in `ns`; the lab stops it on close()."""
        if ns not in self._names:
            raise LabError(f"{ns!r} is not one of this lab's namespaces")
        proc = netns.popen(ns, *argv, stdout=stdout, stderr=stderr, env=env)
        self._procs.append(proc)
        return proc

    def close(self) -> None:
        """Stop the lab's processes and delete its namespaces. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self.wan_services.stop()
            for proc in self._procs:
                if proc.poll() is None:
                    proc.terminate()
            for proc in self._procs:
                try:
                    proc.wait(STOP_GRACE)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            try:
                _remove_namespaces(self._names)
            finally:
                self._names.clear()
                _open_labs.pop(id(self), None)
                shutil.rmtree(self.workdir, ignore_errors=True)
