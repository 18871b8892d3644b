"""Which libraries the router package bundles, and their files: from the installed distributions.

The agent's runtime requirements (pyproject.toml) and everything they require on the
target Pythons, as installed in the Python that runs the build (the checkout's .venv),
read through importlib.metadata: nothing is downloaded. Only modules (.py), METADATA and
license files are taken; C extensions are left out, their pure-Python fallbacks used.
build_ipk.py uses it for the .ipk and for the SDK's sources (`make vendor`).
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import importlib.util
import py_compile
import re
import shutil
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

REPO = Path(__file__).resolve().parents[2]
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
# Modules no router imports: aiohttp's gunicorn worker and test helpers; segno's vCard and
# geo helpers and its command line (the portal only draws QR codes as SVG).
LEFT_OUT = (
    "aiohttp/worker.py",
    "aiohttp/pytest_plugin.py",
    "aiohttp/test_utils.py",
    "segno/helpers.py",
    "segno/cli.py",
)


class BuildError(Exception):
    """The package cannot be built from this checkout; the message says what to fix."""


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


@dataclass(frozen=True)
class Bundled:
    """One bundled library: its name, version and the top-level names it installs."""

    name: str
    version: str
    top_level: tuple[str, ...]


def without_docstrings(tree: ast.Module) -> ast.Module:
    """`tree` with the docstrings of the module, its classes and functions taken out."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        first = node.body[0] if node.body else None
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            node.body = node.body[1:] or [ast.Pass()]
    return ast.fix_missing_locations(tree)


def compile_to(source: Path, target: Path, shown_as: str, docstrings: bool = True) -> None:
    """Bytecode of `source` at `target` (sourceless), its tracebacks naming `shown_as`.

    Without `docstrings` it is what `python -OO` would load, asserts kept: a library's
    docstrings are a router's memory for text nothing reads (0.5 MiB for the libraries
    the daemon imports, measured in docs/benchmarks.md section 15).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if not docstrings:
        data = source.read_bytes()
        tree = without_docstrings(ast.parse(data, filename=shown_as))
        code = compile(tree, shown_as, "exec", dont_inherit=True)
        pyc = importlib._bootstrap_external._code_to_hash_pyc(  # type: ignore[attr-defined]
            code, importlib.util.source_hash(data), False
        )  # as py_compile writes an unchecked hash-based .pyc
        target.write_bytes(pyc)
        return
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


def vendor_files(dist: metadata.Distribution) -> Iterator[tuple[PurePosixPath, Path]]:
    """What a bundled library ships: its modules, METADATA and licenses (path, source)."""
    for file in dist.files or []:
        path = PurePosixPath(str(file))
        if ".." in path.parts or "__pycache__" in path.parts or str(path) in LEFT_OUT:
            continue  # scripts outside site-packages, the build machine's bytecode
        if path.suffix == ".py" or path.name == "METADATA" or _is_license(path):
            yield path, Path(str(dist.locate_file(file)))


def write_vendor(target: Path, shown_under: str | None) -> list[Bundled]:
    """Every bundled library into target: as bytecode shown under `shown_under`, or sources."""
    bundled: list[Bundled] = []
    for dist in bundled_distributions():
        tops: set[str] = set()
        for path, source in vendor_files(dist):
            (target / path).parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".py":
                tops.add(path.parts[0].removesuffix(".py"))
            if path.suffix == ".py" and shown_under is not None:
                shown_as = f"{shown_under}/{path}"
                compile_to(source, target / path.with_suffix(".pyc"), shown_as, docstrings=False)
            elif path.name == "METADATA":
                (target / path).write_text(_metadata_headers(source))
            else:
                shutil.copyfile(source, target / path)
        name = distribution_name(dist.metadata["Name"])
        bundled.append(Bundled(name, dist.version, tuple(sorted(tops))))
    return bundled
