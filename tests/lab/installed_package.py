"""The .ipk unpacked into a root folder, and the agent run from there, as a router runs it."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from pathlib import Path

from lab import addresses as A
from lab.router import RouterAgent
from lab.topology import Lab
from tests.deploy.ipk import build_ipk

# The router's Python: Debian's, as OpenWrt's is the system's. The checkout's .venv (and
# its aiohttp, paho-mqtt 2.x and cryptography) is not on its path.
ROUTER_PYTHON = "/usr/bin/python3"
ROUTER_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def build_package(out: Path) -> Path:
    """Build the .ipk with the checkout's build script into `out`; its path."""
    done = subprocess.run(
        [sys.executable, str(build_ipk.__file__), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return Path(done.stdout.strip())


def install(ipk: Path, root: Path) -> Path:
    """Unpack the package's data.tar.gz into `root`, which stands for the router's /."""
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(ipk, "r:gz") as outer:
        member = outer.extractfile("./data.tar.gz")
        assert member is not None, f"{ipk} has no data.tar.gz"
        with tarfile.open(fileobj=member, mode="r:gz") as data:
            data.extractall(root, filter="tar")
    return root


def shipped_config(root: Path, changes: Mapping[str, Mapping[str, str | list[str]]]) -> str:
    """The package's /etc/config/loopspot with `changes` (section -> option -> value).

    An option already in the section is replaced where it stands, a new one is added at
    the section's end; a section that is not there is added.
    """
    out: list[str] = []
    pending: dict[str, str | list[str]] = {}
    replaced: set[str] = set()
    seen: set[str] = set()

    def end_section() -> None:
        for name, value in pending.items():
            out.extend(_option_lines(name, value))
        pending.clear()
        replaced.clear()

    for line in (root / "etc/config/loopspot").read_text().splitlines():
        section = re.match(r"^config\s+(\w+)(?:\s+'?(\w+)'?)?", line)
        option = re.match(r"^\s*(?:option|list)\s+(\w+)\s", line)
        if section:
            end_section()
            name = section[2] or section[1]
            seen.add(name)
            pending.update(changes.get(name, {}))
        elif option and option[1] in pending:
            out.extend(_option_lines(option[1], pending.pop(option[1])))
            replaced.add(option[1])
            continue
        elif option and option[1] in replaced:
            continue  # the rest of a list that was replaced
        out.append(line)
    end_section()
    for name, options in changes.items():
        if name not in seen:
            out.append(f"config {name} '{name}'")
            for option_name, value in options.items():
                out.extend(_option_lines(option_name, value))
    return "\n".join(out) + "\n"


def _option_lines(name: str, value: str | list[str]) -> list[str]:
    if isinstance(value, list):
        return [f"\tlist {name} '{item}'" for item in value]
    return [f"\toption {name} '{value}'"]


def lab_changes(workdir: Path, root: Path) -> dict[str, dict[str, str | list[str]]]:
    """What the lab changes in the shipped config: its addresses and its folders only."""
    return {
        "agent": {
            "lan_interface": [A.LAN_BRIDGE],
            "portal_address": A.ROUTER_LAN_IP,
            "state_dir": str(workdir / "tmpfs"),
            "flash_dir": str(workdir / "flash"),
            "control_socket": str(workdir / "loopspot.sock"),
        },
        "portal": {"templates_dir": str(root / "usr/share/loopspot/portal_templates")},
        "presence": {"dhcp_leases": str(workdir / "dhcp.leases")},
    }


class InstalledAgent(RouterAgent):
    """`/usr/bin/loopspot-agent run` from the unpacked package, in the lab's router.

    It runs with a clean environment (only PATH and `env`), from `/`, under the system's
    Python, so nothing of the checkout can be imported.
    """

    def __init__(
        self,
        lab: Lab,
        root: Path,
        changes: Mapping[str, Mapping[str, str | list[str]]] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(lab)
        self.root = root
        self.env = dict(env or {})
        merged = lab_changes(self.workdir, root)
        for section, options in (changes or {}).items():
            merged[section] = {**merged.get(section, {}), **options}
        self.config.write_text(shipped_config(root, merged))

    @property
    def launcher(self) -> Path:
        """The installed /usr/bin/loopspot-agent."""
        return self.root / "usr/bin/loopspot-agent"

    @property
    def _command(self) -> tuple[str, ...]:
        settings = [f"{k}={v}" for k, v in sorted(self.env.items())]
        return (
            "env",
            "-i",
            "-C",
            "/",
            f"PATH={ROUTER_PATH}",
            *settings,
            ROUTER_PYTHON,
            str(self.launcher),
            "--config",
            str(self.config),
        )

    def config_value(self, section: str, option: str) -> str:
        """An option as the agent's config file has it."""
        text = self.config.read_text()
        block = re.search(rf"^config \w+ '?{section}'?\n(.*?)(?=^config |\Z)", text, re.M | re.S)
        assert block, f"no section {section} in {self.config}"
        found = re.findall(rf"^\s*option {option} '([^']*)'", block[1], re.M)
        assert found, f"no option {section}.{option} in {self.config}"
        return str(found[-1])
