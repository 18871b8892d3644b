"""A router whose Python has no cryptography (MIPS on OpenWrt 25.12) enrols, links and renews.

The agent and its commands run in the lab's router namespace under lab.hidden's
environment: `import cryptography` fails there, so the openssl tool does the key work.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy.orm import Session

from cloud.ca import fingerprint
from cloud.models import Router
from lab.cloud import CloudStack
from lab.hidden import environment_without
from lab.polling import wait_until
from lab.topology import Lab
from tests.lab.cloud_fixtures import linked_agent, router_state

pytestmark = pytest.mark.lab


def stored_fingerprint(cloud: CloudStack, router_id: str) -> str | None:
    with Session(cloud.engine) as session:
        return session.get_one(Router, router_id).cert_fingerprint


def held_fingerprint(credentials: Path) -> str:
    return fingerprint(x509.load_pem_x509_certificate((credentials / "router.crt").read_bytes()))


def test_a_router_without_cryptography_enrols_comes_online_and_renews_with_openssl(
    lab: Lab, cloud: CloudStack, tmp_path: Path
) -> None:
    router_id, code = cloud.claim()
    agent = linked_agent(
        lab, cloud, environment=environment_without(["cryptography"], tmp_path / "hidden")
    )
    credentials = agent.workdir / "credentials"
    ca = str(agent.workdir / "cloud-ca.crt")

    enrolled = agent.ctl("enrol", code, "--url", cloud.enrol_url, "--ca", ca)

    assert enrolled.returncode == 0, enrolled.stderr
    assert "keys through openssl" in enrolled.stdout
    assert stored_fingerprint(cloud, router_id) == held_fingerprint(credentials)
    agent.start()
    try:
        assert wait_until(lambda: router_state(cloud, router_id) == "online", 20), agent.logs()
        assert agent.ctl_json("status")["status"]["key_backend"] == "openssl"
        assert "router keys through the openssl tool" in agent.logs()

        renewed = agent.ctl("renew")

        assert renewed.returncode == 0, renewed.stderr
        assert renewed.stdout.startswith("renewed")
        assert stored_fingerprint(cloud, router_id) == held_fingerprint(credentials)
        agent.stop()
        assert wait_until(lambda: router_state(cloud, router_id) == "offline", 20)
        agent.start()  # the link connects with the renewed certificate
        assert wait_until(lambda: router_state(cloud, router_id) == "online", 20), agent.logs()
    finally:
        agent.stop()
        print(f"--- agent log ---\n{agent.logs()[-4000:]}")
