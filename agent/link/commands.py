"""What the cloud may change and ask, decided without I/O: config checks and the allow-list.

A pushed config is checked by the same parsers as the UCI file, so a value the file would
refuse is refused here too, with the same fix. There is no shell: a command is one of
CommandAction's values, and anything else is answered "unknown action".
"""

from __future__ import annotations

import dataclasses
import enum
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from agent.config import check_settings, check_value
from agent.errors import ConfigError
from agent.link.errors import LinkError
from agent.settings import Settings
from agent.wire import MAX_TEXT, Ack, CommandAction, RouterConfig, device_id

CONFIG_REF, COMMAND_REF = "config", "cmd"
UNKNOWN_ACTION = "unknown action"
REMEMBERED_COMMANDS = 256  # a redelivered command is answered again, never run twice

# Wire field -> (section, option) of the UCI file whose parser checks it.
_OPTIONS: dict[str, tuple[str, str]] = {
    "session_timeout": ("session", "timeout"),
    "idle_timeout": ("session", "idle_timeout"),
    "data_quota": ("session", "data_quota"),
    "site_name": ("portal", "site_name"),
    "terms_version": ("portal", "terms_version"),
    "walled_garden_domains": ("walled_garden", "domain"),
    "walled_garden_addresses": ("walled_garden", "address"),
    "download_limit": ("session", "download_limit"),
    "upload_limit": ("session", "upload_limit"),
    "speed_classes": ("session", "speed_class"),
    "trusted_device_ids": ("trusted", "device_id"),
}
LIVE_FIELDS = tuple(_OPTIONS)  # what a pushed config can change, all of it without a restart
ALLOWED_ACTIONS = frozenset(a for a in CommandAction if a is not CommandAction.UNKNOWN)


class ConfigRefused(LinkError):
    """A pushed config breaks a rule; nothing of it was applied. The message names the field."""


class Verdict(enum.Enum):
    """What to do with a pushed config, by its version."""

    APPLY = "apply"  # newer than the applied one
    REPEAT = "repeat"  # the applied one again (a retained redelivery): acknowledge, change nothing
    STALE = "stale"  # older: ignore


def judge(applied_version: int, config: RouterConfig) -> Verdict:
    """Whether `config` is new, a repeat, or stale against the applied version."""
    if config.version > applied_version:
        return Verdict.APPLY
    return Verdict.REPEAT if config.version == applied_version else Verdict.STALE


def _checked(name: str, value: Any) -> Any:
    section, option = _OPTIONS[name]
    if isinstance(value, tuple):
        return tuple(dict.fromkeys(check_value(section, option, str(item)) for item in value))
    return check_value(section, option, str(value))


def settings_with(settings: Settings, config: RouterConfig) -> Settings:
    """`settings` with what `config` carries, every value checked; else ConfigRefused."""
    if config.version < 1:
        raise ConfigRefused("version: must be 1 or more")
    changes: dict[str, Any] = {}
    for name in LIVE_FIELDS:
        value = getattr(config, name)
        if value is None:
            continue  # the cloud does not set it: the router's own value stays
        try:
            changes[name] = _checked(name, value)
        except ConfigError as error:
            raise ConfigRefused(f"{name}: {error}"[:MAX_TEXT]) from None
    candidate = dataclasses.replace(settings, **changes)
    try:
        return check_settings(candidate)
    except ConfigError as error:  # pushed values that clash with the router's own options
        fields = ", ".join(live_changes(settings, candidate)) or "config"
        raise ConfigRefused(f"{fields}: {error}"[:MAX_TEXT]) from None


def live_changes(before: Settings, after: Settings) -> tuple[str, ...]:
    """Names of the live fields that differ."""
    return tuple(name for name in LIVE_FIELDS if getattr(before, name) != getattr(after, name))


def config_ack(router_id: str, version: int, error: str, at: float) -> Ack:
    """The answer to config `version`: ok when `error` is empty."""
    return Ack(router_id, CONFIG_REF, str(version), not error, error[:MAX_TEXT], round(at, 3))


def command_ack(router_id: str, command_id: str, error: str, at: float) -> Ack:
    """The answer to command `command_id`: ok when `error` is empty."""
    return Ack(router_id, COMMAND_REF, command_id, not error, error[:MAX_TEXT], round(at, 3))


def find_device(alliance_key: bytes, wanted: str, macs: Iterable[str]) -> str | None:
    """The MAC among `macs` whose device_id is `wanted`, or None."""
    return next((mac for mac in macs if device_id(alliance_key, mac) == wanted), None)


class RecentCommands:
    """The last answers by command id, so a redelivered command is answered, not run again."""

    def __init__(self, size: int = REMEMBERED_COMMANDS) -> None:
        self.size = size
        self._acks: OrderedDict[str, Ack] = OrderedDict()

    def answer(self, command_id: str) -> Ack | None:
        """The answer already given to `command_id`, if any."""
        return self._acks.get(command_id)

    def remember(self, ack: Ack) -> None:
        """Keep `ack` as the answer to its command id, forgetting the oldest past `size`."""
        self._acks[ack.id] = ack
        self._acks.move_to_end(ack.id)
        while len(self._acks) > self.size:
            self._acks.popitem(last=False)
