"""The OpenWrt package in deploy/openwrt: Makefile, procd init, first-boot script, dnsmasq hook.

No root and no router: the shell scripts run under the POSIX shells on this machine
(busybox sh stands in for OpenWrt's ash) with `uci`, `ip`, `nft` and procd stubbed.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.gate.gate import BOOT_GATE_FILE
from agent.link.local import CLOUD_DOMAINS_FILE
from agent.portal.tls import NAME_FILE as PORTAL_NAME_FILE
from tests.deploy.ipk import build_ipk

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "deploy" / "openwrt"
FILES = PACKAGE / "files"
MAKEFILE = PACKAGE / "Makefile"
INIT = FILES / "loopspot.init"
UCI_DEFAULTS = FILES / "loopspot.uci-defaults"
HOOK = FILES / "dnsmasq-loopspot.sh"
BOOT_GATE = FILES / "loopspot-boot-gate.sh"
GATE_INIT = FILES / "loopspot-gate.init"
BOOT_GATE_INSTALLED = "/usr/libexec/loopspot/boot-gate"
HOOK_INSTALLED = "/usr/libexec/loopspot/dnsmasq-sync"
CONFIG_INSTALLED = "/etc/config/loopspot"


def _shells() -> list[str]:
    found = ["/bin/sh"]
    busybox = shutil.which("busybox")
    if busybox and subprocess.run([busybox, "sh", "-c", ":"], check=False).returncode == 0:
        found.append(f"{busybox} sh")  # OpenWrt's /bin/sh is busybox ash
    return found


SHELLS = _shells()


# --- the Makefile ---------------------------------------------------------------------------


def makefile() -> str:
    return MAKEFILE.read_text()


def make_variable(name: str) -> str:
    match = re.search(rf"^{re.escape(name)}\s*[:?]?=[ \t]*(.*)$", makefile(), re.MULTILINE)
    assert match, f"deploy/openwrt/Makefile sets no {name}"
    return match[1].strip()


def make_define(name: str) -> str:
    match = re.search(rf"^define {re.escape(name)}\n(.*?)^endef$", makefile(), re.M | re.S)
    assert match, f"deploy/openwrt/Makefile has no 'define {name}'"
    return match[1]


def package_depends() -> set[str]:
    """The `+package` names of Package/loopspot-agent's DEPENDS."""
    body = make_define("Package/loopspot-agent")
    match = re.search(r"DEPENDS:=((?:.*\\\n)*.*)", body)
    assert match, "Package/loopspot-agent has no DEPENDS"
    return {token[1:] for token in match[1].replace("\\\n", " ").split() if token[0] == "+"}


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_package_version_is_the_python_project_version() -> None:
    project = pyproject()["project"]
    assert make_variable("PKG_VERSION") == project["version"]
    assert make_variable("PKG_NAME").replace("-", "_") == project["name"].replace("-", "_")


# PyPI distributions the agent needs at run time, and the OpenWrt package of each. The
# packages feed names them python3-<PyPI name>; these have none there.
NOT_PACKAGED_FOR_OPENWRT = {
    # The packages feed dropped python3-netifaces (upstream archived) and has no
    # netifaces-plus: on a router, `import netifaces` fails.
    "netifaces-plus": "netifaces",
}


def _distribution(requirement: str) -> str:
    name = re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize(
    "distribution",
    [_distribution(r) for r in pyproject()["project"]["dependencies"]],
)
def test_every_runtime_dependency_is_bundled_or_a_package_dependency(distribution: str) -> None:
    if distribution in bundled_names():
        assert f"python3-{distribution}" not in package_depends(), (
            f"{distribution} is bundled under /usr/lib/loopspot/vendor: take "
            f"+python3-{distribution} out of DEPENDS"
        )
        return
    if distribution in build_ipk.NOT_BUNDLED:
        # Not a hard dependency: the daemon never imports it (see OPTIONAL_PACKAGES).
        assert f"python3-{distribution}" not in package_depends()
        return
    if distribution in NOT_PACKAGED_FOR_OPENWRT:
        module = NOT_PACKAGED_FOR_OPENWRT[distribution]
        importers = agent_imports().get(module, [])
        assert not importers, (
            f"{', '.join(importers)} import {module} ({distribution}), which no OpenWrt "
            "package provides: make the import optional (try/except ImportError) or package it."
        )
        return
    assert f"python3-{distribution}" in package_depends(), (
        f"pyproject.toml needs {distribution}: add +python3-{distribution} to DEPENDS in "
        "deploy/openwrt/Makefile"
    )


# Parts of the standard library that OpenWrt ships outside python3-light, after
# lang/python/python3-find-stdlib-depends.sh in the packages feed (plus uuid).
STDLIB_PACKAGES = {
    "asyncio": "python3-asyncio",
    "cgi": "python3-cgi",
    "cgitb": "python3-cgitb",
    "ctypes": "python3-ctypes",
    "curses": "python3-ncurses",
    "dbm": "python3-dbm",
    "dbm.gnu": "python3-gdbm",
    "decimal": "python3-decimal",
    "distutils": "python3-distutils",
    "doctest": "python3-pydoc",
    "email": "python3-email",
    "lib2to3": "python3-lib2to3",
    "logging": "python3-logging",
    "lzma": "python3-lzma",
    "multiprocessing": "python3-multiprocessing",
    "pydoc": "python3-pydoc",
    "readline": "python3-readline",
    "sqlite3": "python3-sqlite3",
    "ssl": "python3-openssl",
    "unicodedata": "python3-codecs",
    "unittest": "python3-unittest",
    "urllib": "python3-urllib",
    "uuid": "python3-uuid",
    "venv": "python3-venv",
    "webbrowser": "python3-webbrowser",
    "xml": "python3-xml",
    "xmlrpc": "python3-xml",
}
THIRD_PARTY_PACKAGES = {
    "cryptography": "python3-cryptography",
}
# Packages the agent may use but does not depend on: who may import the module, and why.
OPTIONAL_PACKAGES = {
    "python3-cryptography": (
        {"agent/keys.py", "agent/coupons/ed25519.py"},
        "the keys of enrolment, renewal and the HTTPS portal's certificate (agent/keys.py, "
        "each a process of its own, else the openssl tool) and coupons' Ed25519 where no "
        "libcrypto does it (agent/coupons/ed25519.py): "
        "the daemon never imports it, and the feed has no python3-cryptography where Rust does "
        "not build (MIPS)",
    ),
}


