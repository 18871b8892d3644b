"""The whole cloud for lab tests, demo and benchmarks: database, broker, enrolment, ingest.

Everything listens on loopback; routers reach the broker and the enrolment server only
through the wan relay (lab.uplink), so cutting a router's uplink really cuts it off.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from cloud.cli import main as cloud_cli
from cloud.db import make_engine
from cloud.settings import CloudSettings
from lab import addresses as A
from lab.errors import ServiceError
from lab.freeport import free_port, wait_for_port
from lab.polling import wait_until
from lab.topology import Lab
from lab.uplink import start_uplink

WAIT = 20.0


def _stop(process: subprocess.Popen[bytes] | None, kill: bool = False) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class CloudStack:
    """A running cloud beside a lab; `close()` stops every process it started."""

    def __init__(self, lab: Lab, database_url: str, workdir: Path) -> None:
        self.lab = lab
        self.workdir = workdir
        self.settings = CloudSettings(
            database_url=database_url,
            data_dir=workdir / "data",
            broker_port=free_port(),
            public_broker_host=A.WAN_IP,
            public_broker_port=free_port(),
            enrol_host="127.0.0.1",
            enrol_port=free_port(),
            ingest_flush_interval=0.05,
        )
        self.env = {
            **os.environ,
            **{
                "LOOPSPOT_DATABASE_URL": database_url,
                "LOOPSPOT_DATA_DIR": str(self.settings.data_dir),
                "LOOPSPOT_BROKER_PORT": str(self.settings.broker_port),
                "LOOPSPOT_PUBLIC_BROKER_HOST": A.WAN_IP,
                "LOOPSPOT_PUBLIC_BROKER_PORT": str(self.settings.public_broker_port),
                "LOOPSPOT_ENROL_HOST": "127.0.0.1",
                "LOOPSPOT_ENROL_PORT": str(self.settings.enrol_port),
                "LOOPSPOT_INGEST_FLUSH_INTERVAL": "0.05",
            },
        }
        self.broker: subprocess.Popen[bytes] | None = None
        self.uplink: subprocess.Popen[bytes] | None = None
        self.uplinks: list[subprocess.Popen[bytes]] = []  # to the other labs reach() added
        self.enrol: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.web: subprocess.Popen[bytes] | None = None
        self.engine: Engine = make_engine(database_url)

    @property
    def ca_file(self) -> Path:
        """The cloud CA's certificate, which a router needs before it enrols."""
        return self.settings.data_dir / "ca" / "ca.crt"

    @property
    def enrol_url(self) -> str:
        """The enrolment URL as routers reach it."""
        return f"https://{A.WAN_IP}:{self.settings.enrol_port}"

    @property
    def config_file(self) -> Path:
        """The same settings as TOML, for `loopspot-cloud --config FILE ...` by hand."""
        return self.workdir / "cloud.toml"

    def _write_config_file(self) -> None:
        s = self.settings
        self.config_file.write_text(
            f'database_url = "{s.database_url}"\ndata_dir = "{s.data_dir}"\n'
            f'broker_port = {s.broker_port}\npublic_broker_host = "{s.public_broker_host}"\n'
            f"public_broker_port = {s.public_broker_port}\nenrol_port = {s.enrol_port}\n"
        )

    def cli(self, *argv: str) -> Any:
        """`loopspot-cloud --json ARGV` in process; its JSON answer, or ServiceError."""
        out, err = io.StringIO(), io.StringIO()
        old = {k: os.environ.get(k) for k in self.env if k.startswith("LOOPSPOT_")}
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("LOOPSPOT_")})
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cloud_cli(["--json", *argv])
        finally:
            for key, value in old.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        if code != 0:
            raise ServiceError(f"loopspot-cloud {' '.join(argv)} exited {code}: {err.getvalue()}")
        text = out.getvalue().strip()
        return json.loads(text) if text else {}

    def _spawn(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        return subprocess.Popen(argv, env=self.env, stdout=log, stderr=log)

    def start(self, workers: int = 1) -> CloudStack:
        """Set up the cloud and start broker, uplink relay, enrolment and `workers` ingests."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config_file()
        self.cli("init", "--bind", "127.0.0.1")
        self.start_broker()
        self.uplink = start_uplink(self.lab.wan, self._public_ports(), A.WAN_IP)
        self.enrol = self._spawn("enrol", sys.executable, "-m", "cloud.cli", "serve-enrol")
        if not wait_for_port("127.0.0.1", self.settings.enrol_port, WAIT):
            raise ServiceError(f"serve-enrol did not start:\n{self.log('enrol')}")
        for index in range(workers):
            self.start_worker(f"ingest-{index}")
        return self

    def _public_ports(self) -> dict[int, int]:
        return {p: p for p in (self.settings.public_broker_port, self.settings.enrol_port)}

    def reach(self, lab: Lab) -> None:
        """Let another lab's router reach this cloud too, through that lab's own wan."""
        self.uplinks.append(start_uplink(lab.wan, self._public_ports(), A.WAN_IP))

    def start_web(self, port: int) -> None:
        """Start `loopspot-cloud serve` (the dashboard and the JSON API) on 127.0.0.1:`port`."""
        self.env["LOOPSPOT_WEB_PORT"] = str(port)
        self.web = self._spawn("web", sys.executable, "-m", "cloud.cli", "serve")
        if not wait_for_port("127.0.0.1", port, WAIT):
            raise ServiceError(f"the dashboard did not start:\n{self.log('web')}")

    def start_broker(self) -> None:
        """Start Mosquitto with the config `loopspot-cloud init` wrote."""
        config = self.settings.data_dir / "broker" / "mosquitto.conf"
        self.broker = self._spawn("mosquitto", "/usr/sbin/mosquitto", "-c", str(config))
        for port in (self.settings.broker_port, self.settings.public_broker_port):
            if not wait_for_port("127.0.0.1", port, WAIT):
                raise ServiceError(f"mosquitto did not listen on {port}")

    def stop_broker(self, kill: bool = False) -> None:
        """Stop (or kill -9) the broker; its persistence keeps queued messages on a clean stop."""
        _stop(self.broker, kill)

    def start_worker(self, name: str) -> None:
        """Start an ingest worker process with a stable name (its persistent MQTT session)."""
        self.workers[name] = self._spawn(
            name, sys.executable, "-m", "cloud.cli", "ingest", "--worker-name", name
        )

    def wait_subscribed(self, name: str = "ingest-0", timeout: float = WAIT) -> None:
        """Return once worker `name` has subscribed: what routers publish before is lost to it
        (a shared subscription keeps nothing for a worker that never subscribed)."""
        if not wait_until(lambda: "subscribed to" in self.log(name), timeout):
            raise ServiceError(f"{name} did not subscribe within {timeout} s:\n{self.log(name)}")

    def stop_worker(self, name: str, kill: bool = False) -> None:
        """Stop (or kill -9) one ingest worker."""
        _stop(self.workers.pop(name, None), kill)

    def claim(self, merchant: str = "Bistro", site: str = "Main Street") -> tuple[str, str]:
        """A merchant, site and claim code, as an operator makes them: (router_id, code)."""
        with contextlib.suppress(ServiceError):  # already there from an earlier claim
            self.cli("merchant", "create", merchant)
        sites = [s for s in self.cli("sites")["sites"] if s["site"] == site]
        if not sites:
            self.cli("site", "create", "--merchant", merchant, site)
            sites = [s for s in self.cli("sites")["sites"] if s["site"] == site]
        made = self.cli("claim", "create", "--site", str(sites[0]["id"]))
        return str(made["router_id"]), str(made["code"])

    def log(self, name: str) -> str:
        """A service's log so far."""
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        """Stop everything (idempotent)."""
        for name in list(self.workers):
            self.stop_worker(name)
        _stop(self.web)
        _stop(self.enrol)
        _stop(self.uplink)
        for uplink in self.uplinks:
            _stop(uplink)
        self.stop_broker()
        self.engine.dispose()
