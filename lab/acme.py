"""An ACME CA for the lab: Debian's pebble, validating DNS-01 against pebble-challtestsrv.

Both listen on loopback only. pebble-challtestsrv is the DNS server pebble asks, and the
cloud sets the challenge's TXT record through its management API (cloud.portal_cert's
ChallTestSrv). pebble issues from a root it makes at each start: `root_pem()` fetches it,
for a lab phone to trust.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from cloud.ca import CertificateAuthority, server_names
from lab.errors import ServiceError
from lab.freeport import free_port, wait_for_port

PEBBLE, CHALLTESTSRV = "/usr/bin/pebble", "/usr/bin/pebble-challtestsrv"
WAIT = 20.0
LOOPBACK = "127.0.0.1"


class PebbleStack:
    """pebble and its DNS, started in `workdir`; `close()` stops both."""

    def __init__(self, workdir: Path, dns_server: str = "") -> None:
        self.workdir = workdir
        self.dns_server = dns_server  # host:port pebble asks instead of challtestsrv (BIND)
        self.acme_port, self.management_port = free_port(), free_port()
        self.dns_port, self.dns_api_port = free_port(), free_port()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.tls_ca = workdir / "tls-ca" / "ca.crt"  # what pebble's own HTTPS is signed by

    @property
    def directory(self) -> str:
        """The ACME directory URL."""
        return f"https://{LOOPBACK}:{self.acme_port}/dir"

    @property
    def dns_api(self) -> str:
        """The cloud's acme_dns setting for this DNS server."""
        return f"challtestsrv+http://{LOOPBACK}:{self.dns_api_port}"

    def cloud_env(self, portal_domain: str) -> dict[str, str]:
        """The LOOPSPOT_* settings that point the cloud's portal-cert at this CA."""
        return {
            "LOOPSPOT_PORTAL_DOMAIN": portal_domain,
            "LOOPSPOT_ACME_DIRECTORY": self.directory,
            "LOOPSPOT_ACME_CA_FILE": str(self.tls_ca),
            "LOOPSPOT_ACME_DNS": self.dns_api,
        }

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.processes.append(subprocess.Popen(argv, env=env, stdout=log, stderr=log))

    def log(self, name: str) -> str:
        """A service's log so far."""
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> PebbleStack:
        """Start the DNS server, then pebble; ServiceError if either does not come up."""
        missing = [p for p in (PEBBLE, CHALLTESTSRV) if not shutil.which(p)]
        if missing:
            raise ServiceError(f"{', '.join(missing)} missing: apt-get install pebble")
        self.workdir.mkdir(parents=True, exist_ok=True)
        ca = CertificateAuthority.load_or_create(self.tls_ca.parent, datetime.now(UTC))
        tls = ca.ensure_server_credentials(
            server_names(LOOPBACK, "localhost"), self.workdir / "tls", datetime.now(UTC)
        )
        config = self.workdir / "pebble.json"
        config.write_text(
            json.dumps(
                {
                    "pebble": {
                        "listenAddress": f"{LOOPBACK}:{self.acme_port}",
                        "managementListenAddress": f"{LOOPBACK}:{self.management_port}",
                        "certificate": str(tls.certificate),
                        "privateKey": str(tls.key),
                        "httpPort": 5002,  # unused: only dns-01 is answered in the lab
                        "tlsPort": 5001,
                        "ocspResponderURL": "",
                        "externalAccountBindingRequired": False,
                    }
                }
            )
        )
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
        if not self.dns_server:
            self._start_challtestsrv(env)
        dns = self.dns_server or f"{LOOPBACK}:{self.dns_port}"
        self._spawn("pebble", [PEBBLE, "-config", str(config), "-dnsserver", dns], env)
        if not wait_for_port(LOOPBACK, self.management_port, WAIT):
            raise ServiceError(f"pebble did not start:\n{self.log('pebble')}")
        return self

    def _start_challtestsrv(self, env: dict[str, str]) -> None:
        self._spawn(
            "challtestsrv",
            [
                CHALLTESTSRV,
                "-management",
                f"{LOOPBACK}:{self.dns_api_port}",
                "-dns01",
                f"{LOOPBACK}:{self.dns_port}",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ],
            env,
        )
        if not wait_for_port(LOOPBACK, self.dns_api_port, WAIT):
            raise ServiceError(f"pebble-challtestsrv did not start:\n{self.log('challtestsrv')}")

    def root_pem(self) -> str:
        """The root pebble issues from in this run (its management interface's /roots/0)."""
        context = ssl.create_default_context(cafile=str(self.tls_ca))
        url = f"https://{LOOPBACK}:{self.management_port}/roots/0"
        with urllib.request.urlopen(url, context=context, timeout=10) as answer:
            text: str = answer.read().decode()
        return text

    def close(self) -> None:
        """Stop both (idempotent)."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes.clear()
