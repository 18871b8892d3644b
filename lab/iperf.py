"""iperf3 between the lab's phones and its wan: a server per port in the wan, TCP clients."""

from __future__ import annotations

import json
import subprocess
import time

from lab import addresses as A
from lab import netns
from lab.errors import LabError
from lab.topology import Lab, Phone

IDLE_TIMEOUT = 60  # a server whose client vanished mid-test restarts itself
GRACE = 20.0


def start_server(lab: Lab, port: int) -> subprocess.Popen[bytes]:
    """`iperf3 -s` on the wan address and `port`, returned once it listens (the lab stops it)."""
    server = lab.popen(
        lab.wan,
        *("iperf3", "-s", "-B", A.WAN_IP, "-p", str(port), "--idle-timeout", str(IDLE_TIMEOUT)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if netns.run(lab.wan, "ss", "-Hltn", f"sport = :{port}").stdout.strip():
            return server
        time.sleep(0.05)
    server.kill()
    raise LabError(f"iperf3 -s did not start on port {port} in the wan namespace")


def tcp_client(
    phone: Phone, port: int, seconds: float, *, download: bool = False, omit: int = 2
) -> subprocess.Popen[str]:
    """Start one TCP test, upload (or `download`), the first `omit` seconds not counted."""
    argv = ["iperf3", "-c", A.WAN_IP, "-p", str(port), "-t", f"{seconds:g}", "-O", str(omit)]
    argv += ["-J", *(["-R"] if download else [])]
    return subprocess.Popen(
        ["ip", "netns", "exec", phone.ns, *argv], stdout=subprocess.PIPE, text=True
    )


def received(test: subprocess.Popen[str], seconds: float) -> float:
    """The bits per second the receiving end of a started test counted."""
    out, _ = test.communicate(timeout=seconds + GRACE)
    try:
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])
    except (ValueError, KeyError) as exc:
        raise LabError(f"iperf3 failed ({test.returncode}): {out[-800:]}") from exc


def tcp_rate(
    phone: Phone, port: int, seconds: float, *, download: bool = False, omit: int = 2
) -> float:
    """One TCP test from start to end: bits per second."""
    return received(tcp_client(phone, port, seconds, download=download, omit=omit), seconds + omit)
