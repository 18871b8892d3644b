#!/usr/bin/env python3
"""Build loopspot-agent_<version>_all.ipk from this checkout: no download, no SDK.

The package holds the agent as bytecode, the files of deploy/openwrt/files/, and
pure-Python copies of the libraries the agent needs that OpenWrt's feeds lack or ship too
old (aiohttp and its dependencies, aiomqtt, paho-mqtt 2.x, jinja2). Those copies come from
the distributions installed in the Python that runs this script (the checkout's .venv),
read through importlib.metadata; C extensions are left out, their pure-Python fallbacks
used. docs/openwrt.md, "Dependencies per release", says why.

Usage: .venv/bin/python deploy/openwrt/build_ipk.py [--out DIR] [--vendor-only DIR]
The .ipk is laid out as OpenWrt's scripts/ipkg-build makes it: a gzip'd tar of
./debian-binary, ./data.tar.gz and ./control.tar.gz, owned by root, sorted, dated by the
last commit (or SOURCE_DATE_EPOCH).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata as metadata
import io
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO / "deploy" / "openwrt"
FILES = PACKAGE_DIR / "files"
MAKEFILE = PACKAGE_DIR / "Makefile"

PACKAGE = "loopspot-agent"
LIB_DIR = "usr/lib/loopspot"  # the agent's own package: /usr/lib/loopspot/agent
VENDOR_DIR = f"{LIB_DIR}/vendor"  # the bundled libraries, first on the launcher's sys.path
TEMPLATES_DIR = "usr/share/loopspot/portal_templates"
# The Pythons of the releases the package is for (24.10: 3.11, 25.12: 3.13): a library's
# requirement counts when its marker holds for any of them.
TARGET_PYTHONS = ("3.11", "3.13")
# pyproject.toml dependencies that are not bundled, and why.
NOT_BUNDLED = {
    "cryptography": "only enrolment and renewal use it, never the daemon; a C and Rust "
    "library that cannot be copied as pure Python",
}
# Modules of bundled libraries that nothing on the router imports, left out (with what they
# would need): aiohttp's gunicorn worker (gunicorn, uvloop) and its test helpers (pytest).
LEFT_OUT = ("aiohttp/worker.py", "aiohttp/pytest_plugin.py", "aiohttp/test_utils.py")

# (file in deploy/openwrt/files, where it is installed, mode). The feed Makefile installs
# the same files; tests/deploy keeps the two in step.
INSTALLED_FILES = (
    ("loopspot-agent", "usr/bin/loopspot-agent", 0o755),
    ("loopspot.init", "etc/init.d/loopspot", 0o755),
    ("loopspot-gate.init", "etc/init.d/loopspot-gate", 0o755),
    ("loopspot.config", "etc/config/loopspot", 0o600),
    ("loopspot.uci-defaults", "etc/uci-defaults/99-loopspot", 0o755),
    ("dnsmasq-loopspot.sh", "usr/libexec/loopspot/dnsmasq-sync", 0o755),
    ("loopspot-boot-gate.sh", "usr/libexec/loopspot/boot-gate", 0o755),
)
KEEP_FILE = ("lib/upgrade/keep.d/loopspot", "/etc/loopspot/\n")  # keys survive sysupgrade
CONFFILES = ("/etc/config/loopspot",)

# OpenWrt's generated maintainer scripts for opkg (include/package-pack.mk): default_postinst
# runs the package's uci-defaults, enables and starts its init scripts; default_prerm sources
# the package's own prerm (prerm-pkg: the feed Makefile's Package/loopspot-agent/prerm), then
# stops its init scripts and, unless upgrading, disables them.
POSTINST = """#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
. "${IPKG_INSTROOT}/lib/functions.sh"
default_postinst "$0" "$@"
"""
PRERM = """#!/bin/sh
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
. "${IPKG_INSTROOT}/lib/functions.sh"
default_prerm "$0" "$@"
"""


class BuildError(Exception):
    """The package cannot be built from this checkout; the message says what to fix."""


# --- what goes in ------------------------------------------------------------------------


def make_value(name: str, text: str | None = None) -> str:
    """A `NAME:=value` of the feed Makefile."""
    text = MAKEFILE.read_text() if text is None else text
    match = re.search(rf"^[ \t]*{re.escape(name)}\s*[:?]?=[ \t]*(.*)$", text, re.M)
    if not match:
        raise BuildError(f"deploy/openwrt/Makefile sets no {name}")
    return match[1].strip()


def make_define(name: str, text: str | None = None) -> str:
    """The body of `define NAME ... endef` in the feed Makefile."""
    text = MAKEFILE.read_text() if text is None else text
    match = re.search(rf"^define {re.escape(name)}\n(.*?)^endef$", text, re.M | re.S)
    if not match:
        raise BuildError(f"deploy/openwrt/Makefile has no 'define {name}'")
    return match[1]


def package_depends() -> list[str]:
    """Package/loopspot-agent's DEPENDS, in order, without the '+'."""
    body = make_define("Package/loopspot-agent")
    match = re.search(r"DEPENDS:=((?:.*\\\n)*.*)", body)
    if not match:
        raise BuildError("Package/loopspot-agent in deploy/openwrt/Makefile has no DEPENDS")
    return [t[1:] for t in match[1].replace("\\\n", " ").split() if t.startswith("+")]


