"""The .ipk that deploy/openwrt/build_ipk.py makes, read back as opkg would unpack it.

No root: the package is built into a temporary folder and its three archives opened.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.ipk import build_ipk

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Ipk:
    """A built package: its outer members, control files and data files."""

    path: Path
    outer: list[str]
    control: dict[str, tarfile.TarInfo]
    control_text: dict[str, str]
    data: dict[str, tarfile.TarInfo]

    def field(self, name: str) -> str:
        for line in self.control_text["control"].splitlines():
            if line.startswith(f"{name}: "):
                return line.split(": ", 1)[1]
        raise AssertionError(f"the control file has no {name} field")


def _members(blob: bytes) -> tuple[tarfile.TarFile, dict[str, tarfile.TarInfo]]:
    tar = tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz")  # noqa: SIM115 (in memory)
    return tar, {m.name: m for m in tar.getmembers()}


def read_ipk(path: Path) -> Ipk:
    """Open the outer tar.gz, then control.tar.gz and data.tar.gz inside it."""
    outer, members = _members(path.read_bytes())
    blobs = {name: outer.extractfile(m).read() for name, m in members.items()}  # type: ignore[union-attr]
    control_tar, control = _members(blobs["./control.tar.gz"])
    texts = {
        name.removeprefix("./"): control_tar.extractfile(m).read().decode()  # type: ignore[union-attr]
        for name, m in control.items()
        if m.isfile()
    }
    _, data = _members(blobs["./data.tar.gz"])
    assert blobs["./debian-binary"] == b"2.0\n"
    return Ipk(path, list(members), control, texts, data)


@pytest.fixture(scope="module")
def ipk(tmp_path_factory: pytest.TempPathFactory) -> Ipk:
    out = tmp_path_factory.mktemp("ipk")
    done = subprocess.run(
        [sys.executable, str(build_ipk.__file__), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip())
    assert path.parent == out and path.is_file()
    return read_ipk(path)


def files(ipk: Ipk) -> set[str]:
    return {name.removeprefix(".") for name, m in ipk.data.items() if m.isfile()}


def test_the_ipk_is_laid_out_as_openwrts_ipkg_build_makes_it(ipk: Ipk) -> None:
    assert ipk.outer == ["./debian-binary", "./data.tar.gz", "./control.tar.gz"]
    assert ipk.path.name == f"loopspot-agent_{ipk.field('Version')}_all.ipk"
    every = [*ipk.control.values(), *ipk.data.values()]
    assert all(m.uid == 0 and m.gid == 0 for m in every), "owned by root"
    names = list(ipk.data)
    assert names == sorted(names, key=lambda n: n.split("/")), "sorted, as tar --sort=name"
    assert names[0] == "."


def test_the_control_file_names_the_package_its_version_and_dependencies(ipk: Ipk) -> None:
    assert ipk.field("Package") == "loopspot-agent"
    version = build_ipk.make_value("PKG_VERSION")
    assert ipk.field("Version") == f"{version}-{build_ipk.make_value('PKG_RELEASE')}"
    assert ipk.field("Architecture") == "all"
    assert ipk.field("License") == "Apache-2.0"
    assert ipk.field("Section") == "net"
    assert ipk.field("Maintainer")
    assert ipk.field("Description").startswith("Loopspot")
    depends = [d.split(" (")[0] for d in ipk.field("Depends").split(", ")]
    assert set(depends) == set(build_ipk.package_depends()), "the feed Makefile's DEPENDS"
    assert "python3-cryptography" not in depends
    assert not {"python3-aiohttp", "python3-paho-mqtt", "python3-jinja2"} & set(depends)
    major, minor = sys.version_info[:2]
    pins = [d for d in ipk.field("Depends").split(", ") if d.startswith("python3-light ")]
    assert pins == [
        f"python3-light (>= {major}.{minor})",
        f"python3-light (<< {major}.{minor + 1})",
    ]


def test_installed_size_is_the_bytes_of_the_data(ipk: Ipk) -> None:
    total = sum(m.size for m in ipk.data.values() if m.isfile())
    assert int(ipk.field("Installed-Size")) == total


def test_the_merchants_config_is_a_conffile(ipk: Ipk) -> None:
    assert ipk.control_text["conffiles"].split() == ["/etc/config/loopspot"]
    assert "/etc/config/loopspot" in files(ipk)


def test_the_maintainer_scripts_are_openwrts_defaults_with_the_packages_prerm(ipk: Ipk) -> None:
    scripts = {"postinst", "prerm", "prerm-pkg"}
    assert scripts <= set(ipk.control_text)
    for name in scripts:
        assert ipk.control[f"./{name}"].mode == 0o755
        assert ipk.control_text[name].startswith("#!/bin/sh\n")
    assert 'default_postinst "$0" "$@"' in ipk.control_text["postinst"]
    assert 'default_prerm "$0" "$@"' in ipk.control_text["prerm"]
    prerm = ipk.control_text["prerm-pkg"]
    assert "/etc/init.d/loopspot flush" in prerm
    assert "/usr/libexec/loopspot/dnsmasq-sync --remove" in prerm
    assert prerm.index("PKG_UPGRADE") < prerm.index("flush"), "an upgrade keeps the gate up"


@pytest.mark.parametrize("shell", ["/bin/sh", "busybox sh"])
@pytest.mark.parametrize("script", ["postinst", "prerm", "prerm-pkg"])
def test_the_maintainer_scripts_parse(ipk: Ipk, tmp_path: Path, shell: str, script: str) -> None:
    if shell.startswith("busybox") and not shutil.which("busybox"):
        pytest.skip("no busybox on this machine")
    path = tmp_path / script
    path.write_text(ipk.control_text[script])
    done = subprocess.run([*shell.split(), "-n", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_prerm_does_nothing_while_an_image_is_built(ipk: Ipk, tmp_path: Path) -> None:
    # IPKG_INSTROOT is set when the Image Builder installs into a root folder: no flush.
    path = tmp_path / "prerm-pkg"
    path.write_text(ipk.control_text["prerm-pkg"])
    done = subprocess.run(
        ["/bin/sh", str(path)], env={"IPKG_INSTROOT": str(tmp_path), "PATH": "/nonexistent"}
    )
    assert done.returncode == 0


def test_the_package_installs_the_agent_its_scripts_and_its_libraries(ipk: Ipk) -> None:
    installed = files(ipk)
    for _, target, mode in build_ipk.INSTALLED_FILES:
        assert f"/{target}" in installed
        assert ipk.data[f"./{target}"].mode == mode
    assert "/lib/upgrade/keep.d/loopspot" in installed
    for template in (REPO / "portal_templates").rglob("*"):
        if template.is_file() and "__pycache__" not in template.parts:
            relative = template.relative_to(REPO)
            assert f"/usr/share/loopspot/{relative}" in installed, relative
    for module in sorted((REPO / "agent").rglob("*.py")):
        pyc = f"/usr/lib/loopspot/{module.relative_to(REPO).with_suffix('.pyc')}"
        assert pyc in installed, f"{module.relative_to(REPO)} is not in the package"
    for library in ("aiohttp", "aiomqtt", "paho/mqtt", "jinja2", "multidict", "yarl"):
        assert f"/usr/lib/loopspot/vendor/{library}/__init__.pyc" in installed, library


def test_the_agent_ships_as_bytecode_only(ipk: Ipk) -> None:
    python = [f for f in files(ipk) if f.startswith("/usr/lib/loopspot/")]
    assert not [f for f in python if f.endswith(".py")]
    assert not [f for f in python if "__pycache__" in f]


def test_nothing_from_the_cloud_or_the_lab_is_inside(ipk: Ipk) -> None:
    for name in files(ipk):
        parts = name.split("/")
        assert not {"cloud", "lab", "tests", "bench"} & set(parts), name


def test_no_compiled_extension_and_no_cryptography_is_inside(ipk: Ipk) -> None:
    # Architecture all: a .so would run on one CPU only. cryptography is not bundled.
    for name in files(ipk):
        assert not name.endswith((".so", ".pyd", ".c", ".pyx")), name
        assert "/cryptography" not in name and "/_cffi" not in name, name


def test_each_bundled_library_carries_its_license(ipk: Ipk) -> None:
    installed = files(ipk)
    for dist in build_ipk.bundled_distributions():
        info = f"/usr/lib/loopspot/vendor/{dist.metadata['Name'].replace('-', '_')}-{dist.version}"
        found = {f for f in installed if f.lower().startswith(info.lower() + ".dist-info/")}
        assert any(f.lower().endswith("/metadata") for f in found), dist.metadata["Name"]
        assert any("licen" in f.lower() or "copying" in f.lower() for f in found), found


def test_the_same_checkout_builds_the_same_bytes(ipk: Ipk, tmp_path: Path) -> None:
    # In a fresh process, as the first: marshal's output depends on what the process holds.
    command = [sys.executable, str(build_ipk.__file__), "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    assert Path(done.stdout.strip()).read_bytes() == ipk.path.read_bytes()


@pytest.mark.parametrize(
    ("requirement", "needed"),
    [
        ("frozenlist>=1.1.1", True),
        ('typing_extensions>=4.4; python_version < "3.13"', True),  # on 24.10's 3.11
        ('async-timeout<6.0,>=4.0; python_version < "3.11"', False),
        (
            'aiodns>=3.3.0; (sys_platform != "android" and sys_platform != "ios") and extra == "x"',
            False,
        ),
        ("pysocks; extra == 'proxy'", False),
        ('brotlicffi; platform_python_implementation != "CPython"', False),
        ('tomli; python_version < "3.11" or sys_platform == "linux"', True),
    ],
)
def test_a_requirement_is_bundled_when_openwrts_pythons_need_it(
    requirement: str, needed: bool
) -> None:
    assert build_ipk.requirement_applies(requirement) is needed


# What each bundled library runs on without its C extension: module -> a check of it.
PURE_PYTHON_FALLBACKS = {
    "aiohttp.http_parser": "HttpRequestParser.__module__ == 'aiohttp.http_parser'",
    "multidict": "MultiDict.__module__ == 'multidict._multidict_py'",
    "yarl._quoting": "_Quoter.__module__ == 'yarl._quoting_py'",
    "frozenlist": "FrozenList.__module__ == 'frozenlist'",
    "propcache.api": "under_cached_property.__module__ == 'propcache._helpers_py'",
    "markupsafe": "_escape_inner.__module__ == 'markupsafe._native'",
}


def test_the_bundled_libraries_run_on_their_pure_python_code_on_the_system_python(
    ipk: Ipk, tmp_path: Path
) -> None:
    # The system's Python stands for the router's: none of these libraries is installed in
    # it, so all that imports comes from the package.
    root = tmp_path / "root"
    with tarfile.open(ipk.path, "r:gz") as outer:
        data = outer.extractfile("./data.tar.gz")
        assert data is not None
        with tarfile.open(fileobj=data, mode="r:gz") as tree:
            tree.extractall(root, filter="tar")
    lib = root / "usr/lib/loopspot"
    checks = "\n".join(
        f"import {module}\nassert {module}.{check}, {module!r}"
        for module, check in PURE_PYTHON_FALLBACKS.items()
    )
    code = (
        f"import sys; sys.path[:0] = [{str(lib)!r}, {str(lib / 'vendor')!r}]\n"
        "import agent.daemon, agent.link.runtime, aiomqtt, jinja2, paho.mqtt.client\n"
        "assert paho.mqtt.__version__.startswith('2.'), paho.mqtt.__version__\n"
        f"{checks}\n"
        "assert not [m for m in sys.modules if m.startswith('cryptography')]\n"
        "print(sorted({m.__file__ for m in list(sys.modules.values())"
        " if getattr(m, '__file__', None) and m.__file__.endswith('.so')}))\n"
    )
    done = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", code], capture_output=True, text=True, cwd="/", timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert str(root) not in done.stdout, f"a C extension from the package: {done.stdout}"


def test_the_sdk_gets_the_same_libraries_as_sources(ipk: Ipk, tmp_path: Path) -> None:
    # `make vendor`: what deploy/openwrt/Makefile copies under /usr/lib/loopspot/vendor.
    target = tmp_path / "vendor"
    command = [sys.executable, str(build_ipk.__file__), "--vendor-only", str(target)]
    subprocess.run(command, capture_output=True, check=True, timeout=120)
    sources = {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()}
    assert not [s for s in sources if s.endswith((".so", ".pyc"))]
    as_installed = {s.removesuffix(".py") + ".pyc" if s.endswith(".py") else s for s in sources}
    vendor = "/usr/lib/loopspot/vendor/"
    in_ipk = {f.removeprefix(vendor) for f in files(ipk) if f.startswith(vendor)}
    assert as_installed == in_ipk
