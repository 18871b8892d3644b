"""The agent's exceptions: one root, narrow subclasses."""

from __future__ import annotations


class LoopspotError(Exception):
    """Root of every error the agent raises on purpose."""


class ConfigError(LoopspotError):
    """A configuration file or option is wrong; the message names the option, line and fix."""

    def __init__(self, message: str, *, option: str = "", line: int = 0, fix: str = "") -> None:
        self.option = option
        self.line = line
        self.fix = fix
        where = f"line {line}: " if line else ""
        what = f"option '{option}': " if option else ""
        hint = f" Fix: {fix}" if fix else ""
        super().__init__(f"{where}{what}{message}{hint}")


class GateError(LoopspotError):
    """nftables refused a change; nothing was applied (every change is one transaction)."""


class ClientUnknown(LoopspotError):
    """A client's MAC address could not be resolved from its IP address."""


class ControlError(LoopspotError):
    """A control-socket request failed or the agent is not running."""
