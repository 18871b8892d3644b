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
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bundled_libraries.py beside it
from bundled_libraries import (
    LEFT_OUT,
    NOT_BUNDLED,
    TARGET_PYTHONS,
    BuildError,
    Bundled,
    bundled_distributions,
    compile_to,
    distribution_name,
    requirement_applies,
    write_vendor,
)

__all__ = [  # what tests/deploy and bench read here
    "LEFT_OUT",
    "NOT_BUNDLED",
    "TARGET_PYTHONS",
    "bundled_distributions",
    "distribution_name",
    "requirement_applies",
]

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO / "deploy" / "openwrt"
FILES = PACKAGE_DIR / "files"
MAKEFILE = PACKAGE_DIR / "Makefile"

PACKAGE = "loopspot-agent"
LIB_DIR = "usr/lib/loopspot"  # the agent's own package: /usr/lib/loopspot/agent
VENDOR_DIR = f"{LIB_DIR}/vendor"  # the bundled libraries, first on the launcher's sys.path
TEMPLATES_DIR = "usr/share/loopspot/portal_templates"
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
# Bytecode without the column tables of tracebacks' ^^^ markers (file and line stay): the
# .pyc files are 28% smaller on flash, and their code objects a little smaller in memory
# (docs/benchmarks.md section 15). The option belongs to the compiling process, so the
# script starts itself again with it.
NO_DEBUG_RANGES = "no_debug_ranges"
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


# --- the data tree -------------------------------------------------------------------------


def copy_agent(root: Path) -> None:
    """All of agent/, its subpackages included, in root/LIB_DIR/agent: modules as bytecode."""
    for source in sorted((REPO / "agent").rglob("*")):
        relative = source.relative_to(REPO)
        if source.is_dir() or "__pycache__" in relative.parts or source.suffix == ".pyc":
            continue
        if source.suffix == ".py":
            target = root / LIB_DIR / relative.with_suffix(".pyc")
            compile_to(source, target, f"/{LIB_DIR}/{relative}")
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
    return write_vendor(root / VENDOR_DIR, shown_under=f"/{VENDOR_DIR}")


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
    for bundled in write_vendor(target, shown_under=None):
        print(f"{bundled.name} {bundled.version}")
    return 0


if __name__ == "__main__":
    if NO_DEBUG_RANGES not in sys._xoptions:
        os.execv(sys.executable, [sys.executable, "-X", NO_DEBUG_RANGES, __file__, *sys.argv[1:]])
    sys.exit(main())