def bundled_names() -> set[str]:
    """The distributions build_ipk.py bundles under /usr/lib/loopspot/vendor."""
    return {build_ipk.distribution_name(d.metadata["Name"]) for d in _bundled()}


@functools.cache
def _bundled() -> list[Any]:
    found: list[Any] = build_ipk.bundled_distributions()
    return found


def bundled_modules() -> set[str]:
    """The top-level modules the bundled libraries install (aiohttp, paho, attr, ...)."""
    tops: set[str] = set()
    for dist in _bundled():
        for file in dist.files or []:
            parts = Path(str(file)).parts
            if parts[0] != ".." and str(file).endswith(".py"):
                tops.add(parts[0].removesuffix(".py"))
    return tops


NO_OPENWRT_MODULE = {
    "nftables": "OpenWrt builds nftables with --disable-python: load libnftables.so.1 with "
    "ctypes, or run nft",
    "netifaces": "the packages feed has no netifaces; read /sys/class/net or `ip -j addr`",
}


def _is_optional(handler_types: list[ast.expr | None]) -> bool:
    names = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
    for kind in handler_types:
        if kind is None:
            return True
        kinds = kind.elts if isinstance(kind, ast.Tuple) else [kind]
        if any(isinstance(k, ast.Name) and k.id in names for k in kinds):
            return True
    return False


def agent_imports() -> dict[str, list[str]]:
    """Module -> where agent/ imports it, leaving out optional and type-checking imports."""
    return imports_of(sorted((REPO / "agent").rglob("*.py")), REPO)


# Imports in the bundled libraries that never run on the router's Pythons (3.11, 3.13).
NEVER_IMPORTED_ON_THE_ROUTER = {
    "annotationlib": "Python 3.14's; attrs imports it on 3.14 only",
    "async_timeout": "aiohttp imports it on Python < 3.11 only",
    "pydantic_core": "yarl's hook for pydantic, called by pydantic only",
    "webbrowser": "segno's QRCode.show(), a desktop viewer the portal never calls",
}


def bundled_imports() -> dict[str, list[str]]:
    """Module -> where a bundled library imports it, the same way."""
    paths = [
        Path(str(d.locate_file(f)))
        for d in _bundled()
        for f in d.files or []
        if str(f).endswith(".py")
        and ".." not in Path(str(f)).parts
        and str(f) not in build_ipk.LEFT_OUT
    ]
    return imports_of(paths, Path(str(_bundled()[0].locate_file(""))))


def imports_of(paths: list[Path], base: Path) -> dict[str, list[str]]:
    """Module -> where these files import it, leaving out optional and type-checking imports."""
    found: dict[str, list[str]] = {}
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        skipped: set[int] = set()
        for node in ast.walk(tree):
            optional_try = isinstance(node, ast.Try) and _is_optional(
                [h.type for h in node.handlers]
            )
            type_checking = isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            if optional_try or type_checking:
                body: list[ast.stmt] = node.body  # type: ignore[attr-defined]
                skipped.update(id(n) for stmt in body for n in ast.walk(stmt))
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            where = f"{path.relative_to(base)}:{node.lineno}"
            for module in modules:
                found.setdefault(module, []).append(where)
    return found


def openwrt_package_for(module: str) -> str | None:
    """The OpenWrt package that must be installed for `import module`; None: python3-light."""
    parts = module.split(".")
    for length in range(len(parts), 0, -1):
        prefix = ".".join(parts[:length])
        if prefix in STDLIB_PACKAGES:
            return STDLIB_PACKAGES[prefix]
    top = parts[0]
    if top in bundled_modules():
        return None  # bundled under /usr/lib/loopspot/vendor
    if top in THIRD_PARTY_PACKAGES:
        return THIRD_PARTY_PACKAGES[top]
    if top in NO_OPENWRT_MODULE:
        raise AssertionError(f"no OpenWrt package has {top}: {NO_OPENWRT_MODULE[top]}")
    if top in sys.stdlib_module_names:
        return None
    raise AssertionError(
        f"no OpenWrt package is known for {top}: add it to DEPENDS in deploy/openwrt/Makefile "
        "and to THIRD_PARTY_PACKAGES here"
    )


def _missing_packages(imports: dict[str, list[str]], own: set[str]) -> list[str]:
    depends = package_depends()
    missing: list[str] = []
    for module, where in sorted(imports.items()):
        if module.split(".")[0] in own or module == "__future__":
            continue
        try:
            needed = openwrt_package_for(module)
        except AssertionError as exc:
            missing.append(f"{module} ({where[0]}): {exc}")
            continue
        if needed in OPTIONAL_PACKAGES:
            allowed, why = OPTIONAL_PACKAGES[needed]
            outside = [w for w in where if w.split(":")[0] not in allowed]
            if outside:
                missing.append(f"{module} ({outside[0]}): {needed} is optional ({why})")
        elif needed is not None and needed not in depends:
            missing.append(f"{module} ({where[0]}): add +{needed} to DEPENDS")
    return missing


def test_every_module_the_agent_imports_is_installed_on_the_router() -> None:
    missing = _missing_packages(agent_imports(), {"agent"})
    assert not missing, "\n".join(missing)


def test_every_module_the_bundled_libraries_import_is_installed_on_the_router() -> None:
    # The standard library's pieces that OpenWrt splits out of python3-light are needed by
    # aiohttp, yarl, idna, jinja2 ... as much as by the agent.
    missing = _missing_packages(
        bundled_imports(), bundled_modules() | set(NEVER_IMPORTED_ON_THE_ROUTER)
    )
    assert not missing, "\n".join(missing)


