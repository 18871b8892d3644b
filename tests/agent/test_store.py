"""Sessions persist in sqlite3 on tmpfs and come back from the flash snapshot after a reboot."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent.clients import Client
from agent.sessions import Ended, EndReason, Session
from agent.store import DB_NAME, SessionStore

PHONE = Client.of("02:11:22:33:44:55", "10.77.0.10")


def session(**changes: object) -> Session:
    base = Session(PHONE, 100.0, "2026-11", 3700.0, 900, 5000, 10, 20, 150.0)
    return Session(**{**{f: getattr(base, f) for f in base.__slots__}, **changes})  # type: ignore[arg-type]


def test_saved_sessions_load_back_identical(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "tmpfs", tmp_path / "flash")
    store.save([session()])
    assert store.load() == [session()]


def test_acceptance_is_recorded_with_the_terms_version(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "tmpfs", tmp_path / "flash")
    store.record_acceptance(session(), 100.0)
    assert store.acceptances(PHONE.mac) == [("2026-11", 100.0)]
    assert store.load() == [session()]


def test_ended_sessions_leave_the_live_table(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "tmpfs", tmp_path / "flash")
    store.save([session()])
    store.record_ended([Ended(session(), EndReason.QUOTA, 200.0)])
    assert store.load() == []


def test_after_a_reboot_the_flash_snapshot_is_restored(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "tmpfs", tmp_path / "flash")
    store.save([session()])
    store.snapshot()
    store.save([session(bytes_counted=999)])  # after the snapshot: lost in a power cut
    store.close()
    (tmp_path / "tmpfs" / "sessions.db").unlink()  # tmpfs is empty after a reboot
    for leftover in (tmp_path / "tmpfs").glob("sessions.db-*"):
        leftover.unlink()
    again = SessionStore(tmp_path / "tmpfs", tmp_path / "flash")
    assert again.load() == [session()]


def test_replace_all_makes_the_saved_set_exact(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "tmpfs", tmp_path / "flash")
    store.save([session()])
    other = session(client=Client.of("02:00:00:00:00:02", "10.77.0.20"))
    store.replace_all([other])
    assert store.load() == [other]


def test_a_session_keeps_its_speed_class(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "tmpfs", tmp_path / "flash")
    store.save([session(speed_class="campaign")])
    assert store.load()[0].speed_class == "campaign"


def test_a_database_of_an_earlier_version_gains_the_speed_class_column(tmp_path: Path) -> None:
    (tmp_path / "tmpfs").mkdir()
    old = sqlite3.connect(tmp_path / "tmpfs" / DB_NAME)
    old.execute(
        "CREATE TABLE sessions (mac TEXT PRIMARY KEY, ip TEXT NOT NULL, started_at REAL NOT NULL,"
        " terms_version TEXT NOT NULL, expires_at REAL, idle_timeout INTEGER NOT NULL,"
        " data_quota INTEGER NOT NULL, bytes_carried INTEGER NOT NULL,"
        " bytes_counted INTEGER NOT NULL, last_activity_at REAL NOT NULL)"
    )
    old.execute("INSERT INTO sessions VALUES ('02:00:00:00:00:01','10.0.0.2',1,'1',NULL,0,0,0,0,1)")
    old.commit()
    old.close()
    store = SessionStore(tmp_path / "tmpfs", tmp_path / "flash")
    assert store.load()[0].speed_class == "default"
