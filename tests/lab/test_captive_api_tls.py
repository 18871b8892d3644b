"""A phone that follows RFC 8910 trusts the captive API: HTTPS on the portal's name, from ACME.

The real cloud gets a certificate for the enrolled router's portal name from Debian's pebble
over DNS-01 (pebble-challtestsrv answering the TXT record), pushes it, and a lab phone's
HTTPS request validates against pebble's root, with no -k anywhere.
"""

from __future__ import annotations

import hashlib
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from agent.portal.tls import NAME_FILE
from cloud.models import RouterConfig
from lab import addresses as A
from lab import netns
from lab.acme import PebbleStack
from lab.cloud import CloudStack
from lab.errors import ServiceError
from lab.polling import wait_until
from lab.router import RouterAgent
from lab.topology import Lab, Phone
from tests.lab.portal_steps import accept_terms

pytestmark = pytest.mark.lab

DOMAIN = "portal.lab.test"
HTTPS_PORT = 8443  # the agent's default portal_https_port


@pytest.fixture
def pebble(tmp_path: Path) -> Iterator[PebbleStack]:
    """pebble and its DNS on loopback; a missing pebble fails the test (it is in CI's list)."""
    stack = PebbleStack(tmp_path / "pebble")
    try:
        stack.start()
        yield stack
    finally:
        stack.close()
        for name in ("pebble", "challtestsrv"):
            print(f"--- {name} log ---\n{stack.log(name)[-3000:]}")


def captive_api(phone: Phone, name: str, root: Path, *, trust: bool = True) -> dict[str, object]:
    """The phone's GET https://NAME:PORT/api/captive, its name resolved to the portal."""
    url = f"https://{name}:{HTTPS_PORT}/api/captive"
    argv = ["curl", "-sS", "--fail", "--max-time", "5", "--resolve"]
    argv += [f"{name}:{HTTPS_PORT}:{A.ROUTER_LAN_IP}"]
    argv += ["--cacert", str(root)] if trust else ["--capath", "/nonexistent"]
    done = netns.run(phone.ns, *argv, "-w", "\n%{content_type}", url, check=False, timeout=15)
    if done.returncode != 0:
        raise ServiceError(f"curl {url} exited {done.returncode}: {done.stderr.strip()}")
    body, _, content_type = done.stdout.rpartition("\n")
    assert content_type.startswith("application/captive+json"), done.stdout
    answer: dict[str, object] = json.loads(body)
    return answer


def served_fingerprint(phone: Phone, name: str, root: Path) -> str:
    """SHA-256 of the certificate the portal serves, checked with Python's ssl and pebble's root."""
    context = ssl.create_default_context(cafile=str(root))
    sock = netns.socket_in(phone.ns)
    sock.settimeout(5)
    sock.connect((A.ROUTER_LAN_IP, HTTPS_PORT))
    with context.wrap_socket(sock, server_hostname=name) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def acked(cloud: CloudStack, router_id: str, version: int) -> bool:
    with Session(cloud.engine) as session:
        row = session.get(RouterConfig, (router_id, version))
        return row is not None and row.acked_at is not None and row.ack_error is None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_phone_reads_its_time_left_from_the_https_captive_api_it_trusts(
    lab: Lab, cloud: CloudStack, enrolled: tuple[RouterAgent, str], pebble: PebbleStack
) -> None:
    agent, router_id = enrolled
    phone = lab.phones[0]
    cloud.env.update(pebble.cloud_env(DOMAIN))
    root = lab.workdir / "pebble-root.pem"
    root.write_text(pebble.root_pem())
    name = f"{router_id}.{DOMAIN}"

    issued = cloud.cli("portal-cert", router_id)
    assert issued["portal_name"] == name
    assert wait_until(lambda: acked(cloud, router_id, issued["version"]), 10), agent.logs()

    before = captive_api(phone, name, root)
    assert before["captive"] is True
    assert before["user-portal-url"] == f"https://{name}:{HTTPS_PORT}/portal"
    page = netns.run(
        phone.ns,
        *("curl", "-sS", "--fail", "--max-time", "5", "--cacert", str(root), "--resolve"),
        f"{name}:{HTTPS_PORT}:{A.ROUTER_LAN_IP}",
        str(before["user-portal-url"]),
        check=False,
        timeout=15,
    )
    assert page.returncode == 0 and 'name="csrf"' in page.stdout, page.stderr  # the terms page
    with pytest.raises(ServiceError, match="certificate"):
        captive_api(phone, name, root, trust=False)  # not the system's trust: pebble's only
    # What dnsmasq-sync reads to advertise https://NAME:PORT/api/captive as option 114.
    assert (agent.workdir / "flash" / NAME_FILE).read_text() == f"{name}\n"

    assert accept_terms(phone).status == 303
    after = captive_api(phone, name, root)
    assert after["captive"] is False
    seconds = after["seconds-remaining"]
    assert isinstance(seconds, int | float) and 3500 < seconds <= 3600  # the lab's 1h session


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_renewed_certificate_is_served_without_a_restart_and_after_one(
    lab: Lab, cloud: CloudStack, enrolled: tuple[RouterAgent, str], pebble: PebbleStack
) -> None:
    agent, router_id = enrolled
    phone = lab.phones[0]
    cloud.env.update(pebble.cloud_env(DOMAIN))
    root = lab.workdir / "pebble-root.pem"
    root.write_text(pebble.root_pem())
    name = f"{router_id}.{DOMAIN}"
    first = cloud.cli("portal-cert", router_id)
    assert wait_until(lambda: acked(cloud, router_id, first["version"]), 10), agent.logs()
    old = served_fingerprint(phone, name, root)
    pid = agent.process.pid if agent.process else None

    later = cloud.cli("config", "push", router_id, "--set", "session_timeout=1800")
    assert wait_until(lambda: acked(cloud, router_id, later["version"]), 10), agent.logs()
    assert served_fingerprint(phone, name, root) == old, "a settings push keeps the certificate"

    second = cloud.cli("portal-cert", router_id)
    assert wait_until(lambda: acked(cloud, router_id, second["version"]), 10), agent.logs()
    assert wait_until(lambda: served_fingerprint(phone, name, root) != old, 5)
    assert agent.process is not None and agent.process.pid == pid
    assert agent.process.poll() is None
    renewed = served_fingerprint(phone, name, root)
    with Session(cloud.engine) as session:
        body = json.loads(session.get(RouterConfig, (router_id, second["version"])).body)
    assert body["session_timeout"] == 1800, "a renewal keeps the router's other settings"

    agent.stop()  # a reboot: the certificate comes back from flash, before the broker answers
    cloud.stop_broker()
    agent.start()
    assert served_fingerprint(phone, name, root) == renewed
