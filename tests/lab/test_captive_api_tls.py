"""A phone that follows RFC 8910 trusts the captive API: HTTPS on the portal's name, from ACME.

The real cloud names the enrolled router's portal; the router makes its key and asks the
enrolment server for a certificate, which the cloud orders from Debian's pebble over
dns-01 (pebble-challtestsrv answering the TXT record). A lab phone's HTTPS request then
validates against pebble's root, with no -k anywhere.
"""

from __future__ import annotations

import hashlib
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from agent.portal.tls import NAME_FILE, TLS_DIR
from cloud.models import RouterConfig
from lab import addresses as A
from lab import netns
from lab.acme import PebbleStack
from lab.cloud import CloudStack
from lab.dns import dns_query
from lab.errors import ServiceError
from lab.polling import wait_until
from lab.router import RouterAgent
from lab.topology import Lab, Phone
from tests.lab.portal_steps import accept_terms

pytestmark = pytest.mark.lab

DOMAIN = "portal.lab.test"
HTTPS_PORT = 8443  # the agent's default portal_https_port
ORDER = 30.0  # seconds for the router's request and the cloud's ACME order


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


@pytest.fixture
def cloud(lab: Lab, database_url: str, tmp_path: Path, pebble: PebbleStack) -> Iterator[CloudStack]:
    """The lab's cloud, its enrolment server ordering portal certificates from pebble."""
    stack = CloudStack(lab, database_url, tmp_path / "cloud")
    stack.env.update(pebble.cloud_env(DOMAIN))
    try:
        stack.start(workers=1)
        yield stack
    finally:
        stack.close()
        for name in ("enrol", "mosquitto"):
            print(f"--- {name} log ---\n{stack.log(name)[-3000:]}")


def answer_on_the_lan(lab: Lab, name_file: Path) -> None:
    """The router's dnsmasq answering the portal's name, as the hook's `config domain` makes it."""
    name = name_file.read_text().strip()
    lab.popen(
        lab.router,
        *("dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts"),
        *("--bind-interfaces", f"--listen-address={A.ROUTER_LAN_IP}", "--port=53", "--pid-file="),
        f"--host-record={name},{A.ROUTER_LAN_IP}",
    )


def captive_api(phone: Phone, name: str, root: Path, *, trust: bool = True) -> dict[str, object]:
    """The phone's GET https://NAME:PORT/api/captive, its name resolved to the portal."""
    return json.loads(https_get(phone, f"https://{name}:{HTTPS_PORT}/api/captive", root, trust))


def https_get(phone: Phone, url: str, root: Path, trust: bool = True) -> str:
    """curl URL from the phone, trusting `root` alone (or nothing); ServiceError on failure."""
    name = url.split("/")[2].split(":")[0]
    argv = ["curl", "-sS", "--fail", "--max-time", "5", "--resolve"]
    argv += [f"{name}:{HTTPS_PORT}:{A.ROUTER_LAN_IP}"]
    argv += ["--cacert", str(root)] if trust else ["--capath", "/nonexistent"]
    done = netns.run(phone.ns, *argv, "-w", "\n%{content_type}", url, check=False, timeout=15)
    if done.returncode != 0:
        raise ServiceError(f"curl {url} exited {done.returncode}: {done.stderr.strip()}")
    body, _, content_type = done.stdout.rpartition("\n")
    if url.endswith("/api/captive"):
        assert content_type.startswith("application/captive+json"), done.stdout
    return body


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


def answers(phone: Phone, name: str) -> list[str]:
    try:
        return dns_query(phone.ns, name, A.ROUTER_LAN_IP, timeout=0.5)
    except (TimeoutError, OSError):
        return []


def serving(phone: Phone, name: str, root: Path) -> bool:
    try:
        served_fingerprint(phone, name, root)
    except OSError:
        return False
    return True


def acked(cloud: CloudStack, router_id: str, version: int) -> bool:
    with Session(cloud.engine) as session:
        row = session.get(RouterConfig, (router_id, version))
        return row is not None and row.acked_at is not None and row.ack_error is None


