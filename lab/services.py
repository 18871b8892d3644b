"""The wan namespace's services: the web server (lab.wan) and the ISP's DNS (dnsmasq)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from lab import netns
from lab.addresses import WAN_DNS_IP, WEB_HOST, WEB_IP
from lab.client import connect
from lab.dns import PROBE_HOSTS, SITE_NAMES, dns_query, dnsmasq_argv
from lab.errors import LabError, ServiceError

REPO_ROOT = Path(__file__).resolve().parent.parent
HTTP_PORT = 80
TLS_PORT = 443
_POLL = 0.02
_STOP_GRACE = 3.0


class WanServices:
    """Start, wait for and stop the wan's web server and DNS, logging into `workdir`."""

    def __init__(self, wan: str, workdir: Path) -> None:
        self.wan = wan
        self.workdir = workdir
        self.web_log = workdir / "wan-web.log"
        self.dns_log = workdir / "wan-dnsmasq.log"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    @property
    def running(self) -> bool:
        """True while both services' processes are alive."""
        return len(self._procs) == 2 and all(p.poll() is None for p in self._procs.values())

    def _spawn(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None) -> None:
        out = log.open("ab")
        self._logs.append(out)
        self._procs[name] = netns.popen(
            self.wan, *argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT
        )

    def start(self, timeout: float = 10.0) -> None:
        """Start both services unless running; return once each answers from the wan."""
        if self.running:
            return
        self.stop()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
        )
        self._spawn(
            "dnsmasq",
            dnsmasq_argv(WAN_DNS_IP, SITE_NAMES, PROBE_HOSTS, self.workdir / "dnsmasq.pid"),
            self.dns_log,
            None,
        )
        web_argv = [sys.executable, "-m", "lab.wan", "--port", str(HTTP_PORT)]
        self._spawn("web", [*web_argv, "--tls-port", str(TLS_PORT)], self.web_log, env)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _check_alive(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                log = self.dns_log if name == "dnsmasq" else self.web_log
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise ServiceError(f"wan {name} exited {proc.returncode}:\n{tail}")

    def _answers(self) -> bool:
        try:
            for port in (HTTP_PORT, TLS_PORT):
                connect(self.wan, WEB_IP, port, timeout=0.5).close()
            return dns_query(self.wan, WEB_HOST, WAN_DNS_IP, timeout=0.5) == [WEB_IP]
        except (OSError, LabError):
            return False

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            if self._answers():
                return
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"wan services did not answer within {timeout}s; logs in {self.workdir}"
                )
            time.sleep(_POLL)

    def stop(self) -> None:
        """Stop both services (SIGTERM, then SIGKILL after a grace period). Idempotent."""
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs.values():
            try:
                proc.wait(_STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        for out in self._logs:
            out.close()
        self._logs.clear()
