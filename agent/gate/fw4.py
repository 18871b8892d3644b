"""What of OpenWrt's own firewall (fw4) the gate depends on, read from its UCI file."""

from __future__ import annotations

from pathlib import Path

from agent.config_values import Invalid, boolean
from agent.errors import ConfigError
from agent.uci import parse_uci

FIREWALL_CONFIG = Path("/etc/config/firewall")
FLOW_OFFLOADING_FIX = (
    "uci set firewall.@defaults[0].flow_offloading=0; uci commit firewall; fw4 reload"
)


def flow_offloading_on(path: Path = FIREWALL_CONFIG) -> bool:
    """True when fw4 offloads established connections past every forward chain.

    Offloaded packets skip the gate's `forward` chain: its counters miss their bytes, so
    data quotas do not hold, and a session that times out keeps its open connections.
    False where there is no fw4 file, or one that cannot be read (then fw4 has no say).
    """
    try:
        sections = parse_uci(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ConfigError):
        return False
    for section in sections:
        value = section.options.get("flow_offloading")
        if section.type != "defaults" or value is None:
            continue
        try:
            if boolean(value.texts[0]):
                return True
        except Invalid:
            continue
    return False
