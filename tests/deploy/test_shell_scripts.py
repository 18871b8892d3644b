"""Every shell script in the repository parses and passes shellcheck, the package's too."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.ipk import build_ipk

REPO = Path(__file__).resolve().parents[2]
SKIPPED_DIRS = {".git", ".venv", "build", "dist", "node_modules", "__pycache__", ".mypy_cache"}
SHELLS = {"sh": "sh", "ash": "sh", "dash": "sh", "bash": "bash"}


def shell_of(path: Path) -> str | None:
    """'sh' or 'bash' from the script's first line; None for anything else."""
    try:
        with path.open("rb") as f:
            first = f.readline(200).decode(errors="replace")
    except OSError:
        return None
    if not first.startswith("#!"):
        return "sh" if path.suffix == ".sh" else None
    words = first[2:].split()
    if words and words[0].endswith("/env"):
        words = words[1:]
    name = Path(words[0]).name if words else ""
    return SHELLS.get(name)


def shell_scripts() -> list[tuple[Path, str]]:
    """Every shell script under the checkout (sh and bash), with its shell."""
    found: list[tuple[Path, str]] = []
    for directory, dirs, names in os.walk(REPO):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in sorted(names):
            path = Path(directory) / name
            shell = shell_of(path)
            if shell and path.is_file():
                found.append((path, shell))
    return found


SCRIPTS = shell_scripts()


def _shellcheck() -> str:
    found = shutil.which("shellcheck")
    assert found, (
        "shellcheck is missing: run scripts/ensure-debian-packages (apt-get install shellcheck)"
    )
    return found


def test_the_scripts_found_are_the_ones_we_ship_and_run() -> None:
    names = {p.relative_to(REPO).as_posix() for p, _ in SCRIPTS}
    expected = {
        "deploy/openwrt/files/dnsmasq-loopspot.sh",
        "deploy/openwrt/files/loopspot.init",
        "deploy/openwrt/files/loopspot-gate.init",
        "deploy/openwrt/files/loopspot-boot-gate.sh",
        "deploy/openwrt/files/loopspot.uci-defaults",
        "scripts/ensure-debian-packages",
        ".ci/run",
    }
    assert expected <= names
    assert "deploy/openwrt/files/loopspot-agent" not in names, "the launcher is Python"


@pytest.mark.parametrize(("script", "shell"), SCRIPTS, ids=lambda s: str(s).replace(str(REPO), ""))
def test_shell_script_parses_and_passes_shellcheck(script: Path, shell: str) -> None:
    parsed = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
    assert parsed.returncode == 0, f"{shell} -n: {parsed.stderr}"
    checked = subprocess.run([_shellcheck(), str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("name", ["postinst", "prerm", "prerm-pkg"])
def test_the_packages_maintainer_scripts_pass_shellcheck(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(build_ipk.maintainer_scripts()[name])
    assert subprocess.run(["sh", "-n", str(path)]).returncode == 0
    # SC1091: /lib/functions.sh is OpenWrt's, not on this machine to follow.
    checked = subprocess.run(
        [_shellcheck(), "-e", "SC1091", str(path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