def test_the_package_depends_on_no_library_it_bundles_nor_on_cryptography() -> None:
    depends = package_depends()
    assert "python3-cryptography" not in depends, OPTIONAL_PACKAGES["python3-cryptography"][1]
    for name in bundled_names():
        assert f"python3-{name}" not in depends, f"{name} is bundled: no +python3-{name}"


def test_build_ipk_installs_the_files_the_makefile_installs_where_it_installs_them() -> None:
    # The .ipk from build_ipk.py and the SDK's package hold the same files in the same places.
    installed = dict(re.findall(r"\$\(INSTALL_\w+\) \./files/([\w.-]+) \$\(1\)(\S+)", makefile()))
    ours = {name: f"/{target}" for name, target, _ in build_ipk.INSTALLED_FILES}
    assert installed == ours
    assert f"$(1)/{build_ipk.KEEP_FILE[0]}" in makefile()
    assert f'echo "{build_ipk.KEEP_FILE[1].strip()}"' in makefile()
    assert f"+|/{build_ipk.LIB_DIR}" in make_define("Py3Package/loopspot-agent/filespec")


def test_the_package_asks_for_the_kernel_and_user_space_tools_of_the_gate() -> None:
    depends = package_depends()
    # tproxy hands captive phones' web traffic to the portal; conntrack-tools cut a revoked
    # phone's connections where fw4 tracks them.
    assert {"python3-light", "nftables-json", "kmod-nft-tproxy", "conntrack"} <= depends


def test_every_file_the_makefile_installs_is_in_the_repository() -> None:
    installed = set(re.findall(r"\./files/([\w.-]+)", makefile()))
    assert installed, "the Makefile installs nothing from files/"
    for name in sorted(installed):
        assert (FILES / name).is_file(), f"the Makefile installs files/{name}, which is missing"
    sources = make_variable("LOOPSPOT_SOURCES").split()
    assert {"pyproject.toml", "agent", "portal_templates"} <= set(sources)
    for name in sources:
        assert (REPO / name).exists(), f"LOOPSPOT_SOURCES names {name}, which is missing"
    assert "cloud" not in sources, "the cloud backend does not belong on a router"


def test_the_uci_config_is_a_conffile_so_upgrades_keep_the_merchants_settings() -> None:
    assert CONFIG_INSTALLED in make_define("Package/loopspot-agent/conffiles").split()
    assert f"$(1){CONFIG_INSTALLED}" in makefile()


def test_every_agent_package_has_an_init_py_so_the_wheel_takes_it() -> None:
    # setuptools' packages.find only takes directories with an __init__.py; any other
    # directory of modules would be silently missing from the router.
    for directory in sorted({p.parent for p in (REPO / "agent").rglob("*.py")}):
        assert (directory / "__init__.py").is_file(), f"{directory.relative_to(REPO)} has none"


def test_the_scripts_call_the_hook_where_the_makefile_installs_it() -> None:
    assert f"./files/{HOOK.name} $(1){HOOK_INSTALLED}" in makefile()
    for script in (INIT, UCI_DEFAULTS):
        assert HOOK_INSTALLED in script.read_text(), f"{script.name} does not run the hook"
    assert f"{HOOK_INSTALLED} --remove" in make_define("Package/loopspot-agent/prerm")


def test_removing_the_package_flushes_the_table_but_upgrading_does_not() -> None:
    prerm = make_define("Package/loopspot-agent/prerm")
    assert "/etc/init.d/loopspot flush" in prerm
    assert prerm.index("PKG_UPGRADE") < prerm.index("/etc/init.d/loopspot flush")


