"""DNS for the lab: the wan's dnsmasq ("the ISP's DNS") and a stdlib-only query client."""

from __future__ import annotations

import ipaddress
import secrets
import socket
import struct
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from agent.probes import PROBES
from lab.addresses import GARDEN_HOST, GARDEN_IP, WAN_DNS_IP, WEB_HOST, WEB_IP
from lab.errors import DnsError
from lab.netns import socket_in

QType = Literal["A", "AAAA"]
_QTYPES: dict[str, int] = {"A": 1, "AAAA": 28}
_CLASS_IN = 1
_RCODE_NXDOMAIN = 3
_MAX_LABEL = 63


def build_query(name: str, qtype: QType = "A", qid: int = 0) -> bytes:
    """A recursive DNS query for `name` of type `qtype` with message id `qid`."""
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    qname = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("idna")
        if not 0 < len(raw) <= _MAX_LABEL:
            raise ValueError(f"DNS name {name!r} has an empty or over-long label")
        qname += bytes([len(raw)]) + raw
    return header + qname + b"\x00" + struct.pack("!HH", _QTYPES[qtype], _CLASS_IN)


def _skip_name(data: bytes, pos: int) -> int:
    """Offset just past the (possibly compressed) name starting at `pos`."""
    while True:
        if pos >= len(data):
            raise DnsError("DNS answer ends inside a name")
        length = data[pos]
        if length & 0xC0 == 0xC0:
            return pos + 2
        if length == 0:
            return pos + 1
        pos += 1 + length


def parse_answer(data: bytes, qid: int, qtype: QType = "A") -> list[str]:
    """The addresses of type `qtype` in answer `data`; [] for NXDOMAIN or no data."""
    if len(data) < 12:
        raise DnsError(f"DNS answer is {len(data)} bytes, shorter than a header")
    rid, flags, qdcount, ancount, _, _ = struct.unpack("!HHHHHH", data[:12])
    if rid != qid:
        raise DnsError(f"DNS answer id {rid} does not match query id {qid}")
    if not flags & 0x8000:
        raise DnsError("DNS message is a query, not an answer")
    rcode = flags & 0x000F
    if rcode == _RCODE_NXDOMAIN:
        return []
    if rcode != 0:
        raise DnsError(f"DNS server answered rcode {rcode}")
    pos = 12
    for _ in range(qdcount):
        pos = _skip_name(data, pos) + 4
    want = _QTYPES[qtype]
    found: list[str] = []
    for _ in range(ancount):
        pos = _skip_name(data, pos)
        if pos + 10 > len(data):
            raise DnsError("DNS answer ends inside a record header")
        rtype, rclass, _ttl, rdlen = struct.unpack("!HHIH", data[pos : pos + 10])
        pos += 10
        rdata = data[pos : pos + rdlen]
        if len(rdata) != rdlen:
            raise DnsError("DNS answer ends inside record data")
        pos += rdlen
        if rtype == want and rclass == _CLASS_IN:
            found.append(str(ipaddress.ip_address(rdata)))
    return found


def dns_query(
    ns: str,
    name: str,
    server: str = WAN_DNS_IP,
    *,
    qtype: QType = "A",
    timeout: float = 2.0,
) -> list[str]:
    """Ask `server` for `name` over UDP from namespace `ns`; the answer's addresses.

    Raises TimeoutError when nothing answers (e.g. a gate drops DNS), DnsError on a
    failure answer; NXDOMAIN and "no such record" give [].
    """
    family = socket.AF_INET6 if ipaddress.ip_address(server).version == 6 else socket.AF_INET
    qid = secrets.randbits(16)
    deadline = time.monotonic() + timeout
    with socket_in(ns, family, socket.SOCK_DGRAM) as sock:
        sock.connect((server, 53))
        sock.send(build_query(name, qtype, qid))
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no DNS answer from {server} for {name} in {timeout}s")
            sock.settimeout(remaining)
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            if len(data) >= 2 and struct.unpack("!H", data[:2])[0] == qid:
                return parse_answer(data, qid, qtype)


# Names the ISP's DNS answers, beyond the probe hosts: the web site and the walled garden.
SITE_NAMES: dict[str, str] = {WEB_HOST: WEB_IP, GARDEN_HOST: GARDEN_IP}
# Every OS probe host resolves to the web site's address, where lab.wan answers by Host.
PROBE_HOSTS: tuple[str, ...] = tuple(sorted({p.host for p in PROBES}))


def dnsmasq_argv(
    listen: str, names: dict[str, str], probe_hosts: Iterable[str], pid_file: Path
) -> list[str]:
    """The dnsmasq command line for the wan's DNS: `names` and every probe host resolve."""
    argv = [
        "/usr/sbin/dnsmasq",
        "--no-daemon",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        f"--listen-address={listen}",
        "--port=53",
        "--user=root",
        "--log-queries",
        "--log-facility=-",
        f"--pid-file={pid_file}",
    ]
    addresses = dict(names)
    for host in probe_hosts:
        addresses.setdefault(host, WEB_IP)
    argv += [f"--address=/{host}/{ip}" for host, ip in sorted(addresses.items())]
    # Every other name does not exist, as on the internet (not REFUSED, as with no upstream).
    argv.append("--address=/#/")
    return argv
