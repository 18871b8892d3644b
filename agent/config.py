"""Read the agent's Settings from its UCI file, /etc/config/loopspot, refusing what would break."""

from __future__ import annotations

import dataclasses
import difflib
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path, PurePosixPath
from typing import Any

from agent.errors import ConfigError
from agent.settings import LANGUAGES, Settings
from agent.uci import MAX_TEXT_CHARS, UciItem, UciSection, ValueKind, parse_uci, show_value

DEFAULT_PATH = Path("/etc/config/loopspot")

MINUTE, HOUR, DAY = 60, 3600, 86400
_UNITS = {"": 1, "s": 1, "m": MINUTE, "h": HOUR, "d": DAY}
_SIZES = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_DURATION = re.compile(r"([0-9]{1,12})([smhd]?)")
_SIZE = re.compile(r"([0-9]{1,15})([kmgKMG]?)")
_INTEGER = re.compile(r"[0-9]{1,12}")
_DECIMAL = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})?|\.[0-9]{1,9}")
_TEMPLATE = re.compile(r"[a-z0-9_-]{1,64}")
_TEMPLATE_RULE = "up to 64 lower-case letters, digits, '_' or '-', e.g. default"
_TERMS = re.compile(r"[A-Za-z0-9._-]{1,32}")
_TERMS_RULE = "up to 32 letters, digits, '.', '_' or '-', e.g. 2026-11"
_NFT_BACKENDS = ("auto", "libnftables", "nft")
_LAN_ADDRESS_FIX = "use the router's LAN address, shown by 'uci get network.lan.ipaddr'."
_DURATION_FIX = "use seconds or a whole number with s, m, h or d, e.g. 90s, 15m, 2h or 1d."
_SIZE_FIX = "use bytes or a whole number with K, M or G (1024 multiples), e.g. 1536M."
_WRONG_FILE_FIX = "check that this is the loopspot config file and not another file."
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


class _Invalid(Exception):
    """A value is wrong: args are (message, fix); the caller adds the option name and line."""


def _duration(text: str, *, least: int = 0, most: int = 365 * DAY, zero: bool = False) -> int:
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise _Invalid(f"{show_value(text)} is not a duration.", _DURATION_FIX)
    seconds = int(match[1]) * _UNITS[match[2]]
    if zero and seconds == 0:
        return 0
    if not least <= seconds <= most:
        allowed = "0 for no limit, or " if zero else ""
        raise _Invalid(
            f"{show_value(text)} is out of range.",
            f"use {allowed}a duration from {least}s to {most // DAY}d.",
        )
    return seconds


def _size(text: str) -> int:
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise _Invalid(f"{show_value(text)} is not a size.", _SIZE_FIX)
    size = int(match[1]) * _SIZES[match[2].lower()]
    if 0 < size < 1024**2:
        raise _Invalid(f"{show_value(text)} is too small to load a page.", "use 0 or at least 1M.")
    return size


def _whole(text: str, *, least: int, most: int, what: str = "number") -> int:
    digits = text.strip()
    if not _INTEGER.fullmatch(digits) or not least <= int(digits) <= most:
        raise _Invalid(
            f"{show_value(text)} is not a {what}.", f"use a number from {least} to {most}."
        )
    return int(digits)


def _port(text: str) -> int:
    port = _whole(text, least=1, most=65535, what="port number")
    if port in _TAKEN_PORTS:
        raise _Invalid(
            f"port {port} cannot be the portal port: {_TAKEN_PORTS[port]}.",
            "use a free port above 1024, e.g. 2050 (the default).",
        )
    return port


def _number(text: str, *, least: float, most: float) -> float:
    number = text.strip()
    if not _DECIMAL.fullmatch(number) or not least <= float(number) <= most:
        raise _Invalid(
            f"{show_value(text)} is not a number from {least:g} to {most:g}.", _DECIMAL_FIX
        )
    return float(number)


