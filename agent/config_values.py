"""Parsers of single UCI values: each returns the typed value or raises Invalid(message, fix)."""

from __future__ import annotations

import difflib
import ipaddress
import re
import unicodedata
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path, PurePosixPath

from agent.access import DEFAULT_CLASS, LanPortal, SpeedClass, SpeedLimit, TrustedDevice
from agent.clients import BadMac, normalize_mac
from agent.uci import show_value
from agent.wire import DEVICE_ID_HEX, WireError, check_router_id

MINUTE, HOUR, DAY = 60, 3600, 86400
_UNITS = {"": 1, "s": 1, "m": MINUTE, "h": HOUR, "d": DAY}
_SIZES = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_DURATION = re.compile(r"([0-9]{1,12})([smhd]?)")
_SIZE = re.compile(r"([0-9]{1,15})([kmgKMG]?)")
_INTEGER = re.compile(r"[0-9]{1,12}")
_DECIMAL = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})?|\.[0-9]{1,9}")
TEMPLATE = re.compile(r"[a-z0-9_-]{1,64}")
TEMPLATE_RULE = "up to 64 lower-case letters, digits, '_' or '-', e.g. default"
TERMS = re.compile(r"[A-Za-z0-9._-]{1,32}")
TERMS_RULE = "up to 32 letters, digits, '.', '_' or '-', e.g. 2026-11"
NFT_BACKENDS = ("auto", "netlink", "libnftables", "nft")
_LAN_ADDRESS_FIX = "use the router's LAN address, shown by 'uci get network.lan.ipaddr'."
_DURATION_FIX = "use seconds or a whole number with s, m, h or d, e.g. 90s, 15m, 2h or 1d."
_SIZE_FIX = "use bytes or a whole number with K, M or G (1024 multiples), e.g. 1536M."
_DECIMAL_FIX = "write digits with an optional decimal point, e.g. 2 or 2.5."
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_IFNAMSIZ = 16  # Linux: 15 characters and the terminating NUL
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes including the NUL

# The router's own services: a portal on one of these ports breaks them or the gate.
_TAKEN_PORTS = {
    22: "dropbear (SSH) listens on it",
    53: "dnsmasq answers DNS on it, and DNS must pass before login",
    80: "the gate redirects clients' port 80 to the portal, and LuCI listens on it",
    443: "the gate resets HTTPS before login, and LuCI listens on it",
}


class Invalid(Exception):
    """A value is wrong: args are (message, fix); the caller adds the option name and line."""


def duration(text: str, *, least: int = 0, most: int = 365 * DAY, zero: bool = False) -> int:
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise Invalid(f"{show_value(text)} is not a duration.", _DURATION_FIX)
    seconds = int(match[1]) * _UNITS[match[2]]
    if zero and seconds == 0:
        return 0
    if not least <= seconds <= most:
        allowed = "0 for no limit, or " if zero else ""
        raise Invalid(
            f"{show_value(text)} is out of range.",
            f"use {allowed}a duration from {least}s to {most // DAY}d.",
        )
    return seconds


def size(text: str) -> int:
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise Invalid(f"{show_value(text)} is not a size.", _SIZE_FIX)
    size = int(match[1]) * _SIZES[match[2].lower()]
    if 0 < size < 1024**2:
        raise Invalid(f"{show_value(text)} is too small to load a page.", "use 0 or at least 1M.")
    return size


def whole(text: str, *, least: int, most: int, what: str = "number") -> int:
    digits = text.strip()
    if not _INTEGER.fullmatch(digits) or not least <= int(digits) <= most:
        raise Invalid(
            f"{show_value(text)} is not a {what}.", f"use a number from {least} to {most}."
        )
    return int(digits)


def port(text: str) -> int:
    port = whole(text, least=1, most=65535, what="port number")
    if port in _TAKEN_PORTS:
        raise Invalid(
            f"port {port} cannot be the portal port: {_TAKEN_PORTS[port]}.",
            "use a free port above 1024, e.g. 2050 (the default).",
        )
    return port


def number(text: str, *, least: float, most: float) -> float:
    number = text.strip()
    if not _DECIMAL.fullmatch(number) or not least <= float(number) <= most:
        raise Invalid(
            f"{show_value(text)} is not a number from {least:g} to {most:g}.", _DECIMAL_FIX
        )
    return float(number)


