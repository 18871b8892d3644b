"""Run Python as on a router where a package is missing: a sitecustomize that hides it.

`import NAME` then fails as if NAME were not installed, and importlib.util.find_spec(NAME)
answers None, in the new process and in every Python process it starts. The process that
asks is untouched, so nothing leaks into other tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

_SITECUSTOMIZE = '''"""Written by lab.hidden: to this Python, these are not installed."""
import sys

for _name in {names!r}:
    sys.modules[_name] = None  # import raises ImportError; find_spec answers None
'''


def environment_without(packages: Iterable[str], folder: Path) -> dict[str, str]:
    """os.environ for a Python process that cannot import `packages` (top-level names).

    Writes folder/sitecustomize.py and puts `folder` first on PYTHONPATH.
    """
    names = tuple(packages)
    if not names or any("." in name for name in names):
        raise ValueError(f"packages {names!r}: give top-level names, at least one")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_SITECUSTOMIZE.format(names=names))
    path = [str(folder), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
