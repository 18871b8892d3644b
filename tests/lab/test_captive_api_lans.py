"""The trusted captive API on two LANs, from a router whose Python has no cryptography.

One certificate for the portal's one name (from pebble, as in test_captive_api_tls), made
with the openssl tool because `import cryptography` fails in the agent and its processes
(lab.hidden). The agent serves HTTPS on each LAN's portal address; the shipped dnsmasq
hook writes one `config domain` per LAN address, and dnsmasq with localise-queries (as
OpenWrt runs it) answers each phone the address on its own LAN. Each phone then reads
the API at its own LAN's address, validating the certificate against pebble's root.
Before the certificate, each LAN's DHCP pool tells its phones the http API at that LAN's
own portal address.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.portal.tls import NAME_FILE
from lab import addresses as A
from lab import netns
from lab.acme import PebbleStack
from lab.cloud import CloudStack
from lab.dns import dns_query
from lab.errors import ServiceError
from lab.hidden import environment_without
from lab.polling import wait_until
from lab.pytest_plugin import LabFactory
from lab.topology import Lab, Phone
from tests.deploy.test_openwrt_package import HOOK, Router, section
from tests.lab import test_captive_api_tls as tls_lab
from tests.lab.cloud_fixtures import enrol, linked_agent, router_state
from tests.lab.test_captive_api_tls import DOMAIN, HTTPS_PORT, ORDER, acked, trust_pebble
from tests.lab.test_installed_package import _dhcp_option_114 as dhcp_option_114

pytestmark = pytest.mark.lab
pebble = tls_lab.pebble  # the fixtures: pebble, and the cloud that orders from it
cloud = tls_lab.cloud

GUEST = 1  # the lab's second LAN: the guest VLAN


@pytest.fixture
def lab(lab_factory: LabFactory) -> Lab:
    """The shop's LAN with one phone, and a guest VLAN with one phone of its own."""
    made = lab_factory(phones=1, lans=2)
    made.add_phone(lan=GUEST)
    return made


def hook_settings(workdir: Path, flash: Path) -> tuple[dict[str, str], list[str]]:
    """The shipped hook on a stand-in uci with the lab's two LANs.

    (each DHCP pool's option 114, the hosts lines OpenWrt's dnsmasq init writes for the
    `config domain` sections it committed).
    """
    workdir.mkdir(parents=True)
    guest_bridge, guest_ip = A.lan_bridge(GUEST), A.router_lan_ip(GUEST)
    prefix = A.LAN_PREFIXLEN
    router = Router(
        workdir,
        {
            "network": [
                section(
                    "interface", "lan", device=A.LAN_BRIDGE, ipaddr=f"{A.ROUTER_LAN_IP}/{prefix}"
                ),
                section("interface", "guest", device=guest_bridge, ipaddr=f"{guest_ip}/{prefix}"),
            ],
            "dhcp": [
                section("dnsmasq", None, localise_queries="1"),
                section("dhcp", "lan", interface="lan"),
                section("dhcp", "guest", interface="guest"),
            ],
            "loopspot": [
                section(
                    "agent",
                    "agent",
                    lan_interface=[A.LAN_BRIDGE],
                    portal_address=A.ROUTER_LAN_IP,
                    lan=[f"{guest_bridge}={guest_ip}"],
                    flash_dir=str(flash),
                ),
            ],
        },
    )
    done = router.run("/bin/sh", HOOK)
    assert done.returncode == 0, done.stderr
    committed = router.uci()["committed"]["dhcp"]
    option_114 = {
        s["name"]: value.split(",", 1)[1]
        for s in committed
        if s["type"] == "dhcp"
        for value in s["options"].get("dhcp_option_force", [])
        if value.startswith("114,")
    }
    hosts = [
        f"{s['options']['ip']} {s['options']['name']}" for s in committed if s["type"] == "domain"
    ]
    return option_114, hosts


def lan_dns(lab: Lab, hosts: list[str], workdir: Path) -> None:
    """The router's dnsmasq on both LANs with the hook's names, localise-queries on."""
    hosts_file = workdir / "dnsmasq.hosts"
    hosts_file.write_text("".join(f"{line}\n" for line in hosts))
    lab.popen(
        lab.router,
        *("dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts"),
        *("--bind-interfaces", "--port=53", "--pid-file=", "--localise-queries"),
        f"--listen-address={A.ROUTER_LAN_IP}",
        f"--listen-address={A.router_lan_ip(GUEST)}",
        f"--addn-hosts={hosts_file}",
    )


def answers(phone: Phone, name: str, server: str) -> list[str]:
    try:
        return dns_query(phone.ns, name, server, timeout=0.5)
    except (TimeoutError, OSError):
        return []