def agent_requirements() -> list[str]:
    """The agent's runtime requirements from pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


def distribution_name(requirement: str) -> str:
    """The normalised distribution name of a requirement: 'Paho_MQTT>=2' -> 'paho-mqtt'."""
    name = re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


_TOKEN = re.compile(r"\s*(\(|\)|'[^']*'|\"[^\"]*\"|===|==|!=|<=|>=|~=|<|>|not in|in|and|or|\w+)")
_VERSION_VARIABLES = {"python_version", "python_full_version", "implementation_version"}


def marker_holds(marker: str, python: str) -> bool:
    """Does a PEP 508 environment marker hold on OpenWrt's CPython `python`, no extras?"""
    env = {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "extra": "",
    }
    tokens: list[str] = _TOKEN.findall(marker)
    if "".join(tokens).replace(" ", "") != marker.replace(" ", ""):
        raise BuildError(f"cannot read the environment marker {marker!r}")
    position = 0

    def take() -> str:
        nonlocal position
        position += 1
        return tokens[position - 1]

    def value(token: str) -> tuple[str, bool]:
        if token[0] in "'\"":
            return token[1:-1], False
        if token not in env:
            raise BuildError(f"unknown marker variable {token!r} in {marker!r}")
        return env[token], token in _VERSION_VARIABLES

    def compare() -> bool:
        if tokens[position] == "(":
            take()
            result = either()
            take()  # ")"
            return result
        (left, left_v), op, (right, right_v) = value(take()), take(), value(take())
        if op in ("in", "not in"):
            return (left in right) == (op == "in")
        if left_v or right_v:
            a = tuple(int(p) for p in re.findall(r"\d+", left)[:3])
            b = tuple(int(p) for p in re.findall(r"\d+", right)[:3])
            a, b = a[: len(b)] if op == "~=" else a, b
        else:
            a, b = (left,), (right,)  # type: ignore[assignment]
        return {
            "==": a == b,
            "===": a == b,
            "~=": a >= b,
            "!=": a != b,
            "<": a < b,
            "<=": a <= b,
            ">": a > b,
            ">=": a >= b,
        }[op]

    def both() -> bool:
        result = compare()
        while position < len(tokens) and tokens[position] == "and":
            take()
            result = compare() and result
        return result

    def either() -> bool:
        result = both()
        while position < len(tokens) and tokens[position] == "or":
            take()
            result = both() or result
        return result

    return either()


def requirement_applies(requirement: str) -> bool:
    """True when a Requires-Dist line is needed on one of the target Pythons (no extras)."""
    _, _, marker = requirement.partition(";")
    marker = marker.strip()
    return not marker or any(marker_holds(marker, python) for python in TARGET_PYTHONS)


def bundled_distributions() -> list[metadata.Distribution]:
    """The agent's requirements (but NOT_BUNDLED) and all they require, installed here."""
    wanted = [distribution_name(r) for r in agent_requirements()]
    queue = [name for name in wanted if name not in NOT_BUNDLED]
    found: dict[str, metadata.Distribution] = {}
    while queue:
        name = queue.pop(0)
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise BuildError(
                f"{name} is not installed in {sys.prefix}: run `make venv` and build with "
                ".venv/bin/python"
            ) from None
        found[name] = dist
        for requirement in dist.requires or []:
            if requirement_applies(requirement):
                queue.append(distribution_name(requirement))
    return sorted(found.values(), key=lambda d: distribution_name(d.metadata["Name"]))


# --- the data tree -------------------------------------------------------------------------


@dataclass(frozen=True)
class Bundled:
    """One bundled library: its name, version and the top-level names it installs."""

    name: str
    version: str
    top_level: tuple[str, ...]


