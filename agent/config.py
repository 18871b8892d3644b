"""Read the agent's Settings from its UCI file, /etc/config/loopspot, refusing what would break."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from agent import config_values as v
from agent.errors import ConfigError
from agent.settings import LANGUAGES, Settings
from agent.uci import MAX_TEXT_CHARS, UciItem, UciSection, ValueKind, parse_uci, show_value

DEFAULT_PATH = Path("/etc/config/loopspot")
_WRONG_FILE_FIX = "check that this is the loopspot config file and not another file."


@dataclass(frozen=True, slots=True)
class _Spec:
    field: str
    parse: Callable[[str], object]
    kind: ValueKind = ValueKind.OPTION


_SECTIONS: Mapping[str, Mapping[str, _Spec]] = {
    "agent": {
        "lan_interface": _Spec("lan_interfaces", v.interface, ValueKind.LIST),
        "portal_address": _Spec("portal_address", v.portal_address),
        "portal_port": _Spec("portal_port", v.port),
        "portal_https_port": _Spec("portal_https_port", v.port),
        "state_dir": _Spec("state_dir", v.path),
        "flash_dir": _Spec("flash_dir", v.path),
        # Snapshots write flash: more often wears it, less often loses events in a power cut.
        "snapshot_interval": _Spec(
            "snapshot_interval", partial(v.duration, least=v.MINUTE, most=v.DAY)
        ),
        "control_socket": _Spec("control_socket", partial(v.path, socket=True)),
        "nft_backend": _Spec("nft_backend", partial(v.choice, choices=v.NFT_BACKENDS)),
        "counter_poll_interval": _Spec(
            "counter_poll_interval", partial(v.number, least=0.5, most=60)
        ),
    },
    "session": {
        "timeout": _Spec("session_timeout", partial(v.duration, least=1, zero=True)),
        "idle_timeout": _Spec("idle_timeout", partial(v.duration, least=1, zero=True)),
        "data_quota": _Spec("data_quota", v.size),
    },
    "portal": {
        "template": _Spec("template", partial(v.token, pattern=v.TEMPLATE, rule=v.TEMPLATE_RULE)),
        "templates_dir": _Spec("templates_dir", v.path),
        "language": _Spec("language", partial(v.choice, choices=("auto", *LANGUAGES))),
        "terms_version": _Spec(
            "terms_version", partial(v.token, pattern=v.TERMS, rule=v.TERMS_RULE)
        ),
        "site_name": _Spec("site_name", v.site_name),
        "rate_limit": _Spec("rate_limit", partial(v.number, least=0.1, most=1000)),
        "rate_burst": _Spec("rate_burst", partial(v.whole, least=1, most=10000, what="burst size")),
    },
    "walled_garden": {
        "domain": _Spec("walled_garden_domains", v.domain, ValueKind.LIST),
        "address": _Spec("walled_garden_addresses", v.address, ValueKind.LIST),
    },
    "cloud": {
        "enabled": _Spec("cloud_enabled", v.boolean),
        "router_id": _Spec("cloud_router_id", v.router_id),
        "broker_host": _Spec("cloud_broker_host", v.host),
        "broker_port": _Spec("cloud_broker_port", partial(v.whole, least=1, most=65535)),
        "tls": _Spec("cloud_tls", v.boolean),
        "credentials_dir": _Spec("cloud_credentials_dir", v.path),
        "ca_file": _Spec("cloud_ca_file", v.path),
        "cert_file": _Spec("cloud_cert_file", v.path),
        "key_file": _Spec("cloud_key_file", v.path),
        "username": _Spec("cloud_username", v.username),
        "password_file": _Spec("cloud_password_file", v.path),
        "alliance_key_file": _Spec("cloud_alliance_key_file", v.path),
        # The broker declares the router offline after 1.5 keepalives without a packet.
        "keepalive": _Spec("cloud_keepalive", partial(v.duration, least=5, most=20 * v.MINUTE)),
        "status_interval": _Spec("cloud_status_interval", partial(v.duration, least=1, most=v.DAY)),
        "spool_max_events": _Spec(
            "spool_max_events", partial(v.whole, least=10, most=1_000_000, what="number of events")
        ),
        # Snapshots of the spool write flash: more often wears it, less often risks events.
        "spool_flush_interval": _Spec(
            "spool_flush_interval", partial(v.duration, least=10, most=v.DAY)
        ),
    },
    "presence": {
        "dhcp_leases": _Spec("presence_dhcp_leases", v.path),
        "interval": _Spec("presence_interval", partial(v.duration, least=1, most=v.HOUR)),
        "left_after": _Spec("presence_left_after", partial(v.duration, least=10, most=v.DAY)),
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
    except v.Invalid as invalid:
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
    _check_cloud(settings, where)


def _check_cloud(settings: Settings, where: Mapping[str, tuple[str, int]]) -> None:
    if settings.portal_https_port == settings.portal_port:
        option, line = _blame(where, "portal_https_port", "portal_port")
        raise ConfigError(
            "the portal cannot serve HTTP and HTTPS on one port.",
            option=option,
            line=line,
            fix="give portal_https_port another port than portal_port (8443, say).",
        )
    if settings.presence_interval >= settings.presence_left_after:
        option, line = _blame(where, "presence_interval", "presence_left_after")
        raise ConfigError(
            f"a device seen every {settings.presence_interval}s would leave and come back "
            f"after {settings.presence_left_after}s.",
            option=option,
            line=line,
            fix="make presence interval shorter than left_after.",
        )
    if (settings.cloud_cert_file is None) != (settings.cloud_key_file is None):
        option, line = _blame(where, "cloud_cert_file", "cloud_key_file")
        raise ConfigError(
            "a client certificate needs its key, and a key its certificate.",
            option=option,
            line=line,
            fix="set both cert_file and key_file in 'config cloud', or neither.",
        )
    if settings.cloud_password_file is not None and not settings.cloud_username:
        option, line = _blame(where, "cloud_password_file")
        raise ConfigError(
            "a password without a user name.",
            option=option,
            line=line,
            fix="add option username in 'config cloud', or remove password_file.",
        )


def check_value(section: str, option: str, text: str) -> object:
    """The typed value of one option, checked as if written in the file; else ConfigError."""
    try:
        return _SECTIONS[section][option].parse(text)
    except v.Invalid as invalid:
        message, fix = invalid.args
        raise ConfigError(message, option=option, fix=fix) from None


def check_settings(settings: Settings) -> Settings:
    """`settings` if its options agree with each other (as a file's would); else ConfigError."""
    _check_combinations(settings, {})
    return settings


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