# --- the shell scripts ----------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    "script", [INIT, UCI_DEFAULTS, HOOK, BOOT_GATE, GATE_INIT], ids=lambda p: p.name
)
def test_shell_script_parses(shell: str, script: Path) -> None:
    result = subprocess.run([*shell.split(), "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_scripts_are_installed_executable() -> None:
    for script in (INIT, UCI_DEFAULTS, HOOK, BOOT_GATE, GATE_INIT):
        assert f"$(INSTALL_BIN) ./files/{script.name}" in makefile()


def test_the_scripts_use_the_agents_defaults() -> None:
    from agent.settings import Settings

    defaults = Settings()
    init, hook = INIT.read_text(), HOOK.read_text()
    assert f"DEFAULT_PORTAL_ADDRESS={defaults.portal_address}\n" in init
    assert f"DEFAULT_STATE_DIR={defaults.state_dir}\n" in init
    assert f"DEFAULT_FLASH_DIR={defaults.flash_dir}\n" in init
    assert f"DEFAULT_PORTAL_ADDRESS={defaults.portal_address}\n" in hook
    assert f"DEFAULT_PORTAL_PORT={defaults.portal_port}\n" in hook
    assert f"DEFAULT_PORTAL_HTTPS_PORT={defaults.portal_https_port}\n" in hook
    assert f"PORTAL_NAME_FILE={PORTAL_NAME_FILE} " in hook
    assert f"DEFAULT_LAN_INTERFACE={' '.join(defaults.lan_interfaces)}\n" in hook
    assert f"DEFAULT_FLASH_DIR={defaults.flash_dir}\n" in hook
    assert f"CLOUD_DOMAINS_FILE={CLOUD_DOMAINS_FILE} " in hook
    boot_gate = BOOT_GATE.read_text()
    assert f"DEFAULT_FLASH_DIR={defaults.flash_dir}\n" in boot_gate
    assert f"BOOT_GATE_FILE={BOOT_GATE_FILE} " in boot_gate


# A `uci` that keeps its configs in a JSON file: enough of uci(1) for these scripts.
FAKE_UCI = r"""
import json, os, sys

STATE = os.environ["FAKE_UCI_STATE"]
with open(STATE) as f:
    state = json.load(f)
args = sys.argv[1:]
savedir = "/tmp/.uci"
while args and args[0].startswith("-"):
    flag = args.pop(0)
    if flag in ("-t", "-P", "-p", "-c"):
        value = args.pop(0)
        if flag in ("-t", "-P"):
            savedir = value
state["calls"].append(" ".join(sys.argv[1:]))
command, rest = args[0], args[1:]
staged = state["staged"].setdefault(savedir, json.loads(json.dumps(state["committed"])))


def save(code=0):
    with open(STATE, "w") as f:
        json.dump(state, f)
    sys.exit(code)


def find(package, ident):
    sections = staged.get(package, [])
    if ident.startswith("@"):
        kind, index = ident[1:-1].split("[")
        typed = [s for s in sections if s["type"] == kind]
        try:
            return typed[int(index)]
        except IndexError:
            return None
    return next((s for s in sections if s["name"] == ident), None)


def split(path):
    path, _, value = path.partition("=")
    parts = path.split(".", 2)
    return parts + [None] * (3 - len(parts)), value


def quote(v):
    return "'" + v.replace("'", "'\\''") + "'"


if command == "get":
    (package, ident, option), _ = split(rest[0])
    section = find(package, ident)
    if section is None or (option and option not in section["options"]):
        save(1)
    value = section["options"][option] if option else section["type"]
    print(" ".join(value) if isinstance(value, list) else value)
elif command == "show":
    package = rest[0]
    if package not in staged:
        save(1)
    counts = {}
    for s in staged[package]:
        index = counts[s["type"]] = counts.get(s["type"], -1) + 1
        ident = s["name"] or "@%s[%d]" % (s["type"], index)
        print("%s.%s=%s" % (package, ident, s["type"]))
        for k, v in s["options"].items():
            shown = " ".join(quote(x) for x in v) if isinstance(v, list) else quote(v)
            print("%s.%s.%s=%s" % (package, ident, k, shown))
elif command in ("set", "add_list", "del_list", "delete"):
    (package, ident, option), value = split(rest[0])
    section = find(package, ident)
    if command == "set" and option is None:
        if section is None:
            staged.setdefault(package, []).append({"name": ident, "type": value, "options": {}})
        else:
            section["type"] = value
    elif section is None:
        save(1)
    elif command == "set":
        section["options"][option] = value
    elif command == "add_list":
        old = section["options"].get(option, [])
        section["options"][option] = (old if isinstance(old, list) else [old]) + [value]
    elif command == "del_list":
        old = section["options"].get(option, [])
        section["options"][option] = [v for v in old if v != value]
    elif option is None:
        staged[package].remove(section)
    elif option in section["options"]:
        del section["options"][option]
    else:
        save(1)
elif command == "commit":
    for package in rest or list(staged):
        state["committed"][package] = json.loads(json.dumps(staged.get(package, [])))
    state["commits"].append(rest[0] if rest else "*")
else:
    sys.stderr.write("fake uci: unsupported command %s\n" % command)
    save(2)
save()
"""


@dataclass
class Router:
    """A fake router: stub commands on PATH and uci configs in a JSON file."""

    root: Path
    configs: dict[str, list[dict[str, Any]]]

    def __post_init__(self) -> None:
        self.bin = self.root / "bin"
        self.bin.mkdir()
        self.log = self.root / "calls.log"
        self.log.touch()
        self.state = self.root / "uci.json"
        self.state.write_text(
            json.dumps({"committed": self.configs, "staged": {}, "calls": [], "commits": []})
        )
        self.stub("uci", f"#!{sys.executable}\n{FAKE_UCI}")
        for name in ("logger", "nft", "dnsmasq-init"):
            self.stub(name, f'#!/bin/sh\necho "{name} $*" >> "{self.log}"\n')
        self.stub("pidof", '#!/bin/sh\n[ "$FAKE_DNSMASQ_RUNNING" = 1 ]\n')
        self.stub("loopspot-agent", '#!/bin/sh\nexit "${FAKE_CONFIG_CHECK:-0}"\n')
        self.stub(
            "ip", '#!/bin/sh\n[ -n "$FAKE_IP_ADDR" ] && echo "2: br-lan    inet $FAKE_IP_ADDR"\n:'
        )

    def stub(self, name: str, text: str) -> None:
        path = self.bin / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "HOME": str(self.root),
            "TMPDIR": str(self.root),
            "FAKE_UCI_STATE": str(self.state),
            "DNSMASQ_INIT": str(self.bin / "dnsmasq-init"),
            **extra,
        }

    def run(
        self, shell: str, script: Path, *args: str, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*shell.split(), str(script), *args],
            env=self.env(**env),
            capture_output=True,
            text=True,
            cwd=self.root,
            timeout=60,
        )

    def uci(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.state.read_text())
        return data

    def committed(self, package: str, name: str) -> dict[str, Any] | None:
        sections = self.uci()["committed"].get(package, [])
        return next((s for s in sections if s["name"] == name), None)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()


def section(kind: str, name: str | None = None, **options: str | list[str]) -> dict[str, Any]:
    return {"name": name, "type": kind, "options": options}


def shop_router(root: Path, **agent: str | list[str]) -> Router:
    """OpenWrt's default LAN and WAN, and a loopspot config with these agent options."""
    return Router(
        root,
        {
            "network": [
                section("interface", "lan", device="br-lan", proto="static", ipaddr="10.20.0.1/24"),
                section("interface", "wan", device="eth1", proto="dhcp"),
            ],
            "dhcp": [
                section("dnsmasq", None, domain="lan"),
                section("dhcp", "lan", interface="lan", start="100", dhcp_option=["6,10.20.0.1"]),
                section("dhcp", "wan", interface="wan", ignore="1"),
            ],
            "loopspot": [
                section("agent", "agent", **agent),
                section("walled_garden", None, domain=["Pay.Example.com", "login.example.net."]),
                section(
                    "walled_garden", None, domain=["pay.example.com", "*.bad", "cdn.example.org"]
                ),
            ],
        },
    )


