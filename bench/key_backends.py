"""What the router's key work costs with each backend (cryptography, the openssl tool).

For each backend, in this process: the median time of each operation an enrolment or a
renewal does (make a key, sign a request, derive the public key, check the issuer), and
of the four together. Then, in a fresh process each, the peak RSS of a renewal's key work
as `python -m agent.renewal` would do it: with cryptography; with the openssl tool while
cryptography is installed; and with the openssl tool where cryptography is hidden
(lab.hidden), as on a MIPS router on OpenWrt 25.12; and each openssl process's own peak
(GNU time, Debian package `time`). No root needed.

    .venv/bin/python -m bench.key_backends [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from agent.certificate import read_certificate
from agent.key_backend import openssl_tool
from agent.keys import CryptographyKeys, KeyBackend, OpensslKeys
from bench import common as C
from cloud.ca import CertificateAuthority, certificate_pem
from lab.hidden import environment_without

KIB = 1024
# A renewal's key work in a fresh process; prints its peak RSS (VmHWM: ru_maxrss would carry
# the parent's peak across fork and exec).
_RENEWAL_WORK = """
import json, sys
from agent.enrol import check_certificate, load_identity
from agent.keys import choose_backend
keys = choose_backend(sys.argv[1])
key = keys.new_key()
request = keys.certificate_request(key, "r-bench")
keys.public_key(key)
ca = open(sys.argv[2], "rb").read()
certificate = open(sys.argv[3], "rb").read()
assert keys.issued_by(certificate, ca)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({
    "backend": keys.name,
    "cryptography_loaded": sys.modules.get("cryptography") is not None,
    "python_kib": int(status["VmHWM"].split()[0]),
}))
"""


def peak_kib(*argv: str) -> int:
    """Peak RSS of one process `argv` as GNU time reports it (KiB); -1 without GNU time.

    GNU time is small, so the child it forks inherits little (ru_maxrss carries the peak of
    the process that forked across exec); busybox's time misreports it fourfold.
    """
    gnu_time = shutil.which("time")
    if gnu_time is None:
        return -1
    done = subprocess.run(
        [gnu_time, "-f", "%M", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    lines = done.stderr.strip().splitlines()
    return int(lines[-1]) if done.returncode == 0 and lines and lines[-1].isdigit() else -1


def timed(step: Callable[[], object], rounds: int) -> float:
    """The median seconds of `step` over `rounds` calls."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return C.median(times)


def operation_times(keys: KeyBackend, ca: CertificateAuthority, rounds: int) -> list[float]:
    """Median seconds of new_key, certificate_request, public_key, issued_by, and all four."""
    key = keys.new_key()
    signed = ca.sign_router_request(keys.certificate_request(key), "r-bench", datetime.now(UTC))
    pem, ca_pem = certificate_pem(signed).encode(), ca.certificate_pem.encode()

    def all_four() -> None:
        fresh = keys.new_key()
        keys.certificate_request(fresh)
        keys.public_key(fresh)
        keys.issued_by(pem, ca_pem)

    return [
        timed(keys.new_key, rounds),
        timed(lambda: keys.certificate_request(key), rounds),
        timed(lambda: keys.public_key(key), rounds),
        timed(lambda: keys.issued_by(pem, ca_pem), rounds),
        timed(all_four, rounds),
    ]


def renewal_memory(
    backend: str, ca: Path, certificate: Path, environment: dict[str, str] | None
) -> dict[str, object]:
    """The peak RSS figures of one fresh process doing a renewal's key work."""
    done = subprocess.run(
        [sys.executable, "-c", _RENEWAL_WORK, backend, str(ca), str(certificate)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures: dict[str, object] = json.loads(done.stdout)
    return figures


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run the benchmark and print its tables; the figures as a dict."""
    parser = argparse.ArgumentParser(prog="python -m bench.key_backends", description=__doc__)
    parser.add_argument("--rounds", type=int, default=20, help="calls per operation")
    parser.add_argument("--memory-rounds", type=int, default=5, help="fresh processes per case")
    args = parser.parse_args(argv)
    tool = openssl_tool()
    if tool is None:
        raise C.BenchError("the openssl tool is missing: apt-get install openssl")
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="bench-keys-") as temporary:
        folder = Path(temporary)
        ca = CertificateAuthority.create(folder / "ca", datetime.now(UTC))
        backends: list[KeyBackend] = [CryptographyKeys(), OpensslKeys(tool)]
        times = {keys.name: operation_times(keys, ca, args.rounds) for keys in backends}
        names = ["new key", "request", "public key", "issuer check", "all four"]
        rows = [
            [name, C.ms(times["cryptography"][i]), C.ms(times["openssl"][i]),
             f"{times['openssl'][i] / times['cryptography'][i]:.0f}x"]
            for i, name in enumerate(names)
        ]  # fmt: skip
        C.report(
            "key work, median ms per call", ["operation", "cryptography", "openssl", "ratio"], rows
        )
        figures["times"] = times
        key = CryptographyKeys().new_key()
        request = CryptographyKeys().certificate_request(key)
        certificate = folder / "router.crt"
        certificate.write_text(
            read_certificate(
                certificate_pem(ca.sign_router_request(request, "r-bench", datetime.now(UTC)))
            ).pem
        )
        hidden = environment_without(["cryptography"], folder / "hidden")
        cases = [
            ("cryptography", "cryptography", None),
            ("openssl, cryptography installed", "openssl", None),
            ("openssl, cryptography hidden", "openssl", hidden),
        ]
        memory_rows = []
        for label, backend, environment in cases:
            runs = [
                renewal_memory(backend, ca.certificate_path, certificate, environment)
                for _ in range(args.memory_rounds)
            ]
            python = C.median([float(str(r["python_kib"])) for r in runs]) / KIB
            loaded = all(bool(r["cryptography_loaded"]) for r in runs)
            memory_rows.append([label, f"{python:.1f}", loaded])
            figures[label] = {"python_mib": python, "cryptography_loaded": loaded}
        C.report(
            "a renewal's key work in a fresh process, peak RSS (VmHWM, MiB), median",
            ["case", "peak RSS", "cryptography loaded"],
            memory_rows,
        )
        key_file = folder / "router.key"
        key_file.write_bytes(key)
        commands = {
            "true (the floor)": ["true"],
            "openssl genpkey (new key)": [tool, "genpkey", "-algorithm", "EC", "-pkeyopt",
                                          "ec_paramgen_curve:P-256"],
            "openssl pkey (public key)": [tool, "pkey", "-in", str(key_file), "-pubout",
                                          "-outform", "DER"],
            "openssl verify (issuer check)": [tool, "verify", "-no_check_time", "-trusted",
                                              str(ca.certificate_path), str(certificate)],
        }  # fmt: skip
        peaks = {
            name: C.median([float(peak_kib(*argv)) for _ in range(args.memory_rounds)])
            for name, argv in commands.items()
        }
        C.report(
            "each openssl process, peak RSS (MiB, GNU time), median",
            ["command", "peak RSS"],
            [[name, f"{kib / KIB:.1f}" if kib >= 0 else "-"] for name, kib in peaks.items()],
        )
        figures["openssl_peak_kib"] = peaks
    return figures


if __name__ == "__main__":
    main()