def trust_pebble(lab: Lab, pebble: PebbleStack) -> Path:
    """pebble's root of this run, as a file the phone's curl takes."""
    root = lab.workdir / "pebble-root.pem"
    root.write_text(pebble.root_pem())
    return root


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_phone_reads_its_time_left_from_the_https_captive_api_it_trusts(
    lab: Lab, cloud: CloudStack, enrolled: tuple[RouterAgent, str], pebble: PebbleStack
) -> None:
    agent, router_id = enrolled
    phone = lab.phones[0]
    root = trust_pebble(lab, pebble)
    name = f"{router_id}.{DOMAIN}"

    named = cloud.cli("portal-cert", router_id)
    assert named["portal_name"] == name
    assert wait_until(lambda: acked(cloud, router_id, named["version"]), 10), agent.logs()
    assert wait_until(lambda: serving(phone, name, root), ORDER), agent.logs()
    assert "got its portal certificate" in cloud.log("enrol")
    # What dnsmasq-sync reads to advertise https://NAME:PORT/api/captive as option 114, and
    # to make the LAN's DNS answer the name: a captive phone asks the router and gets it.
    flash = agent.workdir / "flash"
    assert (flash / NAME_FILE).read_text() == f"{name}\n"
    answer_on_the_lan(lab, flash / NAME_FILE)
    assert wait_until(lambda: answers(phone, name) == [A.ROUTER_LAN_IP], 5)

    before = captive_api(phone, name, root)  # at the address the router's DNS gave
    assert before["captive"] is True
    assert before["user-portal-url"] == f"https://{name}:{HTTPS_PORT}/portal"
    page = https_get(phone, str(before["user-portal-url"]), root)
    assert 'name="csrf"' in page  # the terms page, over HTTPS too
    with pytest.raises(ServiceError, match="certificate"):
        captive_api(phone, name, root, trust=False)  # not the system's trust: pebble's only
    key = flash / TLS_DIR / "key.pem"
    assert key.stat().st_mode & 0o077 == 0
    with Session(cloud.engine) as session:  # the key stayed on the router
        bodies = [row.body for row in session.query(RouterConfig).all()]
    assert not any("PRIVATE KEY" in body for body in bodies)

    assert accept_terms(phone).status == 303
    after = captive_api(phone, name, root)
    assert after["captive"] is False
    seconds = after["seconds-remaining"]
    assert isinstance(seconds, int | float) and 3500 < seconds <= 3600  # the lab's 1h session

    cloud.cli("config", "push", router_id, "--set", "portal_name=null")  # taken away
    assert wait_until(lambda: not serving(phone, name, root), 10), agent.logs()
    assert not (flash / NAME_FILE).exists(), "option 114 goes back to the http API"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_new_certificate_is_served_without_a_restart_and_kept_across_one(
    lab: Lab, cloud: CloudStack, enrolled: tuple[RouterAgent, str], pebble: PebbleStack
) -> None:
    agent, router_id = enrolled
    phone = lab.phones[0]
    root = trust_pebble(lab, pebble)
    name = f"{router_id}.{DOMAIN}"
    named = cloud.cli("portal-cert", router_id)
    assert wait_until(lambda: serving(phone, name, root), ORDER), agent.logs()
    first = served_fingerprint(phone, name, root)

    later = cloud.cli("config", "push", router_id, "--set", "session_timeout=1800")
    assert wait_until(lambda: acked(cloud, router_id, later["version"]), 10), agent.logs()
    with Session(cloud.engine) as session:
        body = json.loads(session.get(RouterConfig, (router_id, later["version"])).body)
    assert body["portal_name"] == named["portal_name"], "a settings push keeps the name"
    assert served_fingerprint(phone, name, root) == first

    pid = agent.process.pid if agent.process else None
    for stale in (agent.workdir / "flash" / TLS_DIR).iterdir():
        stale.unlink()  # as if it were due: the next check orders a new one
    cloud.cli("command", router_id, "reload_config")
    assert wait_until(lambda: served_fingerprint(phone, name, root) != first, ORDER), agent.logs()
    assert agent.process is not None and agent.process.pid == pid, "the same agent, no restart"
    renewed = served_fingerprint(phone, name, root)

    agent.stop()  # a reboot: the certificate comes back from flash, before the broker answers
    cloud.stop_broker()
    agent.start()
    assert wait_until(lambda: serving(phone, name, root), 10), agent.logs()
    assert served_fingerprint(phone, name, root) == renewed
