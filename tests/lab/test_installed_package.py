"""The .ipk installed into a root folder, its agent run from there in the lab's router.

The agent runs as the package installs it: /usr/bin/loopspot-agent under the system's
Python, from `/`, with a clean environment, its libraries from /usr/lib/loopspot/vendor and
the shipped /etc/config/loopspot changed only for the lab's addresses and folders.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from agent.portal.tls import NAME_FILE, TLS_DIR
from cloud.db import migrate
from lab import addresses as A
from lab import netns
from lab.client import http_get, resolve
from lab.cloud import CloudStack
from lab.polling import wait_until
from lab.topology import Lab
from tests.agent.portal.test_tls import issue, make_ca, store
from tests.deploy.test_openwrt_package import Router, section
from tests.lab.cloud_fixtures import enrol, linked_agent, router_state
from tests.lab.installed_package import (
    ROUTER_PYTHON,
    InstalledAgent,
    build_package,
    install,
)
from tests.lab.portal_steps import accept_terms, is_authorized, open_portal, reaches_wan

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
MakeInstalled = Callable[..., InstalledAgent]
# What the portal imports of the bundled libraries (the cloud link is off in this test).
BUNDLED_IN_THE_PORTAL = ("aiohttp", "jinja2", "markupsafe", "multidict", "yarl", "frozenlist")


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_package(tmp_path_factory.mktemp("ipk"))


@pytest.fixture
def root(package: Path, tmp_path: Path) -> Path:
    """A fresh root folder with the package installed, standing for the router's /."""
    return install(package, tmp_path / "root")


@pytest.fixture
def make_installed(lab: Lab, root: Path) -> Iterator[MakeInstalled]:
    started: list[InstalledAgent] = []

    def start(**kwargs: object) -> InstalledAgent:
        agent = InstalledAgent(lab, root, **kwargs)  # type: ignore[arg-type]
        started.append(agent)
        agent.start(timeout=40)
        return agent

    yield start
    for agent in started:
        agent.stop()
        print(f"--- installed agent log ({agent.log}) ---\n{agent.logs()[-6000:]}")


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: these tests are about the package, not the cloud's database."""
    url = f"sqlite:///{tmp_path}/cloud.db"
    migrate(url)
    return url


def _loaded_files(log: str) -> list[str]:
    """Every file Python loaded code from, from PYTHONVERBOSE's lines in the log."""
    # "# code object from '/…/usr/lib/loopspot/vendor/aiohttp/web.pyc'"
    return re.findall(r"# code object from '([^']+)'", log)


def test_the_installed_agent_serves_the_portal_and_a_phone_gets_online(
    make_installed: MakeInstalled, root: Path, lab: Lab
) -> None:
    agent = make_installed(env={"PYTHONVERBOSE": "1"})
    assert agent.process is not None
    phone = lab.phones[0]
    assert not reaches_wan(phone)
    page = open_portal(phone)
    assert page.status == 200 and b"csrf" in page.body
    accept_terms(phone, terms_version=agent.config_value("portal", "terms_version"))
    assert wait_until(lambda: reaches_wan(phone), 10)
    assert is_authorized(agent, phone)

    # It is the installed agent that runs, with the bundled libraries, not the checkout's.
    loaded = _loaded_files(agent.logs())
    lib = root / "usr/lib/loopspot"
    for package, home in [("agent", lib), *[(p, lib / "vendor") for p in BUNDLED_IN_THE_PORTAL]]:
        files = [f for f in loaded if f"/{package}/" in f]
        assert files, f"the agent's log shows no {package} loaded"
        assert all(f.startswith(f"{home}/{package}/") for f in files), files
    pid = agent.process.pid
    assert Path(f"/proc/{pid}/exe").resolve() == Path(ROUTER_PYTHON).resolve()
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert not [v for v in environ if v.startswith((b"PYTHONPATH=", b"VIRTUAL_ENV="))]
    maps = Path(f"/proc/{pid}/maps").read_text()
    for foreign in (str(REPO), sys.prefix, str(Path(sys.executable).resolve().parents[1])):
        assert foreign not in maps, f"the agent mapped a file from {foreign}"


