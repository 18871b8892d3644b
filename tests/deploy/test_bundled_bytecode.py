"""The package's bytecode: no column tables; the libraries' docstrings left out, asserts kept."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import marshal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import CodeType, ModuleType

import pytest

from tests.deploy.ipk import build_ipk

compile_to = build_ipk.compile_to  # deploy/openwrt/bundled_libraries.py's, as the build uses it

LIBRARY = '''"""A library's long module docstring."""
from __future__ import annotations


class Shelf:
    """A class docstring."""

    def count(self, items: list[int]) -> int:
        """A method docstring."""
        assert items, "no items"
        return len(items)


def only_a_docstring() -> None:
    """Nothing but this."""


async def later() -> str:
    """An async docstring."""
    return "done"
'''


def load(pyc: Path) -> ModuleType:
    loader = importlib.machinery.SourcelessFileLoader("shop_library", str(pyc))
    spec = importlib.util.spec_from_loader("shop_library", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.fixture
def library(tmp_path: Path) -> ModuleType:
    source = tmp_path / "shop_library.py"
    source.write_text(LIBRARY)
    target = tmp_path / "out" / "shop_library.pyc"
    compile_to(source, target, "/usr/lib/loopspot/vendor/shop_library.py", docstrings=False)
    return load(target)


def test_a_bundled_library_loads_without_its_docstrings(library: ModuleType) -> None:
    assert library.__doc__ is None
    assert library.Shelf.__doc__ is None
    assert library.Shelf.count.__doc__ is None
    assert library.only_a_docstring.__doc__ is None
    assert library.later.__doc__ is None


def test_a_bundled_library_runs_as_written_asserts_included(library: ModuleType) -> None:
    assert library.Shelf().count([1, 2]) == 2
    assert library.only_a_docstring() is None
    with pytest.raises(AssertionError, match="no items"):
        library.Shelf().count([])


def test_its_tracebacks_name_the_installed_path(library: ModuleType) -> None:
    code = library.Shelf.count.__code__
    assert code.co_filename == "/usr/lib/loopspot/vendor/shop_library.py"


def test_the_agent_keeps_its_docstrings_for_its_help_texts(tmp_path: Path) -> None:
    source = tmp_path / "shop_library.py"
    source.write_text(LIBRARY)
    compile_to(source, tmp_path / "kept.pyc", "/usr/lib/loopspot/agent/shop_library.py")
    assert load(tmp_path / "kept.pyc").__doc__ == "A library's long module docstring."
    assert sys.flags.optimize == 0


def _codes(code: CodeType) -> Iterator[CodeType]:
    yield code
    for constant in code.co_consts:
        if isinstance(constant, CodeType):
            yield from _codes(constant)


def test_the_packages_bytecode_keeps_lines_and_leaves_out_columns(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(build_ipk.__file__), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    with tarfile.open(done.stdout.strip()) as outer:
        member = outer.extractfile("./data.tar.gz")
        assert member is not None
        with tarfile.open(fileobj=member, mode="r:gz") as data:
            for name in ("agent/daemon.pyc", "vendor/aiohttp/web.pyc"):
                pyc = data.extractfile(f"./usr/lib/loopspot/{name}")
                assert pyc is not None
                code = marshal.loads(pyc.read()[16:])  # after the 16-byte .pyc header
                positions = [p for c in _codes(code) for p in c.co_positions()]
                assert any(line for line, *_ in positions), name
                assert {(start, end) for *_, start, end in positions} == {(None, None)}, name
