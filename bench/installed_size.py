"""What the package takes on the router's flash: the agent's own files, and each library.

    .venv/bin/python -m bench.installed_size [--json FILE]

Builds the .ipk with deploy/openwrt/build_ipk.py (no root, no lab) and reads it back: the
installed bytes (what `Installed-Size` counts) of the agent's own files and of each
bundled library, and the compressed bytes, closer to what a compressing overlay (jffs2,
ubifs) spends. Goal: the agent's own files at most 1 MB (1,000,000 bytes).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_ROOT / "deploy" / "openwrt" / "build_ipk.py"
GOAL_OWN_BYTES = 1_000_000
OWN = "loopspot-agent (its own files)"


def _build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_ipk", BUILD_SCRIPT)
    assert spec and spec.loader, f"cannot load {BUILD_SCRIPT}"
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_ipk", module)  # dataclasses look their module up
    spec.loader.exec_module(sys.modules["build_ipk"])
    return module


@dataclass(frozen=True, slots=True)
class Part:
    """One line of the table: installed and compressed bytes of a part of the package."""

    name: str
    version: str
    files: int
    installed: int
    compressed: int


def owner_of(path: PurePosixPath, vendor: str, owners: dict[str, str]) -> str:
    """Which part a file of the data tree belongs to: the agent, or a bundled distribution."""
    if not str(path).startswith(vendor + "/"):
        return OWN
    top = path.relative_to(vendor).parts[0]
    return owners.get(top.removesuffix(".pyc"), owners.get(top, top))


def measure(ipk: Path, build: ModuleType) -> list[Part]:
    """Installed and compressed bytes per part of the package's data."""
    owners: dict[str, str] = {}
    versions: dict[str, str] = {OWN: build.version()}
    for dist in build.bundled_distributions():
        name = build.distribution_name(dist.metadata["Name"])
        versions[name] = dist.version
        for file in dist.files or []:
            first = PurePosixPath(str(file)).parts[0]
            if first != "..":
                owners[first.removesuffix(".py")] = name
    with tarfile.open(ipk, "r:gz") as outer:
        member = outer.extractfile("./data.tar.gz")
        assert member is not None
        blob = member.read()
    files: dict[str, int] = defaultdict(int)
    installed: dict[str, int] = defaultdict(int)
    compressed: dict[str, int] = defaultdict(int)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as data:
        for info in data.getmembers():
            if not info.isfile():
                continue
            extracted = data.extractfile(info)
            assert extracted is not None
            content = extracted.read()
            part = owner_of(PurePosixPath(info.name.removeprefix("./")), build.VENDOR_DIR, owners)
            files[part] += 1
            installed[part] += info.size
            compressed[part] += len(zlib.compress(content, 9))
    order = [OWN, *sorted(p for p in installed if p != OWN)]
    return [Part(p, versions.get(p, "?"), files[p], installed[p], compressed[p]) for p in order]


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Build the package, print the table, return the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.installed_size", description=__doc__)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    build = _build_script()
    with tempfile.TemporaryDirectory(prefix="loopspot-size-") as tmp:
        done = subprocess.run(
            [sys.executable, str(BUILD_SCRIPT), "--out", tmp],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        ipk = Path(done.stdout.strip())
        ipk_bytes = ipk.stat().st_size
        parts = measure(ipk, build)
    own = parts[0]
    libraries = parts[1:]
    print(f"package: {ipk.name}, {ipk_bytes:,} bytes; bytecode of Python {sys.version.split()[0]}")
    print("| part | version | files | installed bytes | compressed (zlib -9) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for part in parts:
        print(
            f"| {part.name} | {part.version} | {part.files} | {part.installed:,} "
            f"| {part.compressed:,} |"
        )
    total = sum(p.installed for p in parts)
    bundled = sum(p.installed for p in libraries)
    print(
        f"| all bundled libraries | | {sum(p.files for p in libraries)} | {bundled:,} | "
        f"{sum(p.compressed for p in libraries):,} |"
    )
    print(
        f"| whole package | | {sum(p.files for p in parts)} | {total:,} | "
        f"{sum(p.compressed for p in parts):,} |"
    )
    met = own.installed <= GOAL_OWN_BYTES
    print(
        f"agent's own files: {own.installed:,} bytes, goal <= {GOAL_OWN_BYTES:,}: "
        f"{'met' if met else 'NOT met'}"
    )
    figures: dict[str, object] = {
        "ipk_bytes": ipk_bytes,
        "own_installed_bytes": own.installed,
        "goal_own_bytes": GOAL_OWN_BYTES,
        "goal_met": met,
        "bundled_installed_bytes": bundled,
        "total_installed_bytes": total,
        "parts": {
            p.name: {
                "version": p.version,
                "files": p.files,
                "installed": p.installed,
                "compressed": p.compressed,
            }
            for p in parts
        },
    }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    return figures


if __name__ == "__main__":
    main()
