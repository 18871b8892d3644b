"""The HTTPS portal's twice-a-day certificate check, per key backend: time and peak RSS.

The daemon runs `python -m agent.portal.certify --if-due` as a short process every 12
hours (agent.portal.tls); with a certificate that is not due, it reads the stored chain
and checks it is for the name and the stored key, and exits. This measures that process
with `cryptography`, and with the openssl tool where cryptography is hidden (lab.hidden,
as on MIPS), the same run, medians of fresh processes. No lab, no root, no network.

    .venv/bin/python -m bench.portal_certify [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.portal.tls import CHAIN, KEY
from agent.portal.tls import NAME as NAME_FILE
from bench import common as C
from bench.key_backends import KIB, peak_kib
from lab.hidden import environment_without

NAME = "r-bench.portal.example.com"


def store_fresh_certificate(tls_dir: Path) -> None:
    """A 90-day certificate for NAME and its key, as agent.portal.certify leaves them."""
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench root")])
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    tls_dir.mkdir(parents=True)
    (tls_dir / CHAIN).write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tls_dir / KEY).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tls_dir / NAME_FILE).write_text(f"{NAME}\n")


def certify_argv(tls_dir: Path, credentials: Path) -> list[str]:
    """The command the daemon runs (agent.portal.tls.PortalTls.certify)."""
    folders = ["--dir", str(tls_dir), "--credentials-dir", str(credentials)]
    return [sys.executable, "-m", "agent.portal.certify", *folders, "--name", NAME, "--if-due"]


def one_check(argv: list[str], environment: dict[str, str]) -> float:
    """Seconds of one check; BenchError unless it found the certificate fresh."""
    started = time.perf_counter()
    done = subprocess.run(argv, env=environment, capture_output=True, text=True, timeout=60)
    seconds = time.perf_counter() - started
    if done.returncode != 0 or not done.stdout.startswith("fresh"):
        raise C.BenchError(f"the check did not find the certificate fresh: {done.stderr}")
    return seconds


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run the benchmark and print its table; the figures per backend."""
    parser = argparse.ArgumentParser(prog="python -m bench.portal_certify")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-certify-") as temporary:
        folder = Path(temporary)
        store_fresh_certificate(folder / "tls")
        cases = {
            "cryptography": {**os.environ, "LOOPSPOT_KEY_BACKEND": "cryptography"},
            "openssl, cryptography hidden": environment_without(["cryptography"], folder / "h"),
        }
        command = certify_argv(folder / "tls", folder / "credentials")
        figures: dict[str, dict[str, float]] = {}
        times: dict[str, list[float]] = {case: [] for case in cases}
        peaks: dict[str, list[int]] = {case: [] for case in cases}
        for _ in range(args.rounds):  # interleaved: a busy moment hits both cases
            for case, environment in cases.items():
                times[case].append(one_check(command, environment))
                peaks[case].append(peak_kib("env", *_env_args(environment), *command))
        for case in cases:
            figures[case] = {
                "seconds": C.median(times[case]),
                "peak_mib": C.median([float(p) for p in peaks[case]]) / KIB,
            }
    print(f"python -m agent.portal.certify --if-due, fresh certificate, {args.rounds} rounds")
    print("| key backend | wall time (ms), median | peak RSS (MiB), median |")
    print("| --- | --: | --: |")
    for case, figure in figures.items():
        print(f"| {case} | {figure['seconds'] * 1000:.0f} | {figure['peak_mib']:.1f} |")
    ratio = (
        figures["openssl, cryptography hidden"]["peak_mib"] / figures["cryptography"]["peak_mib"]
    )
    print(f"peak RSS, openssl / cryptography: {ratio:.2f}x")
    return {**figures, "peak_ratio": ratio}


def _env_args(environment: dict[str, str]) -> list[str]:
    """`env -i` arguments that give GNU time's child exactly `environment`."""
    return ["-i", *[f"{key}={value}" for key, value in environment.items()]]


if __name__ == "__main__":
    main()
