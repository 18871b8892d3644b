"""The agent under test, running for real in the lab's router namespace."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lab import addresses as A
from lab import netns
from lab.errors import LabError
from lab.topology import Lab

START_TIMEOUT = 20.0
LAB_ROUTER_ID = "lab-router"
LAB_ALLIANCE_KEY = bytes(range(32))  # the lab alliance's key: tests compute device ids with it
MQTT_PORT = 1883  # where the lab's uplink relays the broker, on the wan address


def cloud_section(workdir: Path, **overrides: str) -> dict[str, str]:
    """`config cloud` for a lab broker at the wan address (plain MQTT); writes the alliance key."""
    key_file = workdir / "alliance.key"
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text(LAB_ALLIANCE_KEY.hex() + "\n")
    options = {
        "enabled": "1",
        "router_id": LAB_ROUTER_ID,
        "broker_host": A.WAN_IP,
        "broker_port": str(MQTT_PORT),
        "tls": "0",
        "alliance_key_file": str(key_file),
        "keepalive": "5",
        "status_interval": "30",
        "spool_flush_interval": "10",
    }
    return options | overrides


def agent_config(
    workdir: Path,
    sections: Mapping[str, Mapping[str, str | list[str]]] | None = None,
    **overrides: str | list[str],
) -> str:
    """A UCI config for the agent in the lab; keyword arguments override `option`s by name.

    `sections` adds whole sections (e.g. {"cloud": cloud_section(...)}) after the lab's own.
    """
    options: dict[str, dict[str, str | list[str]]] = {
        "agent": {
            "lan_interface": [A.LAN_BRIDGE],
            "portal_address": A.ROUTER_LAN_IP,
            "portal_port": "2050",
            "state_dir": str(workdir / "tmpfs"),
            "flash_dir": str(workdir / "flash"),
            "snapshot_interval": "60",
            "control_socket": str(workdir / "loopspot.sock"),
            "nft_backend": "auto",
            "counter_poll_interval": "0.5",
        },
        "session": {"timeout": "1h", "idle_timeout": "15m", "data_quota": "0"},
        "portal": {
            "language": "auto",
            "terms_version": "2026-11",
            "site_name": "Lab Café",
            "rate_limit": "50",
            "rate_burst": "100",
        },
        "walled_garden": {"address": [A.GARDEN_IP]},
    }
    for key, value in overrides.items():
        section = next((s for s, opts in options.items() if key in opts), None)
        if section is None:
            raise LabError(f"no agent option {key!r} in the lab config")
        options[section][key] = value
    for name, extra in (sections or {}).items():
        options[name] = dict(extra)
    lines: list[str] = []
    for section, opts in options.items():
        lines.append(f"config {section} '{section}'")
        for name, value in opts.items():
            for item in value if isinstance(value, list) else [value]:
                keyword = "list" if isinstance(value, list) else "option"
                lines.append(f"\t{keyword} {name} '{item}'")
        lines.append("")
    return "\n".join(lines)


class RouterAgent:
    """`loopspot-agent run` in the router namespace, with its config, socket and log.

    Set `environment` to replace os.environ for the agent and its commands (lab.hidden's).
    """

    def __init__(
        self,
        lab: Lab,
        sections: Mapping[str, Mapping[str, str | list[str]]] | None = None,
        **options: str | list[str],
    ) -> None:
        self.lab = lab
        self.environment: Mapping[str, str] | None = None
        self.workdir = lab.workdir / "agent"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = self.workdir / "loopspot.uci"
        self.config.write_text(agent_config(self.workdir, sections, **options))
        self.log = self.workdir / "agent.log"
        self.socket = self.workdir / "loopspot.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def _command(self) -> tuple[str, ...]:
        return (sys.executable, "-m", "agent.cli", "--config", str(self.config))

    @property
    def portal(self) -> str:
        """The portal's base URL as phones reach it."""
        return f"http://{A.ROUTER_LAN_IP}:2050"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the agent and return once its control socket answers."""
        with self.log.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.process = self.lab.popen(
                self.lab.router,
                *self._command,
                "run",
                "--log-level",
                "DEBUG",
                stdout=log,
                stderr=log,
                env=self.environment,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LabError(f"the agent exited with {self.process.returncode}:\n{self.logs()}")
            if self.socket.exists() and self.ctl("status").returncode == 0:
                return
            time.sleep(0.05)
        raise LabError(f"the agent did not start within {timeout}s:\n{self.logs()}")

    def kill(self) -> None:
        """kill -9, as a crash or the OOM killer would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """A clean stop (SIGTERM)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `loopspot-agent --config ... ARGS` in the router namespace."""
        return netns.run(
            self.lab.router, *self._command, *args, check=False, timeout=30, env=self.environment
        )

    def ctl_json(self, *args: str) -> dict[str, Any]:
        """`ctl(... --json)`, parsed; raise LabError when the agent refused."""
        done = self.ctl("--json", *args)
        if done.returncode != 0:
            raise LabError(f"loopspot-agent {' '.join(args)} failed: {done.stderr}{done.stdout}")
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def nft(self, *args: str) -> str:
        """Run `nft ARGS` in the router namespace."""
        return netns.run(self.lab.router, "nft", *args).stdout

    def logs(self) -> str:
        """The agent's log so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""