@pytest.fixture(params=SHELLS)
def shell(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def router(tmp_path: Path) -> Router:
    return shop_router(
        tmp_path, lan_interface=["br-lan"], portal_address="10.20.0.1", portal_port="8080"
    )


def test_hook_advertises_the_captive_api_url_as_dhcp_option_114(router: Router, shell: str) -> None:
    result = router.run(shell, HOOK)
    assert result.returncode == 0, result.stderr
    lan = router.committed("dhcp", "lan")
    assert lan is not None
    assert lan["options"]["dhcp_option_force"] == ["114,http://10.20.0.1:8080/api/captive"]
    assert lan["options"]["dhcp_option"] == ["6,10.20.0.1"], "other DHCP options stay"
    wan = router.committed("dhcp", "wan")
    assert wan is not None and "dhcp_option_force" not in wan["options"]


def test_hook_option_114_is_the_url_the_portal_serves_its_api_on() -> None:
    # agent/portal/app.py routes the RFC 8908 API; the hook must advertise the same path.
    routes = (REPO / "agent" / "portal" / "app.py").read_text()
    path = re.search(r"^API_PATH=(\S+)$", HOOK.read_text(), re.M)
    assert path and re.search(rf'add_get\(\s*"{re.escape(path[1])}",\s*captive_api', routes)


def test_hook_fills_the_walled_garden_nftset_from_every_walled_garden_section(
    router: Router, shell: str
) -> None:
    result = router.run(shell, HOOK)
    assert result.returncode == 0, result.stderr
    ipset = router.committed("dhcp", "loopspot_walled_garden")
    assert ipset is not None and ipset["type"] == "ipset"
    options = ipset["options"]
    domains = options["domain"]
    assert domains == ["pay.example.com", "login.example.net", "cdn.example.org"]
    assert "*.bad" in result.stderr, "a value that is no domain is reported, not written"
    # OpenWrt's dnsmasq init turns this section into the nftset line below.
    family, table_family = options["family"], options["table_family"]
    nftset = f"nftset=/{'/'.join(domains)}/{family}#{table_family}#{options['table']}#"
    nftset += "#".join(options["name"])
    assert nftset == (
        "nftset=/pay.example.com/login.example.net/cdn.example.org/4#inet#loopspot#walled_garden"
    )


def test_hook_takes_the_clouds_walled_garden_domains_once_the_agent_kept_them(
    tmp_path: Path, shell: str
) -> None:
    flash = tmp_path / "flash"
    router = shop_router(tmp_path, portal_address="10.20.0.1", flash_dir=str(flash))
    flash.mkdir()
    (flash / CLOUD_DOMAINS_FILE).write_text("pay.cloud.example\nlogin.cloud.example\n")
    result = router.run(shell, HOOK)
    assert result.returncode == 0, result.stderr
    ipset = router.committed("dhcp", "loopspot_walled_garden")
    assert ipset is not None
    assert ipset["options"]["domain"] == ["pay.cloud.example", "login.cloud.example"]
    (flash / CLOUD_DOMAINS_FILE).unlink()  # the cloud's list withdrawn: the UCI one again
    assert router.run(shell, HOOK).returncode == 0
    ipset = router.committed("dhcp", "loopspot_walled_garden")
    assert ipset is not None and "pay.example.com" in ipset["options"]["domain"]


def test_hook_run_twice_changes_nothing_the_second_time(router: Router, shell: str) -> None:
    first = router.run(shell, HOOK, FAKE_DNSMASQ_RUNNING="1")
    assert first.returncode == 0, first.stderr
    after_first = router.uci()
    second = router.run(shell, HOOK, FAKE_DNSMASQ_RUNNING="1")
    assert second.returncode == 0, second.stderr
    after_second = router.uci()
    assert after_second["committed"] == after_first["committed"]
    assert after_second["commits"] == ["dhcp"], "committed once, on the first run"
    assert router.calls().count("dnsmasq-init reload") == 1


def test_hook_replaces_an_option_114_left_by_an_old_portal_address(
    tmp_path: Path, shell: str
) -> None:
    router = shop_router(tmp_path, portal_address="10.20.0.1")
    lan = router.uci()["committed"]["dhcp"][1]
    lan["options"]["dhcp_option"].append("114,http://192.168.1.1:2050/api/captive")
    lan["options"]["dhcp_option_force"] = ["114,http://10.9.9.9:2050/api/captive", "42,10.20.0.1"]
    state = router.uci()
    state["committed"]["dhcp"][1] = lan
    router.state.write_text(json.dumps(state))
    result = router.run(shell, HOOK)
    assert result.returncode == 0, result.stderr
    options = router.committed("dhcp", "lan")["options"]  # type: ignore[index]
    assert options["dhcp_option"] == ["6,10.20.0.1"]
    assert options["dhcp_option_force"] == ["42,10.20.0.1", "114,http://10.20.0.1:2050/api/captive"]


def test_hook_uses_the_agents_defaults_when_the_config_leaves_them_out(
    tmp_path: Path, shell: str
) -> None:
    from agent.settings import Settings

    defaults = Settings()
    router = shop_router(tmp_path)
    result = router.run(shell, HOOK)
    assert result.returncode == 0, result.stderr
    url = f"114,http://{defaults.portal_address}:{defaults.portal_port}/api/captive"
    assert router.committed("dhcp", "lan")["options"]["dhcp_option_force"] == [url]  # type: ignore[index]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("portal_address", "10.20.0.300"),
        ("portal_address", "pay.example.com"),
        ("portal_port", "0"),
        ("portal_https_port", "https"),
    ],
)
def test_hook_changes_nothing_for_a_bad_portal_setting(
    tmp_path: Path, shell: str, option: str, value: str
) -> None:
    router = shop_router(tmp_path, **{option: value})
    before = router.uci()["committed"]
    result = router.run(shell, HOOK)
    assert result.returncode == 2
    assert f"agent.{option}" in result.stderr
    assert router.uci()["committed"] == before