def captive_api_at(phone: Phone, name: str, address: str, root: Path) -> dict[str, object]:
    """GET https://NAME:PORT/api/captive from the phone, NAME at `address`, pebble's root only."""
    url = f"https://{name}:{HTTPS_PORT}/api/captive"
    argv = ["curl", "-sS", "--fail", "--max-time", "5", "--cacert", str(root)]
    argv += ["--resolve", f"{name}:{HTTPS_PORT}:{address}", url]
    done = netns.run(phone.ns, *argv, check=False, timeout=15)
    if done.returncode != 0:
        raise ServiceError(f"curl {url} at {address} exited {done.returncode}: {done.stderr}")
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def serving(phone: Phone, name: str, address: str, root: Path) -> bool:
    try:
        captive_api_at(phone, name, address, root)
    except ServiceError:
        return False
    return True


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_without_cryptography_each_lans_phone_trusts_the_api_at_its_own_lans_address(
    lab: Lab, cloud: CloudStack, pebble: PebbleStack, tmp_path: Path
) -> None:
    shop, guest = lab.phones[0], lab.phones[-1]
    assert guest.lan == GUEST
    guest_ip = A.router_lan_ip(GUEST)
    router_id, code = cloud.claim()
    agent = linked_agent(
        lab,
        cloud,
        environment=environment_without(["cryptography"], tmp_path / "hidden"),
        agent_options={"lan": [f"{A.lan_bridge(GUEST)}={guest_ip}"]},
    )
    assert enrol(agent, cloud, code) == 0
    agent.start()
    try:
        assert wait_until(lambda: router_state(cloud, router_id) == "online", 20), agent.logs()
        assert agent.ctl_json("status")["status"]["key_backend"] == "openssl"
        root = trust_pebble(lab, pebble)
        name = f"{router_id}.{DOMAIN}"

        named = cloud.cli("portal-cert", router_id)
        assert wait_until(lambda: acked(cloud, router_id, named["version"]), 10), agent.logs()
        assert wait_until(lambda: serving(guest, name, guest_ip, root), ORDER), agent.logs()
        assert "got its portal certificate" in cloud.log("enrol")

        flash = agent.workdir / "flash"
        assert (flash / NAME_FILE).read_text() == f"{name}\n"
        urls, hosts = hook_settings(tmp_path / "uci", flash)
        https = f"https://{name}:{HTTPS_PORT}/api/captive"
        assert urls == {"lan": https, "guest": https}, "both LANs' pools"
        assert hosts == [f"{A.ROUTER_LAN_IP} {name}", f"{guest_ip} {name}"]
        lan_dns(lab, hosts, tmp_path)

        for phone, own in ((shop, A.ROUTER_LAN_IP), (guest, guest_ip)):
            assert wait_until(lambda: answers(phone, name, own) == [own], 5), phone.ns  # noqa: B023
            api = captive_api_at(phone, name, own, root)
            assert api["captive"] is True
            assert api["user-portal-url"] == f"https://{name}:{HTTPS_PORT}/portal"
    finally:
        agent.stop()
        print(f"--- agent log ---\n{agent.logs()[-4000:]}")


def test_each_lans_phone_gets_option_114_with_its_own_lans_portal_address(
    lab: Lab, tmp_path: Path
) -> None:
    urls, hosts = hook_settings(tmp_path / "uci", tmp_path / "flash")  # no certificate yet
    assert hosts == []
    # dnsmasq as OpenWrt's init renders the two pools: a range per LAN tagged with the
    # pool's name, and each pool's forced options for that tag only.
    argv = ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts"]
    argv += ["--port=0", "--pid-file=", "--bind-interfaces", "--dhcp-authoritative"]
    argv += [f"--dhcp-leasefile={tmp_path / 'leases'}", "--except-interface=lo"]
    for pool, lan in (("lan", 0), ("guest", GUEST)):
        first = A.lan_net(lan).split(".")[1]
        argv += [f"--interface={A.lan_bridge(lan)}"]
        argv += [f"--dhcp-range=set:{pool},10.{first}.250.10,10.{first}.250.50,255.255.0.0,1h"]
        argv += [f"--dhcp-option-force=tag:{pool},114,{urls[pool]}"]
    lab.popen(lab.router, *argv)
    shop, guest = lab.phones[0], lab.phones[-1]
    for pool in ("lan", "guest"):
        (tmp_path / pool).mkdir()

    got = {
        pool: dhcp_option_114(phone.ns, tmp_path / pool)
        for pool, phone in (("lan", shop), ("guest", guest))
    }

    assert got == {
        "lan": f"http://{A.ROUTER_LAN_IP}:2050/api/captive",
        "guest": f"http://{A.router_lan_ip(GUEST)}:2050/api/captive",
    }
