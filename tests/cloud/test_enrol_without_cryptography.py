"""A router without python3-cryptography (MIPS on OpenWrt 25.12) enrols and renews with openssl.

The router's side runs in a process of its own that cannot import `cryptography`
(lab.hidden), against the cloud's real HTTPS enrolment service; this process checks the
result with cryptography, as the cloud would.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.orm import Session

from agent.enrol import load_identity
from agent.keys import CryptographyKeys
from cloud.ca import fingerprint
from cloud.models import Router
from lab.hidden import environment_without
from tests.cloud.test_enrol_http import Desk, desk

__all__ = ["desk"]  # the fixture

ENROL = "import sys; from agent.enrol import enrol_main; sys.exit(enrol_main(sys.argv[1:]))"


async def router_runs(environment: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """Python `argv` in the router's environment, off the loop the enrolment service runs on."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, *argv],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def stored_fingerprint(desk: Desk, router_id: str) -> str | None:
    with Session(desk.engine) as session:
        return session.get_one(Router, router_id).cert_fingerprint


def presented(folder: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((folder / "router.crt").read_bytes())


async def test_router_without_cryptography_enrols_and_renews_through_the_openssl_tool(
    desk: Desk, tmp_path: Path
) -> None:
    router = environment_without(["cryptography"], tmp_path / "hidden")
    folder = tmp_path / "credentials"
    hidden = await router_runs(router, "-c", "import cryptography")
    assert hidden.returncode == 1 and "ModuleNotFoundError" in hidden.stderr

    argv = [desk.claim(), "--url", desk.url, "--ca", str(desk.ca.certificate_path)]
    enrolled = await router_runs(router, "-c", ENROL, *argv, "--dir", str(folder), "--json")

    assert enrolled.returncode == 0, enrolled.stderr
    said = json.loads(enrolled.stdout)
    assert said["key_backend"] == "openssl"
    identity = load_identity(folder, CryptographyKeys())  # the other backend agrees
    assert identity.router_id == said["router_id"]
    assert stored_fingerprint(desk, identity.router_id) == fingerprint(presented(folder))
    assert (folder / "router.key").stat().st_mode & 0o777 == 0o600
    first_key = (folder / "router.key").read_bytes()

    renewed = await router_runs(router, "-m", "agent.renewal", "--dir", str(folder), "--json")

    assert renewed.returncode == 0, renewed.stderr
    assert json.loads(renewed.stdout)["renewed"] is True
    assert (folder / "router.key").read_bytes() != first_key
    assert sorted(p.name for p in folder.iterdir()) == [
        "ca.crt",
        "identity.json",
        "router.crt",
        "router.key",
    ]
    certificate = presented(folder)
    assert stored_fingerprint(desk, identity.router_id) == fingerprint(certificate)
    key = serialization.load_pem_private_key((folder / "router.key").read_bytes(), None)
    assert certificate.public_key() == key.public_key()
    load_identity(folder, CryptographyKeys())