def _stand_in_paho_1_6(site_packages: Path) -> Path:
    """A paho-mqtt 1.6.1 where OpenWrt 25.12's python3-paho-mqtt puts it.

    It has 1.6's version and lacks 2.x's CallbackAPIVersion, which aiomqtt 2.x needs: an
    agent that imported it would fail to link.
    """
    mqtt = site_packages / "paho" / "mqtt"
    mqtt.mkdir(parents=True)
    (site_packages / "paho" / "__init__.py").write_text("")
    (mqtt / "__init__.py").write_text('__version__ = "1.6.1"\n')
    (mqtt / "client.py").write_text(
        '"""Stand-in for paho-mqtt 1.6.1: no CallbackAPIVersion."""\n'
        "class Client:\n"
        "    def __init__(self, client_id='', clean_session=None, userdata=None,"
        " protocol=4, transport='tcp', reconnect_on_failure=True):\n"
        "        raise RuntimeError('paho-mqtt 1.6.1 stand-in imported')\n"
    )
    (site_packages / "paho_mqtt-1.6.1.dist-info").mkdir()
    (site_packages / "paho_mqtt-1.6.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: paho-mqtt\nVersion: 1.6.1\n"
    )
    return site_packages


def _hide_cryptography(folder: Path) -> Path:
    """A sitecustomize that makes `import cryptography` raise ImportError, as on MIPS."""
    folder.mkdir(parents=True)
    (folder / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoCryptography:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'cryptography' or name.startswith('cryptography.'):\n"
        "            raise ImportError(f'{name} is hidden: no python3-cryptography here')\n"
        "        return None\n"
        "sys.meta_path.insert(0, _NoCryptography())\n"
    )
    return folder