def _choice(text: str, *, choices: tuple[str, ...]) -> str:
    if text.strip() not in choices:
        close = difflib.get_close_matches(text.strip().lower(), choices, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise _Invalid(
            f"{show_value(text)} is not a choice.", f"{hint}Use one of: {', '.join(choices)}."
        )
    return text.strip()


def _printable(text: str) -> bool:
    return all(unicodedata.category(c) not in ("Cc", "Cs", "Zl", "Zp") for c in text)


def _token(text: str, *, pattern: re.Pattern[str], rule: str) -> str:
    if not pattern.fullmatch(text):
        raise _Invalid(f"{show_value(text)} is not allowed here.", f"use {rule}.")
    return text


def _site_name(text: str) -> str:
    name = text.strip()
    if not name or len(name) > 80 or not _printable(name):
        fix = "use one line of 1 to 80 characters, e.g. 'Café Lumière'."
        raise _Invalid(f"{show_value(text)} is not a usable site name.", fix)
    return name


def _path(text: str, *, socket: bool = False) -> Path:
    path = PurePosixPath(text)
    if not path.is_absolute() or ".." in path.parts or not _printable(text):
        fix = "use a full path that starts with / and has no '..', e.g. /tmp/loopspot."
        raise _Invalid(f"{show_value(text)} is not an absolute path.", fix)
    if path == PurePosixPath("/"):
        raise _Invalid("the root directory cannot hold the agent's files.", "use a directory.")
    if socket and len(str(path).encode()) > _SUN_PATH_MAX:
        raise _Invalid(
            f"{show_value(text)} is longer than a Unix socket path can be ({_SUN_PATH_MAX} bytes).",
            "use a short path, e.g. /var/run/loopspot.sock.",
        )
    return Path(path)


def _interface(text: str) -> str:
    # Linux's dev_valid_name(), narrowed to printable ASCII so nft and shells quote it safely.
    odd = any(c in "/:" or not "!" <= c <= "~" for c in text)
    if odd or not 0 < len(text) < _IFNAMSIZ or text in (".", ".."):
        fix = "use the name shown by 'ip link', 1 to 15 characters without spaces, '/' or ':'."
        raise _Invalid(f"{show_value(text)} is not a network interface name.", fix)
    if text == "lo":
        raise _Invalid("clients never arrive on loopback.", "use the LAN bridge, e.g. br-lan.")
    return text


def _domain(text: str) -> str:
    name = text.strip().lower().removesuffix(".")
    if name.startswith("*."):
        raise _Invalid(
            f"{show_value(text)} is a wildcard.", f"write '{name[2:]}': subdomains count."
        )
    try:
        name = name.encode("idna").decode("ascii") if not name.isascii() else name
    except (UnicodeError, ValueError):
        name = "\0"  # falls through to the error below
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        fix = "write only the host name, e.g. pay.example.com (no https:// and no /path)."
        raise _Invalid(f"{show_value(text)} is not a domain name.", fix)
    if labels[-1].isdigit():
        raise _Invalid(f"{show_value(text)} is an address.", "put addresses in 'list address'.")
    if len(labels) < 2:
        fix = "name the site itself, e.g. alipay.com."
        raise _Invalid(f"{show_value(text)} would open a whole top-level domain before login.", fix)
    return name


def _address(text: str) -> IPv4Network:
    written = text.strip()
    try:
        network = IPv4Network(written, strict=False)
    except ValueError:
        fix = "use IPv4 (IPv6 is blocked before login), e.g. 203.0.113.7 or 203.0.113.0/24."
        raise _Invalid(f"{show_value(text)} is not an IPv4 address or network.", fix) from None
    if network.network_address != IPv4Address(written.split("/")[0]):
        raise _Invalid(f"{show_value(text)} is an address inside a network.", f"write {network}.")
    if network.prefixlen < 8:
        fix = "list the payment or login service's own networks, /8 or narrower."
        raise _Invalid(f"{network} would let everyone through without login.", fix)
    return network


def _portal_address(text: str) -> IPv4Address:
    try:
        address = IPv4Address(text.strip())
    except ValueError:
        raise _Invalid(f"{show_value(text)} is not an IPv4 address.", _LAN_ADDRESS_FIX) from None
    if address.is_unspecified or address.is_loopback or address.is_multicast or address.is_reserved:
        raise _Invalid(f"clients cannot reach {address}.", _LAN_ADDRESS_FIX)
    return address


@dataclass(frozen=True, slots=True)
class _Spec:
    field: str
    parse: Callable[[str], object]
    kind: ValueKind = ValueKind.OPTION


_SECTIONS: Mapping[str, Mapping[str, _Spec]] = {
    "agent": {
        "lan_interface": _Spec("lan_interfaces", _interface, ValueKind.LIST),
        "portal_address": _Spec("portal_address", _portal_address),
        "portal_port": _Spec("portal_port", _port),
        "state_dir": _Spec("state_dir", _path),
        "flash_dir": _Spec("flash_dir", _path),
        # Snapshots write flash: more often wears it, less often loses events in a power cut.
        "snapshot_interval": _Spec("snapshot_interval", partial(_duration, least=MINUTE, most=DAY)),
        "control_socket": _Spec("control_socket", partial(_path, socket=True)),
        "nft_backend": _Spec("nft_backend", partial(_choice, choices=_NFT_BACKENDS)),
        "counter_poll_interval": _Spec(
            "counter_poll_interval", partial(_number, least=0.5, most=60)
        ),
    },
    "session": {
        "timeout": _Spec("session_timeout", partial(_duration, least=1, zero=True)),
        "idle_timeout": _Spec("idle_timeout", partial(_duration, least=1, zero=True)),
        "data_quota": _Spec("data_quota", _size),
    },
    "portal": {
        "template": _Spec("template", partial(_token, pattern=_TEMPLATE, rule=_TEMPLATE_RULE)),
        "templates_dir": _Spec("templates_dir", _path),
        "language": _Spec("language", partial(_choice, choices=("auto", *LANGUAGES))),
        "terms_version": _Spec("terms_version", partial(_token, pattern=_TERMS, rule=_TERMS_RULE)),
        "site_name": _Spec("site_name", _site_name),
        "rate_limit": _Spec("rate_limit", partial(_number, least=0.1, most=1000)),
        "rate_burst": _Spec("rate_burst", partial(_whole, least=1, most=10000, what="burst size")),
    },
    "walled_garden": {
        "domain": _Spec("walled_garden_domains", _domain, ValueKind.LIST),
        "address": _Spec("walled_garden_addresses", _address, ValueKind.LIST),
    },
}
_REPEATABLE = frozenset({"walled_garden"})  # their lists accumulate
KNOWN_OPTIONS: Mapping[str, tuple[str, ...]] = {s: tuple(o) for s, o in _SECTIONS.items()}
_HOME_BY_FIELD = {spec.field: (s, o) for s, specs in _SECTIONS.items() for o, spec in specs.items()}


def _unknown_option(section: UciSection, name: str, line: int) -> ConfigError:
    known = _SECTIONS[section.type]
    home = [s for s, options in _SECTIONS.items() if name in options and s != section.type]
    close = difflib.get_close_matches(name, list(known), n=1)
    if home:
        fix = f"'{name}' belongs in 'config {home[0]}'; move it there."
    elif name in _HOME_BY_FIELD:  # the Settings field name, e.g. session_timeout
        where, option = _HOME_BY_FIELD[name]
        fix = f"write {_SECTIONS[where][option].kind.value} {option} in 'config {where}'."
    elif close:
        fix = f"did you mean '{close[0]}'?"
    else:
        fix = f"use one of: {', '.join(known)}."
    return ConfigError(
        f"unknown option in 'config {section.type}'.", option=name, line=line, fix=fix
    )


def _check_section(section: UciSection, first_seen: dict[str, int]) -> Mapping[str, _Spec]:
    specs = _SECTIONS.get(section.type)
    if specs is None:
        close = difflib.get_close_matches(section.type, list(_SECTIONS), n=1)
        hint = f"did you mean 'config {close[0]}'? " if close else ""
        raise ConfigError(
            f"unknown section type '{section.type}'.",
            line=section.line,
            fix=f"{hint}Sections are: {', '.join(_SECTIONS)}.",
        )
    if section.type not in _REPEATABLE:
        if section.type in first_seen:
            first, fix = first_seen[section.type], f"merge both into one 'config {section.type}'."
            message = f"a second 'config {section.type}' section (the first is on line {first})."
            raise ConfigError(message, line=section.line, fix=fix)
        first_seen[section.type] = section.line
    return specs


def _parse_item(spec: _Spec, name: str, item: UciItem) -> object:
    try:
        return spec.parse(item.text)
    except _Invalid as invalid:
        message, fix = invalid.args
        raise ConfigError(message, option=name, line=item.line, fix=fix) from None


def _settings(sections: tuple[UciSection, ...]) -> Settings:
    changes: dict[str, Any] = {}
    lists: dict[str, list[object]] = {}
    where: dict[str, tuple[str, int]] = {}  # field -> (option, line) that set it
    first_seen: dict[str, int] = {}
    for section in sections:
        specs = _check_section(section, first_seen)
        for name, value in section.options.items():
            spec = specs.get(name)
            if spec is None:
                raise _unknown_option(section, name, value.line)
            if value.kind is not spec.kind:
                raise _wrong_kind(spec, name, value.line, value.texts[0])
            parsed = [_parse_item(spec, name, item) for item in value.items]
            if spec.kind is ValueKind.LIST:
                lists.setdefault(spec.field, []).extend(parsed)
            else:
                changes[spec.field] = parsed[0]
            where.setdefault(spec.field, (name, value.line))
    for field, items in lists.items():
        changes[field] = tuple(dict.fromkeys(items))  # drop repeats, keep order
    settings = dataclasses.replace(Settings(), **changes)
    _check_combinations(settings, where)
    return settings


def _wrong_kind(spec: _Spec, name: str, line: int, text: str) -> ConfigError:
    if spec.kind is ValueKind.LIST:
        message = "is written with 'option', but it is a list."
        fix = f"write list {name} {show_value(text)}, one 'list' line per value."
    else:
        message = "is written with 'list', but it takes one value."
        fix = f"write option {name} {show_value(text)}, once."
    return ConfigError(message, option=name, line=line, fix=fix)


def _blame(where: Mapping[str, tuple[str, int]], *fields: str) -> tuple[str, int]:
    """The option and line to name for a bad combination: the first field the file set."""
    default = (_HOME_BY_FIELD[fields[0]][1], 0)
    return next((where[field] for field in fields if field in where), default)


def _check_combinations(settings: Settings, where: Mapping[str, tuple[str, int]]) -> None:
    state, flash = settings.state_dir, settings.flash_dir
    if state == flash or state.is_relative_to(flash) or flash.is_relative_to(state):
        option, line = _blame(where, "state_dir", "flash_dir")
        raise ConfigError(
            f"state_dir {state} and flash_dir {flash} overlap.",
            option=option,
            line=line,
            fix="keep state_dir in RAM (under /tmp) and flash_dir on flash, apart.",
        )
    idle, poll = settings.idle_timeout, settings.counter_poll_interval
    if idle and poll >= idle:
        option, line = _blame(where, "counter_poll_interval", "idle_timeout")
        raise ConfigError(
            f"counters read every {poll:g}s cannot detect an idle time of {idle}s.",
            option=option,
            line=line,
            fix="make counter_poll_interval shorter than session idle_timeout.",
        )


def parse_settings(text: str, source: str = "<config>") -> Settings:
    """Read Settings from UCI text; omitted options keep their defaults; else raise ConfigError."""
    try:
        return _settings(parse_uci(text))
    except ConfigError as error:
        error.add_note(f"in {source}")
        raise


def load_settings(path: Path = DEFAULT_PATH) -> Settings:
    """Read Settings from a UCI file; a missing or unreadable file raises ConfigError too."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_TEXT_CHARS + 1)
    except OSError as error:
        fix = {
            FileNotFoundError: "reinstall the loopspot package, which ships a commented default.",
            PermissionError: "run the agent as root.",
        }.get(type(error), f"check that {path} is a regular file.")
        raise ConfigError(f"cannot read {path}: {error.strerror or error}.", fix=fix) from None

    if len(data) > MAX_TEXT_CHARS:
        raise ConfigError(f"{path} is larger than {MAX_TEXT_CHARS} bytes.", fix=_WRONG_FILE_FIX)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path} is not UTF-8 text.",
            line=data.count(b"\n", 0, error.start) + 1,
            fix="save the file as UTF-8.",
        ) from None
    return parse_settings(text, source=str(path))
