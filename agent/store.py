"""Sessions on disk: sqlite3 on tmpfs for every write, snapshotted to flash in batches."""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address
from pathlib import Path

from agent.clients import Client
from agent.flash import open_on_tmpfs, snapshot_to_flash
from agent.sessions import Ended, Session

DB_NAME = "sessions.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    mac TEXT PRIMARY KEY,
    ip TEXT NOT NULL,
    started_at REAL NOT NULL,
    terms_version TEXT NOT NULL,
    expires_at REAL,
    idle_timeout INTEGER NOT NULL,
    data_quota INTEGER NOT NULL,
    bytes_carried INTEGER NOT NULL,
    bytes_counted INTEGER NOT NULL,
    last_activity_at REAL NOT NULL,
    speed_class TEXT NOT NULL DEFAULT 'default'
);
CREATE TABLE IF NOT EXISTS acceptances (
    id INTEGER PRIMARY KEY,
    mac TEXT NOT NULL,
    ip TEXT NOT NULL,
    terms_version TEXT NOT NULL,
    accepted_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ended_sessions (
    id INTEGER PRIMARY KEY,
    mac TEXT NOT NULL,
    ip TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL NOT NULL,
    reason TEXT NOT NULL,
    bytes_used INTEGER NOT NULL,
    terms_version TEXT NOT NULL
);
"""

_COLUMNS = (
    "mac, ip, started_at, terms_version, expires_at, idle_timeout, data_quota, "
    "bytes_carried, bytes_counted, last_activity_at, speed_class"
)
_VALUES = ",".join("?" * len(_COLUMNS.split(",")))
# A database an earlier version wrote (on tmpfs, or restored from flash) lacks the column.
_ADD_SPEED_CLASS = "ALTER TABLE sessions ADD COLUMN speed_class TEXT NOT NULL DEFAULT 'default'"


def _row(session: Session) -> tuple[object, ...]:
    return (
        session.client.mac,
        str(session.client.ip),
        session.started_at,
        session.terms_version,
        session.expires_at,
        session.idle_timeout,
        session.data_quota,
        session.bytes_carried,
        session.bytes_counted,
        session.last_activity_at,
        session.speed_class,
    )


def _session(row: tuple[object, ...]) -> Session:
    mac, ip, started, terms, expires, idle, quota, carried, counted, active, speed_class = row
    return Session(
        client=Client(str(mac), IPv4Address(str(ip))),
        started_at=float(str(started)),
        terms_version=str(terms),
        expires_at=None if expires is None else float(str(expires)),
        idle_timeout=int(str(idle)),
        data_quota=int(str(quota)),
        bytes_carried=int(str(carried)),
        bytes_counted=int(str(counted)),
        last_activity_at=float(str(active)),
        speed_class=str(speed_class),
    )


class SessionStore:
    """The session database. Not thread-safe: the agent calls it from one worker thread."""

    def __init__(self, state_dir: Path, flash_dir: Path) -> None:
        self.path = state_dir / DB_NAME
        self.snapshot_path = flash_dir / DB_NAME
        self._db = open_on_tmpfs(self.path, self.snapshot_path, _SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(sessions)")}
        if "speed_class" not in columns:
            self._db.execute(_ADD_SPEED_CLASS)

    def load(self) -> list[Session]:
        """Every saved live session."""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM sessions").fetchall()
        return [_session(row) for row in rows]

    def save(self, sessions: Iterable[Session]) -> None:
        """Insert or update these sessions in one transaction."""
        rows = [_row(s) for s in sessions]
        if not rows:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                f"INSERT OR REPLACE INTO sessions ({_COLUMNS}) VALUES ({_VALUES})", rows
            )

    def replace_all(self, sessions: Iterable[Session]) -> None:
        """Make the saved sessions exactly these."""
        rows = [_row(s) for s in sessions]
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM sessions")
            self._db.executemany(f"INSERT INTO sessions ({_COLUMNS}) VALUES ({_VALUES})", rows)

    def record_acceptance(self, session: Session, accepted_at: float) -> None:
        """Keep which terms version the device accepted, and when, with its session."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO acceptances (mac, ip, terms_version, accepted_at) VALUES (?,?,?,?)",
                (session.client.mac, str(session.client.ip), session.terms_version, accepted_at),
            )
            self._db.execute(
                f"INSERT OR REPLACE INTO sessions ({_COLUMNS}) VALUES ({_VALUES})",
                _row(session),
            )

    def record_ended(self, ended: Iterable[Ended]) -> None:
        """Move ended sessions out of the live table into the log."""
        items = list(ended)
        if not items:
            return
        with self._db:
            self._db.execute("BEGIN")
            for item in items:
                s = item.session
                self._db.execute(
                    "DELETE FROM sessions WHERE mac = ? AND ip = ?",
                    (s.client.mac, str(s.client.ip)),
                )
                self._db.execute(
                    "INSERT INTO ended_sessions (mac, ip, started_at, ended_at, reason, "
                    "bytes_used, terms_version) VALUES (?,?,?,?,?,?,?)",
                    (
                        s.client.mac,
                        str(s.client.ip),
                        s.started_at,
                        item.at,
                        item.reason.value,
                        s.bytes_used,
                        s.terms_version,
                    ),
                )

    def acceptances(self, mac: str) -> list[tuple[str, float]]:
        """(terms version, accepted at) for a device, oldest first."""
        rows = self._db.execute(
            "SELECT terms_version, accepted_at FROM acceptances WHERE mac = ? ORDER BY id", (mac,)
        ).fetchall()
        return [(str(v), float(t)) for v, t in rows]

    def snapshot(self) -> None:
        """Copy the database to flash atomically (write a temporary file, then rename)."""
        snapshot_to_flash(self._db, self.snapshot_path)

    def close(self) -> None:
        """Close the database."""
        self._db.close()