def _compile(source: Path, target: Path, shown_as: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    py_compile.compile(
        str(source),
        cfile=str(target),
        dfile=shown_as,
        doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )


def _is_license(path: PurePosixPath) -> bool:
    in_dist_info = path.parts[0].endswith(".dist-info")
    upper = path.name.upper()
    return in_dist_info and (
        "licenses" in path.parts or upper.startswith(("LICENSE", "COPYING", "NOTICE"))
    )


def _metadata_headers(source: Path) -> str:
    """METADATA without its long description: name, version, license, requirements."""
    text = source.read_text(encoding="utf-8", errors="replace")
    return text.split("\n\n", 1)[0] + "\n"


def copy_vendor(root: Path) -> list[Bundled]:
    """Put every bundled library into root/VENDOR_DIR: bytecode, METADATA, licenses."""
    vendor = root / VENDOR_DIR
    bundled: list[Bundled] = []
    for dist in bundled_distributions():
        tops: set[str] = set()
        for file in dist.files or []:
            path = PurePosixPath(str(file))
            if ".." in path.parts or "__pycache__" in path.parts or str(path) in LEFT_OUT:
                continue  # scripts outside site-packages, the build machine's bytecode
            source = Path(str(dist.locate_file(file)))
            if path.suffix == ".py":
                _compile(source, vendor / path.with_suffix(".pyc"), f"/{VENDOR_DIR}/{path}")
                tops.add(path.parts[0].removesuffix(".py"))
            elif path.name == "METADATA":
                (vendor / path).parent.mkdir(parents=True, exist_ok=True)
                (vendor / path).write_text(_metadata_headers(source))
            elif _is_license(path):
                (vendor / path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, vendor / path)
        name = distribution_name(dist.metadata["Name"])
        bundled.append(Bundled(name, dist.version, tuple(sorted(tops))))
    return bundled


def copy_agent(root: Path) -> None:
    """All of agent/, its subpackages included, in root/LIB_DIR/agent: modules as bytecode."""
    for source in sorted((REPO / "agent").rglob("*")):
        relative = source.relative_to(REPO)
        if source.is_dir() or "__pycache__" in relative.parts or source.suffix == ".pyc":
            continue
        if source.suffix == ".py":
            target = root / LIB_DIR / relative.with_suffix(".pyc")
            _compile(source, target, f"/{LIB_DIR}/{relative}")
        else:  # data beside the code (py.typed, and whatever a subpackage reads)
            (root / LIB_DIR / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, root / LIB_DIR / relative)


def copy_files(root: Path) -> None:
    """deploy/openwrt/files, the portal templates and the sysupgrade keep file."""
    for name, target, mode in INSTALLED_FILES:
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FILES / name, root / target)
        (root / target).chmod(mode)
    shutil.copytree(
        REPO / "portal_templates",
        root / TEMPLATES_DIR,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    keep, text = KEEP_FILE
    (root / keep).parent.mkdir(parents=True, exist_ok=True)
    (root / keep).write_text(text)


def data_tree(root: Path) -> list[Bundled]:
    """Lay out everything the package installs under root, as it lands on the router."""
    copy_agent(root)
    copy_files(root)
    return copy_vendor(root)


# --- the control files and the archive --------------------------------------------------


def version() -> str:
    """PKG_VERSION-PKG_RELEASE of the feed Makefile, as the SDK names the package."""
    return f"{make_value('PKG_VERSION')}-{make_value('PKG_RELEASE')}"


def depends_field() -> str:
    """Depends: the Makefile's DEPENDS; python3-light pinned to the bytecode's Python."""
    major, minor = sys.version_info[:2]
    fields: list[str] = []
    for name in package_depends():
        if name == "python3-light":
            # The bytecode is this Python's: another minor version cannot load it.
            fields += [f"{name} (>= {major}.{minor})", f"{name} (<< {major}.{minor + 1})"]
        else:
            fields.append(name)
    return ", ".join(fields)


def description(bundled: list[Bundled]) -> str:
    """The Makefile's description, then what is bundled, as control-file lines."""
    body = make_define("Package/loopspot-agent/description")
    lines = [" " + line.strip() for line in body.splitlines()]
    lines = [line for line in lines if line.strip()]
    libraries = ", ".join(f"{b.name} {b.version}" for b in bundled)
    lines.append(f" Bundles (pure Python, under /{VENDOR_DIR}): {libraries}.")
    return "\n".join(lines)


def installed_size(root: Path) -> int:
    """Bytes of every regular file under root."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def maintainer_scripts() -> dict[str, str]:
    """postinst and prerm as OpenWrt generates them, and prerm-pkg, the feed Makefile's prerm."""
    own_prerm = make_define("Package/loopspot-agent/prerm").replace("$$", "$")
    return {"postinst": POSTINST, "prerm": PRERM, "prerm-pkg": own_prerm}


def control_files(root: Path, bundled: list[Bundled]) -> dict[str, tuple[str, int]]:
    """The files of control.tar.gz: name -> (text, mode)."""
    title = make_value("TITLE", make_define("Package/loopspot-agent"))
    control = (
        f"Package: {PACKAGE}\n"
        f"Version: {version()}\n"
        f"Depends: {depends_field()}\n"
        f"Source: deploy/openwrt\n"
        f"SourceName: {PACKAGE}\n"
        f"License: {make_value('PKG_LICENSE')}\n"
        f"Section: {make_value('SECTION', make_define('Package/loopspot-agent'))}\n"
        f"Maintainer: {make_value('PKG_MAINTAINER')}\n"
        f"Architecture: all\n"
        f"Installed-Size: {installed_size(root)}\n"
        f"Description: {title}\n"
        f"{description(bundled)}\n"
    )
    return {
        "control": (control, 0o644),
        "conffiles": ("".join(f"{c}\n" for c in CONFFILES), 0o644),
        **{name: (text, 0o755) for name, text in maintainer_scripts().items()},
    }


def source_date() -> int:
    """SOURCE_DATE_EPOCH, else the last commit's time, else now."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    done = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%ct"],
        capture_output=True,
        text=True,
        check=False,
    )
    return int(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip() else 0


def _tar_gz(members: Iterator[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _info(name: str, size: int, mode: int, mtime: int, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, mtime
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    return info


def _tree_members(root: Path, mtime: int) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
    yield _info(".", 0, 0o755, mtime, directory=True), None
    for path in sorted(root.rglob("*")):
        name = f"./{path.relative_to(root).as_posix()}"
        if path.is_dir():
            yield _info(name, 0, 0o755, mtime, directory=True), None
        else:
            data = path.read_bytes()
            yield _info(name, len(data), path.stat().st_mode & 0o7777, mtime), data


def build(out_dir: Path) -> Path:
    """Build the .ipk into out_dir and return its path."""
    mtime = source_date()
    with tempfile.TemporaryDirectory(prefix="loopspot-ipk-") as tmp:
        root = Path(tmp) / "data"
        bundled = data_tree(root)
        control = control_files(root, bundled)
        data_gz = _tar_gz(_tree_members(root, mtime))
        control_gz = _tar_gz(
            iter(
                [(_info(".", 0, 0o755, mtime, directory=True), None)]
                + [
                    (_info(f"./{name}", len(text.encode()), mode, mtime), text.encode())
                    for name, (text, mode) in sorted(control.items())
                ]
            )
        )
    outer = [
        ("./debian-binary", b"2.0\n"),
        ("./data.tar.gz", data_gz),
        ("./control.tar.gz", control_gz),
    ]
    ipk = _tar_gz(iter((_info(n, len(d), 0o644, mtime), d) for n, d in outer))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{PACKAGE}_{version()}_all.ipk"
    path.write_bytes(ipk)
    return path


def main(argv: list[str] | None = None) -> int:
    """The command line: build the .ipk, or only the vendor tree the feed Makefile takes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="default: dist/")
    parser.add_argument(
        "--vendor-only",
        type=Path,
        metavar="DIR",
        help="write only the bundled libraries' sources into DIR (for the SDK build)",
    )
    args = parser.parse_args(argv)
    try:
        if args.vendor_only:
            return _vendor_sources(args.vendor_only)
        path = build(args.out)
    except BuildError as exc:
        print(f"build_ipk: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _vendor_sources(target: Path) -> int:
    """The bundled libraries as .py sources (the SDK compiles them for its own Python)."""
    if target.exists():
        shutil.rmtree(target)
    for dist in bundled_distributions():
        for file in dist.files or []:
            path = PurePosixPath(str(file))
            if ".." in path.parts or "__pycache__" in path.parts or str(path) in LEFT_OUT:
                continue
            if path.suffix == ".py" or path.name == "METADATA" or _is_license(path):
                (target / path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(str(dist.locate_file(file))), target / path)
        print(f"{distribution_name(dist.metadata['Name'])} {dist.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
