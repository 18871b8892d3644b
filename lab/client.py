"""What a phone does on the network, run in-process from the phone's namespace.

Every helper opens its socket with `socket_in`, so a test can drive hundreds of phones
from one thread without starting a process per request.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import struct
import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple
from urllib.parse import urlencode, urlsplit

from lab.addresses import WAN_DNS_IP
from lab.dns import dns_query
from lab.errors import DnsError
from lab.netns import socket_in

DEFAULT_TIMEOUT = 5.0


class HttpResponse(NamedTuple):
    """An HTTP answer as the phone saw it; redirects are returned, never followed."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        """The body decoded as UTF-8, with undecodable bytes replaced."""
        return self.body.decode("utf-8", errors="replace")


def _family(address: str) -> socket.AddressFamily:
    try:
        version = ipaddress.ip_address(address).version
    except ValueError:
        raise ValueError(f"{address!r} is not an IP address; resolve it first") from None
    return socket.AF_INET6 if version == 6 else socket.AF_INET


def connect(ns: str, address: str, port: int, timeout: float = DEFAULT_TIMEOUT) -> socket.socket:
    """A TCP connection from namespace `ns` to `address`:`port` (an IP literal).

    Raises ConnectionRefusedError / ConnectionResetError when the peer (or a gate) resets,
    TimeoutError when packets are silently dropped.
    """
    sock = socket_in(ns, _family(address), socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _PhoneConnection(http.client.HTTPConnection):
    """http.client over a socket opened in the phone's namespace."""

    def __init__(self, ns: str, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._ns = ns
        self._address = address
        self._timeout = timeout

    def connect(self) -> None:
        self.sock = connect(self._ns, self._address, self.port, self._timeout)


def resolve(ns: str, host: str, dns_server: str = WAN_DNS_IP, timeout: float = 2.0) -> str:
    """`host` itself if it is an IP literal, else its first A record as seen from `ns`."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    answers = dns_query(ns, host, dns_server, timeout=timeout)
    if not answers:
        raise DnsError(f"{host} does not resolve via {dns_server}")
    return answers[0]


def request(
    ns: str,
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    connect_to: str | None = None,
    dns_server: str = WAN_DNS_IP,
) -> HttpResponse:
    """One HTTP request from namespace `ns`.

    The Host header comes from `url`. The connection goes to `connect_to` when given
    (like curl --resolve), else to the URL's IP literal or its DNS answer from `dns_server`.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{url!r}: only http:// URLs with a host are supported")
    port = parts.port or 80
    address = connect_to or resolve(ns, parts.hostname, dns_server, timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = _PhoneConnection(ns, parts.hostname, port, address, timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        return HttpResponse(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def http_get(
    ns: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    connect_to: str | None = None,
    dns_server: str = WAN_DNS_IP,
) -> HttpResponse:
    """GET `url` from namespace `ns`; unpacks as (status, headers, body)."""
    return request(
        ns,
        "GET",
        url,
        headers=headers,
        timeout=timeout,
        connect_to=connect_to,
        dns_server=dns_server,
    )


def http_post_form(
    ns: str,
    url: str,
    fields: Mapping[str, str] | Sequence[tuple[str, str]],
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    connect_to: str | None = None,
    dns_server: str = WAN_DNS_IP,
) -> HttpResponse:
    """POST `fields` url-encoded to `url` from namespace `ns`, as a browser submits a form."""
    all_headers = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
    return request(
        ns,
        "POST",
        url,
        body=urlencode(fields).encode(),
        headers=all_headers,
        timeout=timeout,
        connect_to=connect_to,
        dns_server=dns_server,
    )


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(int(word) for word in struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping(ns: str, address: str, timeout: float = 2.0) -> bool:
    """Send one ICMP/ICMPv6 echo from namespace `ns`; True if `address` answered in time."""
    family = _family(address)
    v6 = family == socket.AF_INET6
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    request_type, reply_type = (128, 129) if v6 else (8, 0)
    ident, seq = os.getpid() & 0xFFFF, int(time.monotonic_ns() & 0xFFFF)
    payload = b"loopspot-lab-ping"
    header = struct.pack("!BBHHH", request_type, 0, 0, ident, seq)
    # The kernel fills in the ICMPv6 checksum (it covers a pseudo-header we do not see).
    csum = 0 if v6 else _checksum(header + payload)
    packet = struct.pack("!BBHHH", request_type, 0, csum, ident, seq) + payload
    want = ipaddress.ip_address(address)
    deadline = time.monotonic() + timeout
    with socket_in(ns, family, socket.SOCK_RAW, proto) as sock:
        sock.sendto(packet, (address, 0))
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                data, peer = sock.recvfrom(65535)
            except TimeoutError:
                return False
            icmp = data if v6 else data[(data[0] & 0x0F) * 4 :]
            if len(icmp) < 8 or ipaddress.ip_address(peer[0]) != want:
                continue
            rtype, _, _, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
            if rtype == reply_type and rid == ident and rseq == seq:
                return True
    return False
