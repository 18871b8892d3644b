"""pytest fixtures for lab tests; a conftest imports them: `from lab.pytest_plugin import lab`.

Lab tests need root. When the lab cannot be built they skip, except under CI=true, where
they fail: CI runs as root, so a lab that cannot be built there is a broken test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import NoReturn, Protocol

import pytest

from lab.errors import LabError
from lab.topology import Lab, cleanup_stale, require_root

_stale_checked = False


class LabFactory(Protocol):
    """Builds a lab that the fixture closes after the test."""

    def __call__(
        self,
        phones: int = 1,
        phone_macs: Sequence[str] | None = None,
        *,
        wan_services: bool = True,
        lans: int = 1,
    ) -> Lab: ...


def running_in_ci() -> bool:
    """True under CI=true (or 1/yes), where lab tests must fail instead of skipping."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def lab_unavailable(reason: str) -> NoReturn:
    """Fail under CI, skip elsewhere, saying why the lab cannot run."""
    if running_in_ci():
        pytest.fail(f"network lab unavailable under CI=true: {reason}", pytrace=False)
    pytest.skip(f"network lab unavailable: {reason}")


def require_lab() -> None:
    """Skip (fail under CI) unless this process may build labs; for tests that build their own."""
    try:
        require_root()
    except LabError as exc:
        lab_unavailable(str(exc))


def build_lab(
    phones: int = 1,
    phone_macs: Sequence[str] | None = None,
    *,
    wan_services: bool = True,
    lans: int = 1,
) -> Lab:
    """Lab.create, turning 'cannot build a lab here' into lab_unavailable()."""
    global _stale_checked
    try:
        if not _stale_checked and os.geteuid() == 0:
            _stale_checked = True
            cleanup_stale()
        return Lab.create(phones, phone_macs, wan_services=wan_services, lans=lans)
    except (LabError, OSError) as exc:
        lab_unavailable(f"{type(exc).__name__}: {exc}")


@pytest.fixture
def lab_factory() -> Iterator[LabFactory]:
    """Make labs with N phones (wan services running unless asked not to)."""
    labs: list[Lab] = []

    def make(
        phones: int = 1,
        phone_macs: Sequence[str] | None = None,
        *,
        wan_services: bool = True,
        lans: int = 1,
    ) -> Lab:
        made = build_lab(phones, phone_macs, wan_services=wan_services, lans=lans)
        labs.append(made)
        return made

    try:
        yield make
    finally:
        for made in labs:
            made.close()


@pytest.fixture
def lab(lab_factory: LabFactory) -> Lab:
    """A shop with one phone, its router and the internet, wan services running."""
    return lab_factory(phones=1)