def choice(text: str, *, choices: tuple[str, ...]) -> str:
    if text.strip() not in choices:
        close = difflib.get_close_matches(text.strip().lower(), choices, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise Invalid(
            f"{show_value(text)} is not a choice.", f"{hint}Use one of: {', '.join(choices)}."
        )
    return text.strip()


def printable(text: str) -> bool:
    return all(unicodedata.category(c) not in ("Cc", "Cs", "Zl", "Zp") for c in text)


def token(text: str, *, pattern: re.Pattern[str], rule: str) -> str:
    if not pattern.fullmatch(text):
        raise Invalid(f"{show_value(text)} is not allowed here.", f"use {rule}.")
    return text


def site_name(text: str) -> str:
    name = text.strip()
    if not name or len(name) > 80 or not printable(name):
        fix = "use one line of 1 to 80 characters, e.g. 'Café Lumière'."
        raise Invalid(f"{show_value(text)} is not a usable site name.", fix)
    return name


def path(text: str, *, socket: bool = False) -> Path:
    path = PurePosixPath(text)
    if not path.is_absolute() or ".." in path.parts or not printable(text):
        fix = "use a full path that starts with / and has no '..', e.g. /tmp/loopspot."
        raise Invalid(f"{show_value(text)} is not an absolute path.", fix)
    if path == PurePosixPath("/"):
        raise Invalid("the root directory cannot hold the agent's files.", "use a directory.")
    if socket and len(str(path).encode()) > _SUN_PATH_MAX:
        raise Invalid(
            f"{show_value(text)} is longer than a Unix socket path can be ({_SUN_PATH_MAX} bytes).",
            "use a short path, e.g. /var/run/loopspot.sock.",
        )
    return Path(path)


def interface(text: str) -> str:
    # Linux's dev_valid_name(), narrowed to printable ASCII so nft and shells quote it safely.
    odd = any(c in "/:" or not "!" <= c <= "~" for c in text)
    if odd or not 0 < len(text) < _IFNAMSIZ or text in (".", ".."):
        fix = "use the name shown by 'ip link', 1 to 15 characters without spaces, '/' or ':'."
        raise Invalid(f"{show_value(text)} is not a network interface name.", fix)
    if text == "lo":
        raise Invalid("clients never arrive on loopback.", "use the LAN bridge, e.g. br-lan.")
    return text


def domain(text: str) -> str:
    name = text.strip().lower().removesuffix(".")
    if name.startswith("*."):
        raise Invalid(
            f"{show_value(text)} is a wildcard.", f"write '{name[2:]}': subdomains count."
        )
    try:
        name = name.encode("idna").decode("ascii") if not name.isascii() else name
    except (UnicodeError, ValueError):
        name = "\0"  # falls through to the error below
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        fix = "write only the host name, e.g. pay.example.com (no https:// and no /path)."
        raise Invalid(f"{show_value(text)} is not a domain name.", fix)
    if labels[-1].isdigit():
        raise Invalid(f"{show_value(text)} is an address.", "put addresses in 'list address'.")
    if len(labels) < 2:
        fix = "name the site itself, e.g. alipay.com."
        raise Invalid(f"{show_value(text)} would open a whole top-level domain before login.", fix)
    return name


def address(text: str) -> IPv4Network:
    written = text.strip()
    try:
        network = IPv4Network(written, strict=False)
    except ValueError:
        fix = "use IPv4 (IPv6 is blocked before login), e.g. 203.0.113.7 or 203.0.113.0/24."
        raise Invalid(f"{show_value(text)} is not an IPv4 address or network.", fix) from None
    if network.network_address != IPv4Address(written.split("/")[0]):
        raise Invalid(f"{show_value(text)} is an address inside a network.", f"write {network}.")
    if network.prefixlen < 8:
        fix = "list the payment or login service's own networks, /8 or narrower."
        raise Invalid(f"{network} would let everyone through without login.", fix)
    return network


def portal_address(text: str) -> IPv4Address:
    try:
        address = IPv4Address(text.strip())
    except ValueError:
        raise Invalid(f"{show_value(text)} is not an IPv4 address.", _LAN_ADDRESS_FIX) from None
    if address.is_unspecified or address.is_loopback or address.is_multicast or address.is_reserved:
        raise Invalid(f"clients cannot reach {address}.", _LAN_ADDRESS_FIX)
    return address


_TRUE = ("1", "yes", "on", "true", "enabled")
_FALSE = ("0", "no", "off", "false", "disabled")
_USERNAME = re.compile(r"[!-~]{1,64}")  # printable ASCII, no spaces


def boolean(text: str) -> bool:
    word = text.strip().lower()
    if word not in _TRUE + _FALSE:
        raise Invalid(f"{show_value(text)} is not yes or no.", "use 1 (on) or 0 (off).")
    return word in _TRUE


def router_id(text: str) -> str:
    try:
        return check_router_id(text.strip())
    except WireError:
        fix = "use 1 to 63 lower-case letters, digits and '-', starting with a letter or digit."
        raise Invalid(f"{show_value(text)} is not a router id.", fix) from None


def host(text: str) -> str:
    name = text.strip().lower().removesuffix(".")
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        fix = "write the broker's host name or address only, e.g. mqtt.example.com (no mqtts://)."
        raise Invalid(f"{show_value(text)} is not a host name or address.", fix)
    return name


def username(text: str) -> str:
    if not _USERNAME.fullmatch(text):
        fix = "use 1 to 64 printable characters without spaces."
        raise Invalid(f"{show_value(text)} is not a usable user name.", fix)
    return text


_SPEED = re.compile(r"([0-9]{1,9}(?:\.[0-9]{1,3})?)\s*(?:([kmg]?)(bit/s|bit|bps)?)", re.I)
_SPEED_UNITS = {"": 1, "k": 1, "m": 1000, "g": 10**6}
_SPEED_FIX = "use kbit/s, or a number with kbit, mbit or gbit, e.g. 512kbit or 10mbit (0: none)."
LEAST_SPEED, MOST_SPEED = 64, 10 * 10**6  # kbit/s: below 64 no page loads


def speed(text: str) -> int:
    """A per-phone rate in kbit/s (1000 bits per second); 0 means no limit."""
    match = _SPEED.fullmatch(text.strip())
    if not match or (match[3] and not match[2]):  # bare bits per second: surely a slip
        raise Invalid(f"{show_value(text)} is not a speed.", _SPEED_FIX)
    kbit = round(float(match[1]) * _SPEED_UNITS[match[2].lower()])
    if kbit == 0:
        return 0
    if not LEAST_SPEED <= kbit <= MOST_SPEED:
        raise Invalid(
            f"{show_value(text)} is out of range.",
            f"use 0 for no limit, or from {LEAST_SPEED}kbit to {MOST_SPEED // 10**6}gbit.",
        )
    return kbit


_CLASS_NAME = re.compile(r"[a-z][a-z0-9_]{0,23}")
_CLASS_FIX = "write NAME=DOWNLOAD/UPLOAD, e.g. campaign=4mbit/1mbit or staff=0/0 (0: no limit)."


def speed_class(text: str) -> SpeedClass:
    """'NAME=DOWNLOAD/UPLOAD': a session class and its per-phone limits."""
    name, equals, rates = text.strip().partition("=")
    down, slash, up = rates.partition("/")
    if not equals or not slash:
        raise Invalid(f"{show_value(text)} is not a speed class.", _CLASS_FIX)
    name = name.strip()
    if not _CLASS_NAME.fullmatch(name):
        fix = "name it with up to 24 lower-case letters, digits or '_', starting with a letter."
        raise Invalid(f"{show_value(name)} is not a class name.", fix)
    if name == DEFAULT_CLASS:
        fix = "set download_limit and upload_limit in 'config session' for the default."
        raise Invalid("the default class is not written as a speed_class.", fix)
    return SpeedClass(name, SpeedLimit(speed(down), speed(up)))


_TRUSTED_FIX = "write the MAC, or the MAC and IPv4 address, e.g. 'aa:bb:cc:dd:ee:ff 192.168.1.5'."


def trusted_device(text: str) -> TrustedDevice:
    """'MAC' or 'MAC IP': a device that passes without the portal."""
    parts = text.split()
    if not 1 <= len(parts) <= 2:
        raise Invalid(f"{show_value(text)} is not a device.", _TRUSTED_FIX)
    try:
        mac = normalize_mac(parts[0])
    except BadMac:
        message = f"{show_value(parts[0])} is not a device's MAC address."
        raise Invalid(message, _TRUSTED_FIX) from None
    if len(parts) == 1:
        return TrustedDevice(mac)
    try:
        ip = IPv4Address(parts[1])
    except ValueError:
        raise Invalid(f"{show_value(parts[1])} is not an IPv4 address.", _TRUSTED_FIX) from None
    return TrustedDevice(mac, ip)


_DEVICE_ID = re.compile(f"[0-9a-f]{{{DEVICE_ID_HEX}}}")


def device_id(text: str) -> str:
    """A device id as the cloud knows a device (agent.wire.device_id), never a raw MAC."""
    if not _DEVICE_ID.fullmatch(text.strip()):
        fix = "use the device id the dashboard shows (hexadecimal), not a MAC address."
        raise Invalid(f"{show_value(text)} is not a device id.", fix)
    return text.strip()


def lan(text: str) -> LanPortal:
    """'INTERFACE=ADDRESS': a LAN whose phones get the portal at its own address."""
    name, equals, address = text.strip().partition("=")
    if not equals:
        fix = "write INTERFACE=PORTAL_ADDRESS, e.g. br-guest=10.78.0.1."
        raise Invalid(f"{show_value(text)} is not a LAN.", fix)
    return LanPortal(interface(name.strip()), portal_address(address))
