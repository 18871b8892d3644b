"""deploy/openwrt/build_ipk.py as a module, for the tests and the benchmark that read it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "openwrt" / "build_ipk.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_ipk", SCRIPT)
    assert spec and spec.loader, f"cannot load {SCRIPT}"
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_ipk"] = module
    spec.loader.exec_module(module)
    return module


build_ipk = sys.modules.get("build_ipk") or _load()
