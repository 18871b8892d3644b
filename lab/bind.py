"""An operator's ACME zone in the lab: BIND, taking TSIG-signed dynamic updates (RFC 2136).

It is the DNS a real operator runs for `portal_domain`: the cloud writes the challenge's
TXT record with an update, and pebble asks this server for it. Loopback only.
"""

from __future__ import annotations

import base64
import secrets
import subprocess
from pathlib import Path

from lab.errors import ServiceError
from lab.freeport import free_port, wait_for_port

NAMED = "/usr/sbin/named"
KEY_NAME = "loopspot-acme"
LOOPBACK = "127.0.0.1"
WAIT = 20.0


class BindZone:
    """`named` serving one zone that KEY_NAME may update TXT records in."""

    def __init__(self, workdir: Path, zone: str) -> None:
        self.workdir = workdir
        self.zone = zone.rstrip(".")
        self.port = free_port()
        self.key_file = workdir / "acme-tsig.key"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def acme_dns(self) -> str:
        """The cloud's acme_dns setting for this zone."""
        return f"rfc2136://{LOOPBACK}:{self.port}/{self.zone}"

    @property
    def address(self) -> str:
        """host:port, as pebble's -dnsserver takes it."""
        return f"{LOOPBACK}:{self.port}"

    def tsig_block(self, secret: str) -> str:
        """A BIND key block, as `tsig-keygen -a hmac-sha256 NAME` prints it."""
        return f'key "{KEY_NAME}" {{\n\talgorithm hmac-sha256;\n\tsecret "{secret}";\n}};\n'

    def start(self) -> BindZone:
        """Write the config, the zone and the key, and start named in the foreground."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        secret = base64.b64encode(secrets.token_bytes(32)).decode()
        self.key_file.write_text(self.tsig_block(secret))
        self.key_file.chmod(0o600)
        zone_file = self.workdir / f"{self.zone}.zone"
        zone_file.write_text(
            f"$TTL 60\n@ IN SOA ns.{self.zone}. hostmaster.{self.zone}. 1 60 60 600 60\n"
            f"@ IN NS ns.{self.zone}.\nns IN A {LOOPBACK}\n"
        )
        config = self.workdir / "named.conf"
        config.write_text(
            f'options {{\n\tdirectory "{self.workdir}";\n\tpid-file "{self.workdir}/named.pid";\n'
            f"\tlisten-on port {self.port} {{ {LOOPBACK}; }};\n\tlisten-on-v6 {{ none; }};\n"
            "\trecursion no;\n\tdnssec-validation no;\n};\n"
            f'include "{self.key_file}";\n'
            f'zone "{self.zone}" {{\n\ttype primary;\n\tfile "{zone_file}";\n'
            f"\tupdate-policy {{ grant {KEY_NAME} zonesub TXT; }};\n}};\n"
        )
        log = (self.workdir / "named.log").open("ab")
        self.process = subprocess.Popen(
            [NAMED, "-g", "-4", "-c", str(config)], stdout=log, stderr=log
        )
        if not wait_for_port(LOOPBACK, self.port, WAIT):
            self.close()
            raise ServiceError(f"named did not start:\n{self.log()[-2000:]}")
        return self

    def log(self) -> str:
        """named's log so far."""
        path = self.workdir / "named.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        """Stop named (idempotent)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