def test_hook_changes_nothing_when_the_agent_rejects_its_config(router: Router, shell: str) -> None:
    before = router.uci()["committed"]
    result = router.run(shell, HOOK, FAKE_CONFIG_CHECK="2")
    assert result.returncode == 2
    assert router.uci()["committed"] == before


def test_hook_leaves_dnsmasq_alone_when_it_is_not_running(router: Router, shell: str) -> None:
    result = router.run(shell, HOOK, FAKE_DNSMASQ_RUNNING="0")
    assert result.returncode == 0, result.stderr
    assert router.uci()["commits"] == ["dhcp"]
    assert "dnsmasq-init reload" not in router.calls()


def test_hook_remove_takes_option_114_and_the_walled_garden_out(router: Router, shell: str) -> None:
    assert router.run(shell, HOOK).returncode == 0
    result = router.run(shell, HOOK, "--remove", FAKE_DNSMASQ_RUNNING="1")
    assert result.returncode == 0, result.stderr
    assert router.committed("dhcp", "loopspot_walled_garden") is None
    options = router.committed("dhcp", "lan")["options"]  # type: ignore[index]
    assert options["dhcp_option_force"] == []
    assert options["dhcp_option"] == ["6,10.20.0.1"]
    assert "dnsmasq-init reload" in router.calls()


def test_hook_keeps_its_uci_changes_apart_from_other_sessions(router: Router, shell: str) -> None:
    router.run(shell, HOOK)
    calls = router.uci()["calls"]
    assert calls and all(call.startswith("-q -t ") for call in calls)


def test_first_boot_script_always_exits_0_so_openwrt_deletes_it(router: Router, shell: str) -> None:
    result = router.run(shell, UCI_DEFAULTS)
    assert result.returncode == 0, result.stderr


# --- the init script, under a stand-in for rc.common and procd --------------------------------

RC_COMMON = r"""
LOG="$1"; shift
extra_command() { echo "extra_command $1" >> "$LOG"; }
config_load() { echo "config_load $*" >> "$LOG"; }
config_get() {
	eval "__v=\${CFG_${2}_${3}-}"
	[ -n "$__v" ] || __v="$4"
	eval "$1=\$__v"
}
procd_open_instance() { echo "procd_open_instance $*" >> "$LOG"; }
procd_close_instance() { echo "procd_close_instance" >> "$LOG"; }
procd_set_param() {
	__line="procd_set_param"
	for __a; do __line="$__line|$__a"; done
	echo "$__line" >> "$LOG"
}
procd_add_reload_trigger() { echo "procd_add_reload_trigger $*" >> "$LOG"; }
start() { echo "rc.common start" >> "$LOG"; }
stop() { echo "rc.common stop" >> "$LOG"; }
. "$INIT"
for __f; do "$__f"; echo "returned $__f $?" >> "$LOG"; done
"""


