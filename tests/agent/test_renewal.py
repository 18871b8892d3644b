"""The router renews its certificate a month before the end, and a crash mid-swap heals."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.credentials import CERT_FILE, IDENTITY_FILE, KEY_FILE, NEXT, finish_renewal
from agent.enrol import EnrolError
from agent.renewal import renew, renew_url, renewal_due
from tests.agent.test_enrol import FakeCloud, cloud, enrol_with, key_backend

__all__ = ["cloud", "key_backend"]  # the fixtures

END = datetime(2027, 11, 23, tzinfo=UTC)


def test_renewal_is_due_thirty_days_before_the_end_and_after_it() -> None:
    assert not renewal_due(END, END - timedelta(days=31))
    assert renewal_due(END, END - timedelta(days=30))
    assert renewal_due(END, END + timedelta(days=1))


def test_the_renewal_endpoint_sits_beside_the_enrolment_one() -> None:
    assert renew_url("https://cloud.example:8443/v1/enrol") == "https://cloud.example:8443/v1/renew"


def pair(folder: Path, *, key: str, cert: str, key_next: str = "", cert_next: str = "") -> None:
    (folder / KEY_FILE).write_text(key)
    (folder / CERT_FILE).write_text(cert)
    if key_next:
        (folder / (KEY_FILE + NEXT)).write_text(key_next)
    if cert_next:
        (folder / (CERT_FILE + NEXT)).write_text(cert_next)


def files(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def test_a_crash_before_the_new_certificate_was_whole_keeps_the_old_pair(tmp_path: Path) -> None:
    pair(tmp_path, key="old key", cert="old cert", key_next="new key")
    finish_renewal(tmp_path)
    assert files(tmp_path) == {KEY_FILE: "old key", CERT_FILE: "old cert"}


def test_a_crash_with_both_new_files_written_puts_the_new_pair_in(tmp_path: Path) -> None:
    pair(tmp_path, key="old key", cert="old cert", key_next="new key", cert_next="new cert")
    finish_renewal(tmp_path)
    assert files(tmp_path) == {KEY_FILE: "new key", CERT_FILE: "new cert"}


def test_a_crash_between_the_two_renames_finishes_the_swap(tmp_path: Path) -> None:
    pair(tmp_path, key="new key", cert="old cert", cert_next="new cert")
    finish_renewal(tmp_path)
    assert files(tmp_path) == {KEY_FILE: "new key", CERT_FILE: "new cert"}


async def test_enrolment_keeps_the_url_renewal_goes_back_to(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    identity = await enrol_with(cloud, tmp_path / "credentials")
    assert identity.enrol_url == f"{cloud.url}/v1/enrol"


async def test_an_identity_enrolled_before_renewal_existed_is_told_to_enrol_again(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    folder = tmp_path / "credentials"
    await enrol_with(cloud, folder)
    stored = json.loads((folder / IDENTITY_FILE).read_text())
    del stored["enrol_url"]
    (folder / IDENTITY_FILE).write_text(json.dumps(stored))
    with pytest.raises(EnrolError, match="enrol_url"):
        renew(folder)