def _router_python(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["env", "-i", "-C", "/", *[f"{k}={v}" for k, v in env.items()], ROUTER_PYTHON, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _enrolled_installed(
    lab: Lab, cloud: CloudStack, make_installed: MakeInstalled, env: dict[str, str]
) -> tuple[InstalledAgent, str]:
    """Enrol with a claim code (the checkout's CLI), then start the installed agent linked."""
    router_id, code = cloud.claim()
    enroller = linked_agent(lab, cloud)
    assert enrol(enroller, cloud, code) == 0
    credentials = enroller.workdir / "credentials"
    changes = {
        "cloud": {
            "enabled": "1",
            "tls": "1",
            "credentials_dir": str(credentials),
            "keepalive": "5",
            "status_interval": "30",
            "spool_flush_interval": "10",
        }
    }
    agent = make_installed(changes=changes, env=env)
    online = wait_until(lambda: router_state(cloud, router_id) == "online", 30)
    assert online, agent.logs()[-4000:]
    return agent, router_id


def test_with_the_feeds_paho_mqtt_1_6_installed_the_agent_starts_and_links(
    lab: Lab, cloud: CloudStack, make_installed: MakeInstalled, tmp_path: Path
) -> None:
    # Where 25.12 installs python3-paho-mqtt: /usr/lib/python3.13/site-packages, on the path.
    site = _stand_in_paho_1_6(tmp_path / "usr/lib/python3.13/site-packages")
    env = {"PYTHONPATH": str(site)}
    bare = _router_python(env, "import paho.mqtt; print(paho.mqtt.__version__)")
    assert bare.stdout.strip() == "1.6.1", "without the launcher, the stand-in is what loads"
    agent, _ = _enrolled_installed(lab, cloud, make_installed, env)
    assert "1.6.1 stand-in" not in agent.logs()


def test_with_no_cryptography_importable_the_agent_starts_and_links(
    lab: Lab, cloud: CloudStack, make_installed: MakeInstalled, tmp_path: Path
) -> None:
    hidden = {"PYTHONPATH": str(_hide_cryptography(tmp_path / "no-cryptography"))}
    assert _router_python({}, "import cryptography").returncode == 0, "this Python has it"
    refused = _router_python(hidden, "import cryptography")
    assert "hidden: no python3-cryptography" in refused.stderr
    agent, _ = _enrolled_installed(lab, cloud, make_installed, hidden)
    assert agent.process is not None and agent.process.poll() is None


FW4 = """table inet fw4 {
	chain input { type filter hook input priority filter; policy accept; }
	chain forward { type filter hook forward priority filter; policy accept; }
	chain output { type filter hook output priority filter; policy accept; }
}
"""


def test_a_firewall_reload_that_replaces_inet_fw4_leaves_online_phones_online(
    make_installed: MakeInstalled, lab: Lab
) -> None:
    netns.run(lab.router, "nft", "-f", "-", input=FW4)
    agent = make_installed()
    phone = lab.phones[0]
    accept_terms(phone, terms_version=agent.config_value("portal", "terms_version"))
    assert wait_until(lambda: reaches_wan(phone), 10)
    # fw4 reload: its own table, deleted and loaded again in one transaction.
    netns.run(lab.router, "nft", "-f", "-", input=f"table inet fw4\ndelete table inet fw4\n{FW4}")
    netns.run(lab.router, "nft", "flush", "table", "inet", "fw4")
    assert reaches_wan(phone)
    assert is_authorized(agent, phone)
    assert "table inet loopspot" in agent.nft("list", "tables")


# --- dnsmasq with the shipped hook's settings --------------------------------------------

GARDEN_DOMAIN = A.GARDEN_HOST.split(".", 1)[1]  # lab.test: a domain includes its subdomains


def _hook_settings(root: Path, workdir: Path, flash: Path | None = None) -> dict[str, list[str]]:
    """Run the installed dnsmasq-sync on a stand-in uci; the dhcp sections it committed.

    `flash` is the agent's flash_dir, where it keeps portal.name while it serves HTTPS.
    """
    workdir.mkdir(parents=True)
    flash = flash or workdir / "flash"
    router = Router(
        workdir,
        {
            "network": [
                section(
                    "interface",
                    "lan",
                    device=A.LAN_BRIDGE,
                    proto="static",
                    ipaddr=f"{A.ROUTER_LAN_IP}/{A.LAN_PREFIXLEN}",
                ),
            ],
            "dhcp": [section("dhcp", "lan", interface="lan", start="100")],
            "loopspot": [
                section(
                    "agent",
                    "agent",
                    lan_interface=[A.LAN_BRIDGE],
                    portal_address=A.ROUTER_LAN_IP,
                    portal_port="2050",
                    flash_dir=str(flash),
                ),
                section("walled_garden", None, domain=[GARDEN_DOMAIN]),
            ],
        },
    )
    done = router.run("/bin/sh", root / "usr/libexec/loopspot/dnsmasq-sync")
    assert done.returncode == 0, done.stderr
    lan = router.committed("dhcp", "lan")
    ipset = router.committed("dhcp", "loopspot_walled_garden")
    assert lan is not None and ipset is not None, router.uci()["committed"]
    domains = [  # what OpenWrt's dnsmasq init makes of each `config domain`: a hosts line
        f"{s['options']['name']},{s['options']['ip']}"
        for s in router.uci()["committed"]["dhcp"]
        if s["type"] == "domain"
    ]
    return {
        "lan": lan["options"]["dhcp_option_force"],
        "ipset": [_nftset(ipset["options"])],
        "domains": domains,
    }


def _nftset(options: dict[str, list[str] | str]) -> str:
    """The nftset= line OpenWrt's dnsmasq init writes for a `config ipset` section."""
    domains = "/".join(options["domain"])
    names = "#".join(options["name"])
    return f"/{domains}/{options['family']}#{options['table_family']}#{options['table']}#{names}"


def _dnsmasq_argv(settings: dict[str, list[str]], workdir: Path) -> list[str]:
    """dnsmasq on br-lan as OpenWrt runs it, with the hook's options: DHCP, DNS, nftset."""
    return [
        "/usr/sbin/dnsmasq",
        "--no-daemon",
        "--conf-file=/dev/null",
        "--no-hosts",
        "--no-resolv",
        f"--server={A.WAN_DNS_IP}",
        "--bind-interfaces",
        f"--interface={A.LAN_BRIDGE}",
        "--except-interface=lo",
        "--user=root",
        "--pid-file=",
        "--log-facility=-",
        "--log-queries",
        "--dhcp-range=10.77.250.10,10.77.250.50,255.255.0.0,1h",
        f"--dhcp-leasefile={workdir / 'leases'}",
        "--dhcp-authoritative",
        *[f"--dhcp-option-force={value}" for value in settings["lan"]],
        *[f"--nftset={value}" for value in settings["ipset"]],
        *[f"--host-record={value}" for value in settings["domains"]],
    ]


UDHCPC_SCRIPT = """#!/bin/sh
# Print what the lease carried; configure nothing (the phone keeps its lab address).
[ "$1" = bound ] && env | grep -E '^(opt114|ip|captive|url)=' >> "$OUT"
exit 0
"""


def _dhcp_option_114(phone_ns: str, workdir: Path) -> str:
    """busybox udhcpc asks for option 114 and prints it; the URL it got."""
    script = workdir / "udhcpc.script"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    out = workdir / "udhcpc.out"
    done = netns.run(
        phone_ns,
        "env",
        f"OUT={out}",
        "busybox",
        "udhcpc",
        "-i",
        A.PHONE_IF,
        "-f",
        "-q",
        "-n",
        "-t",
        "5",
        "-T",
        "1",
        "-O",
        "114",
        "-s",
        str(script),
        check=False,
        timeout=30,
    )
    lines = out.read_text().splitlines() if out.exists() else []
    assert done.returncode == 0 and lines, f"{done.stdout}{done.stderr}"
    values = dict(line.split("=", 1) for line in lines)
    raw = values.get("opt114") or values.get("captive") or values.get("url") or ""
    try:  # busybox gives an option it has no name for as hex
        return bytes.fromhex(raw).decode()
    except ValueError:
        return raw


def test_dnsmasq_with_the_hooks_settings_tells_phones_the_api_and_opens_the_walled_garden(
    make_installed: MakeInstalled, root: Path, lab: Lab, tmp_path: Path
) -> None:
    settings = _hook_settings(root, tmp_path / "uci")
    (advertised,) = settings["lan"]
    code, api_url = advertised.split(",", 1)
    assert code == "114"
    make_installed()
    lab.popen(lab.router, *_dnsmasq_argv(settings, tmp_path))
    phone = lab.phones[0]

    assert _dhcp_option_114(phone.ns, tmp_path) == api_url

    garden = f"http://{A.GARDEN_IP}/"
    assert b"GARDEN OK" not in http_get(phone.ns, garden, timeout=3).body, "captive at first"
    assert resolve(phone.ns, A.GARDEN_HOST, dns_server=A.ROUTER_LAN_IP) == A.GARDEN_IP
    assert wait_until(lambda: b"GARDEN OK" in http_get(phone.ns, garden, timeout=3).body, 5)
    assert not reaches_wan(phone), "only the walled garden, not the internet"


def test_with_its_portal_certificate_the_installed_agent_has_phones_told_the_https_api(
    lab: Lab, cloud: CloudStack, make_installed: MakeInstalled, root: Path, tmp_path: Path
) -> None:
    # No cryptography in the router's Python: the openssl tool checks the stored key.
    hidden = {"PYTHONPATH": str(_hide_cryptography(tmp_path / "no-cryptography"))}
    agent, router_id = _enrolled_installed(lab, cloud, make_installed, hidden)
    name = f"{router_id}.portal.lab.test"
    ca = make_ca()
    flash = Path(agent.config_value("agent", "flash_dir"))
    store(flash / TLS_DIR, issue(ca, name, days=90), name)  # as agent.portal.certify leaves them
    (tmp_path / "ca.pem").write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))

    # The cloud names the portal; the agent finds its certificate fresh (no ACME order),
    # serves it and keeps the name where the hook reads it.
    cloud.cli("config", "push", router_id, "--set", f'portal_name="{name}"')
    named = lambda: (flash / NAME_FILE).exists()  # noqa: E731
    assert wait_until(named, 30), agent.logs()[-4000:]
    assert f"HTTPS portal: https://{name}:8443/api/captive" in agent.logs()
    assert f"portal certificate for {name}:" not in agent.logs(), "certify --if-due ran"
    settings = _hook_settings(root, tmp_path / "uci", flash)
    assert settings["lan"] == [f"114,https://{name}:8443/api/captive"]
    assert settings["domains"] == [f"{name},{A.ROUTER_LAN_IP}"]
    lab.popen(lab.router, *_dnsmasq_argv(settings, tmp_path))
    phone = lab.phones[0]

    api_url = _dhcp_option_114(phone.ns, tmp_path)

    assert api_url == f"https://{name}:8443/api/captive"
    address = resolve(phone.ns, name, dns_server=A.ROUTER_LAN_IP)  # the router's dnsmasq
    assert address == A.ROUTER_LAN_IP
    curl = ["curl", "-sS", "--fail", "--max-time", "5", "--cacert", str(tmp_path / "ca.pem")]
    done = netns.run(
        phone.ns, *curl, "--resolve", f"{name}:8443:{address}", api_url, check=False, timeout=15
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["captive"] is True
