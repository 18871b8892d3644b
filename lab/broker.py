"""A throwaway Mosquitto broker on loopback, with a generated config (and ACL, if given)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from lab.errors import ServiceError
from lab.freeport import free_port, wait_for_port

MOSQUITTO = "/usr/sbin/mosquitto"


class Broker:
    """`mosquitto -c <generated>` on 127.0.0.1:<free port>; stop() always cleans up.

    `listener_config` is appended to the listener (e.g. password_file, acl_file, TLS lines);
    with none the broker allows anonymous clients. The broker keeps its port across
    restart(), so clients reconnect to the same address.
    """

    def __init__(
        self, listener_config: str = "", workdir: Path | None = None, port: int | None = None
    ) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="loopspot-broker-"))
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.listener_config = listener_config
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.workdir / "mosquitto.log"

    def config_text(self) -> str:
        """The mosquitto.conf this broker runs with."""
        anonymous = (
            ""
            if "password_file" in self.listener_config
            or ("require_certificate true" in self.listener_config)
            else "allow_anonymous true\n"
        )
        return (
            "user root\n"  # started as root it would drop to 'mosquitto' and lose the files
            "persistence false\n"
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 100\n"
            f"listener {self.port} {self.host}\n"
            f"{anonymous}{self.listener_config}\n"
        )

    def start(self, timeout: float = 10.0) -> Broker:
        """Start the broker and return once it accepts connections."""
        if not Path(MOSQUITTO).exists():
            raise ServiceError(f"{MOSQUITTO} is missing: apt-get install mosquitto")
        config = self.workdir / "mosquitto.conf"
        config.write_text(self.config_text())
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        if not wait_for_port(self.host, self.port, timeout):
            self.stop()
            raise ServiceError(f"mosquitto did not start on port {self.port}:\n{self.logs()}")
        return self

    def stop(self) -> None:
        """Stop the broker (idempotent)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """kill -9 the broker, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def restart(self, down_for: float = 0.0) -> None:
        """Stop, optionally stay down for a while, and start again on the same port."""
        import time

        self.stop()
        time.sleep(down_for)
        self.start()

    def logs(self) -> str:
        """The broker's log so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def remove(self) -> None:
        """Stop and delete the work folder."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()