def run_init(router: Router, shell: str, *functions: str, **env: str) -> list[str]:
    harness = router.root / "rc.common"
    harness.write_text(RC_COMMON)
    log = router.root / "init.log"
    log.write_text("")
    result = subprocess.run(
        [*shell.split(), str(harness), str(log), *functions],
        env=router.env(INIT=str(INIT), **env),
        capture_output=True,
        text=True,
        cwd=router.root,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return log.read_text().splitlines() + router.calls()


def procd_params(lines: list[str]) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for line in lines:
        if line.startswith("procd_set_param|"):
            name, *values = line.split("|")[1:]
            params[name] = values
    return params


@pytest.fixture
def init_env(tmp_path: Path) -> dict[str, str]:
    return {
        "CFG_agent_state_dir": str(tmp_path / "tmpfs" / "loopspot"),
        "CFG_agent_flash_dir": str(tmp_path / "flash" / "loopspot"),
        "CFG_agent_portal_address": "10.20.0.1",
        "FAKE_IP_ADDR": "10.20.0.1/24",
    }


def test_init_runs_the_agent_under_procd_and_respawns_it(
    router: Router, shell: str, init_env: dict[str, str]
) -> None:
    from agent.cli import _parser

    lines = run_init(router, shell, "start_service", **init_env)
    assert "procd_open_instance agent" in lines
    params = procd_params(lines)
    command = params["command"]
    assert command[0] == "/usr/bin/loopspot-agent"
    args = _parser().parse_args(command[1:])  # the agent's own CLI accepts the command
    assert args.command == "run"
    assert str(args.config) == CONFIG_INSTALLED
    assert "respawn" in params
    assert params["file"] == [CONFIG_INSTALLED], "a changed config restarts the agent"
    assert params["stdout"] == ["1"] and params["stderr"] == ["1"]
    for directory in ("tmpfs/loopspot", "flash/loopspot"):
        made = router.root / directory
        assert made.is_dir() and stat.S_IMODE(made.stat().st_mode) == 0o700


def test_init_reloads_when_the_loopspot_config_changes(router: Router, shell: str) -> None:
    lines = run_init(router, shell, "service_triggers")
    assert "procd_add_reload_trigger loopspot" in lines


def test_init_reload_resubmits_the_agent_with_a_usable_config(
    router: Router, shell: str, init_env: dict[str, str]
) -> None:
    lines = run_init(router, shell, "reload_service", **init_env)
    assert "rc.common start" in lines
    assert "rc.common stop" not in lines


def test_init_reload_keeps_the_running_agent_when_the_new_portal_address_is_not_the_routers(
    router: Router, shell: str, init_env: dict[str, str]
) -> None:
    moved = {**init_env, "FAKE_IP_ADDR": "", "CFG_agent_portal_address": "192.0.2.1"}
    lines = run_init(router, shell, "reload_service", **moved)
    assert "rc.common start" not in lines
    assert any(line.startswith("logger") and "192.0.2.1" in line for line in lines)


def test_init_does_not_gate_clients_it_cannot_serve_a_portal_to(
    router: Router, shell: str, init_env: dict[str, str]
) -> None:
    # No interface has 192.0.2.1 and the network config does not give it to one.
    moved = {**init_env, "FAKE_IP_ADDR": "", "CFG_agent_portal_address": "192.0.2.1"}
    lines = run_init(router, shell, "start_service", **moved)
    assert not any(line.startswith("procd_open_instance") for line in lines)


def test_init_accepts_the_configured_lan_address_before_it_is_up(
    router: Router, shell: str, init_env: dict[str, str]
) -> None:
    # network.lan.ipaddr is 10.20.0.1/24 but the bridge has no address yet (boot).
    lines = run_init(router, shell, "start_service", **{**init_env, "FAKE_IP_ADDR": ""})
    assert "procd_open_instance agent" in lines


def _functions(script: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+)\(\) \{\n(.*?)^\}", script, re.M | re.S))


def test_init_never_deletes_the_table_except_in_flush(
    router: Router, shell: str, init_env: dict[str, str]
) -> None:
    script = INIT.read_text()
    for name, body in _functions(script).items():
        if name != "flush":
            assert "nft" not in body, f"{name}() runs nft; only flush() may touch the table"
    defined = _functions(script)
    stops = [f for f in ("stop_service", "service_stopped", "stop", "shutdown") if f in defined]
    lines = run_init(router, shell, *stops, **init_env)
    assert not [line for line in lines if line.startswith("nft")], "stopping touched nft"


def test_init_flush_stops_the_agent_then_deletes_its_table(router: Router, shell: str) -> None:
    lines = run_init(router, shell, "flush")
    assert "extra_command flush" in lines
    steps = [line for line in lines if line.startswith(("nft", "rc.common stop"))]
    assert steps == [
        "rc.common stop",
        "nft list table inet loopspot",
        "nft delete table inet loopspot",
    ]


# --- the boot-time gate ---------------------------------------------------------------------


def test_the_boot_gate_runs_early_from_where_the_makefile_installs_it() -> None:
    assert f"./files/{BOOT_GATE.name} $(1){BOOT_GATE_INSTALLED}" in makefile()
    init = GATE_INIT.read_text()
    assert f"BOOT_GATE={BOOT_GATE_INSTALLED}\n" in init
    start = int(re.search(r"^START=(\d+)$", init, re.M)[1])  # type: ignore[index]
    agent_start = int(re.search(r"^START=(\d+)$", INIT.read_text(), re.M)[1])  # type: ignore[index]
    assert start <= 19 < agent_start, "before the network (20) and long before the agent"


def boot_gate_router(root: Path, table_up: bool) -> tuple[Router, Path]:
    """A router whose nft says whether the agent's table is up; the agent's boot file."""
    flash = root / "flash"
    router = shop_router(root, flash_dir=str(flash))
    router.stub(
        "nft",
        f'#!/bin/sh\necho "nft $*" >> "{router.log}"\n'
        f'[ "$1" = list ] && exit {0 if table_up else 1}\nexit 0\n',
    )
    return router, flash / BOOT_GATE_FILE


def test_boot_gate_loads_the_agents_captive_table_when_none_is_up(
    tmp_path: Path, shell: str
) -> None:
    router, boot_file = boot_gate_router(tmp_path, table_up=False)
    boot_file.parent.mkdir()
    boot_file.write_text("table inet loopspot {}\n")
    result = router.run(shell, BOOT_GATE)
    assert result.returncode == 0, result.stderr
    assert f"nft -f {boot_file}" in router.calls()


def test_boot_gate_never_replaces_a_table_that_is_up(tmp_path: Path, shell: str) -> None:
    router, boot_file = boot_gate_router(tmp_path, table_up=True)
    boot_file.parent.mkdir()
    boot_file.write_text("table inet loopspot {}\n")
    assert router.run(shell, BOOT_GATE).returncode == 0
    assert not [call for call in router.calls() if call.startswith("nft -f")]


def test_boot_gate_does_nothing_before_the_agent_has_ever_run(tmp_path: Path, shell: str) -> None:
    router, _ = boot_gate_router(tmp_path, table_up=False)
    assert router.run(shell, BOOT_GATE).returncode == 0
    assert not [call for call in router.calls() if call.startswith("nft")]


def portal_router(root: Path, name: str | None, **agent: str | list[str]) -> Router:
    """A shop router whose agent serves the HTTPS API for `name` (None: no certificate)."""
    flash = root / "flash"
    flash.mkdir()
    if name is not None:
        (flash / PORTAL_NAME_FILE).write_text(f"{name}\n")
    return shop_router(root, portal_address="10.20.0.1", flash_dir=str(flash), **agent)


def option_114(router: Router) -> list[str]:
    lan = router.committed("dhcp", "lan")
    assert lan is not None
    return [v for v in lan["options"]["dhcp_option_force"] if v.startswith("114,")]


def test_hook_points_option_114_at_the_https_api_once_the_portal_has_a_certificate(
    tmp_path: Path, shell: str
) -> None:
    router = portal_router(tmp_path, "r1.portal.example.com")
    result = router.run(shell, HOOK)
    assert result.returncode == 0, result.stderr
    assert option_114(router) == ["114,https://r1.portal.example.com:8443/api/captive"]
    # The phone resolves the name through the LAN's dnsmasq to the portal address.
    domain = router.committed("dhcp", "loopspot_portal")
    assert domain is not None and domain["type"] == "domain"
    assert domain["options"] == {"name": "r1.portal.example.com", "ip": "10.20.0.1"}
    (tmp_path / "flash" / PORTAL_NAME_FILE).unlink()  # the certificate withdrawn
    assert router.run(shell, HOOK).returncode == 0
    assert option_114(router) == ["114,http://10.20.0.1:2050/api/captive"]
    assert router.committed("dhcp", "loopspot_portal") is None


def test_hook_leaves_the_port_out_of_the_https_url_on_443(tmp_path: Path, shell: str) -> None:
    router = portal_router(tmp_path, "r1.portal.example.com", portal_https_port="443")
    assert router.run(shell, HOOK).returncode == 0
    assert option_114(router) == ["114,https://r1.portal.example.com/api/captive"]


@pytest.mark.parametrize("name", ["", "not a name", "localhost", "evil/name.com"])
def test_hook_keeps_the_http_url_when_the_portal_name_is_no_domain(
    tmp_path: Path, shell: str, name: str
) -> None:
    router = portal_router(tmp_path, name)
    assert router.run(shell, HOOK).returncode == 0
    assert option_114(router) == ["114,http://10.20.0.1:2050/api/captive"]
    assert router.committed("dhcp", "loopspot_portal") is None


def test_hook_remove_takes_the_portals_name_out_too(tmp_path: Path, shell: str) -> None:
    router = portal_router(tmp_path, "r1.portal.example.com")
    assert router.run(shell, HOOK).returncode == 0
    assert router.run(shell, HOOK, "--remove").returncode == 0
    assert router.committed("dhcp", "loopspot_portal") is None
    assert option_114(router) == []


def two_lan_router(root: Path, name: str | None, **agent: str | list[str]) -> Router:
    """The shop's LAN (br-lan, 10.20.0.1) and a guest VLAN (br-guest, 10.30.0.1), both captive."""
    router = portal_router(
        root, name, lan_interface=["br-lan"], lan=["br-guest=10.30.0.1"], **agent
    )
    state = router.uci()
    state["committed"]["network"].append(
        section("interface", "guest", device="br-guest", proto="static", ipaddr="10.30.0.1/24")
    )
    state["committed"]["dhcp"].append(section("dhcp", "guest", interface="guest", start="100"))
    router.state.write_text(json.dumps(state))
    return router


def pool_option_114(router: Router, pool: str) -> list[str]:
    found = router.committed("dhcp", pool)
    assert found is not None
    return [v for v in found["options"].get("dhcp_option_force", []) if v.startswith("114,")]


def portal_domains(router: Router) -> dict[str, tuple[str, str]]:
    """Each `config domain` section the hook wrote: name -> (DNS name, address)."""
    sections = router.uci()["committed"]["dhcp"]
    return {
        s["name"]: (s["options"]["name"], s["options"]["ip"])
        for s in sections
        if s["type"] == "domain" and s["name"].startswith("loopspot_portal")
    }


def test_hook_gives_each_lans_pool_the_http_api_at_that_lans_own_portal_address(
    tmp_path: Path, shell: str
) -> None:
    router = two_lan_router(tmp_path, None)
    result = router.run(shell, HOOK)
    assert result.returncode == 0, result.stderr
    assert pool_option_114(router, "lan") == ["114,http://10.20.0.1:2050/api/captive"]
    assert pool_option_114(router, "guest") == ["114,http://10.30.0.1:2050/api/captive"]
    assert pool_option_114(router, "wan") == []
    assert portal_domains(router) == {}


def test_hook_gives_every_lan_the_https_api_and_the_name_resolves_to_each_lans_address(
    tmp_path: Path, shell: str
) -> None:
    router = two_lan_router(tmp_path, "r1.portal.example.com")
    assert router.run(shell, HOOK).returncode == 0
    https = "114,https://r1.portal.example.com:8443/api/captive"
    assert pool_option_114(router, "lan") == pool_option_114(router, "guest") == [https]
    # One name, one certificate; dnsmasq's localise-queries answers each LAN its own address.
    assert portal_domains(router) == {
        "loopspot_portal": ("r1.portal.example.com", "10.20.0.1"),
        "loopspot_portal_2": ("r1.portal.example.com", "10.30.0.1"),
    }
    commits = len(router.uci()["commits"])
    assert router.run(shell, HOOK).returncode == 0
    assert len(router.uci()["commits"]) == commits, "a second run changes nothing"

    state = router.uci()  # the guest VLAN taken out of the agent's config
    agent = next(s for s in state["committed"]["loopspot"] if s["type"] == "agent")
    del agent["options"]["lan"]
    router.state.write_text(json.dumps(state))
    assert router.run(shell, HOOK).returncode == 0
    assert portal_domains(router) == {"loopspot_portal": ("r1.portal.example.com", "10.20.0.1")}
    assert pool_option_114(router, "guest") == []
    assert router.run(shell, HOOK, "--remove").returncode == 0
    assert portal_domains(router) == {}


def test_hook_serves_lan_entries_alone_with_no_lan_interface_nor_portal_address(
    tmp_path: Path, shell: str
) -> None:
    router = two_lan_router(tmp_path, None)
    state = router.uci()
    agent = next(s for s in state["committed"]["loopspot"] if s["type"] == "agent")
    del agent["options"]["lan_interface"], agent["options"]["portal_address"]
    agent["options"]["lan"] = ["br-guest=10.30.0.1", "br-lan=10.20.0.1"]
    router.state.write_text(json.dumps(state))
    assert router.run(shell, HOOK).returncode == 0
    assert pool_option_114(router, "lan") == ["114,http://10.20.0.1:2050/api/captive"]
    assert pool_option_114(router, "guest") == ["114,http://10.30.0.1:2050/api/captive"]


@pytest.mark.parametrize("entry", ["br-guest", "br-guest=10.30.0.300", "=10.30.0.1"])
def test_hook_changes_nothing_for_a_lan_entry_that_is_not_interface_and_address(
    tmp_path: Path, entry: str
) -> None:
    router = shop_router(tmp_path, portal_address="10.20.0.1", lan=[entry])
    result = router.run("sh", HOOK)
    assert result.returncode == 2
    assert "agent.lan" in result.stderr
    assert router.uci()["commits"] == []


def test_hook_warns_when_dnsmasq_would_answer_a_phone_another_lans_address(
    tmp_path: Path,
) -> None:
    router = two_lan_router(tmp_path, "r1.portal.example.com")
    state = router.uci()
    state["committed"]["dhcp"][0]["options"]["localise_queries"] = "0"
    router.state.write_text(json.dumps(state))
    result = router.run("sh", HOOK)
    assert result.returncode == 0
    assert "localise_queries is off" in result.stderr
