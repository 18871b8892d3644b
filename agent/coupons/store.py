"""The router's coupons on flash: what it issued or was sent, its spent list, visits, moves.

Kept on flash directly, not on tmpfs: a redemption must survive a power cut the moment
staff see "redeemed". Writes are few (a login, a redemption); reads are key lookups, so
100,000 spent coupons cost one index probe each. Blocking: call it off the event loop.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.flash import SMALL_CACHE

DB_NAME = "coupons.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS coupons (
    coupon_id TEXT PRIMARY KEY,
    code TEXT NOT NULL,
    token TEXT NOT NULL,
    device_id TEXT NOT NULL,
    campaign_id INTEGER NOT NULL,
    merchant_id INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    issued_here INTEGER NOT NULL,
    got_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS coupons_by_device ON coupons (device_id);
CREATE INDEX IF NOT EXISTS coupons_by_code ON coupons (code);
CREATE TABLE IF NOT EXISTS spent (
    coupon_id TEXT PRIMARY KEY,
    at REAL NOT NULL,
    here INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS moved (
    coupon_id TEXT PRIMARY KEY,
    to_coupon TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logins (
    device_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (device_id, day)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS issued (
    campaign_id INTEGER PRIMARY KEY,
    count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS move_codes (
    code TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Stored:
    """One coupon row: its token text and where it came from."""

    coupon_id: str
    token: str
    issued_here: bool
    got_at: float


@dataclass(frozen=True, slots=True)
class Visits:
    """A device's logins here: which visit this is (days with a login) and logins today."""

    visit_number: int
    logins_today: int


class CouponStore:
    """sqlite3 on flash; one connection, used from one thread at a time."""

    def __init__(self, flash_dir: Path) -> None:
        flash_dir.mkdir(parents=True, exist_ok=True)
        self.path = flash_dir / DB_NAME
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a redemption is on flash when it returns
        self.db.execute(SMALL_CACHE)
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def login(self, device_id: str, day: int) -> Visits:
        """Count a login of `device_id` on `day` (a local date number); this visit's numbers."""
        with self.db:
            self.db.execute(
                "INSERT INTO logins VALUES (?, ?, 1) ON CONFLICT (device_id, day) "
                "DO UPDATE SET count = count + 1",
                (device_id, day),
            )
        (days,) = self.db.execute(
            "SELECT count(*) FROM logins WHERE device_id = ? AND day <= ?", (device_id, day)
        ).fetchone()
        (today,) = self.db.execute(
            "SELECT count FROM logins WHERE device_id = ? AND day = ?", (device_id, day)
        ).fetchone()
        return Visits(int(days), int(today))

    def held(self, device_id: str) -> dict[int, int]:
        """Coupons the device has had, per campaign (spent and moved ones count too)."""
        rows = self.db.execute(
            "SELECT campaign_id, count(*) FROM coupons WHERE device_id = ? GROUP BY campaign_id",
            (device_id,),
        )
        return {int(campaign): int(count) for campaign, count in rows}

    def issued(self) -> dict[int, int]:
        """Coupons this router issued, per campaign."""
        return {int(c): int(n) for c, n in self.db.execute("SELECT * FROM issued")}

    def add(
        self,
        rows: Sequence[tuple[str, str, str, str, int, int, int]],
        issued_here: bool,
        at: float,
    ) -> None:
        """Keep coupons: (coupon_id, code, token, device_id, campaign, merchant, not_after).

        A coupon already kept is left as it is; issued ones count against their slices.
        """
        with self.db:
            for row in rows:
                added = self.db.execute(
                    "INSERT INTO coupons VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (coupon_id) DO NOTHING",
                    (*row, int(issued_here), at),
                ).rowcount
                if added and issued_here:
                    self.db.execute(
                        "INSERT INTO issued VALUES (?, 1) ON CONFLICT (campaign_id) "
                        "DO UPDATE SET count = count + 1",
                        (row[4],),
                    )

    def of_device(self, device_id: str) -> list[Stored]:
        """The device's coupons, newest first."""
        rows = self.db.execute(
            "SELECT coupon_id, token, issued_here, got_at FROM coupons WHERE device_id = ? "
            "ORDER BY got_at DESC, coupon_id",
            (device_id,),
        )
        return [Stored(c, t, bool(h), float(g)) for c, t, h, g in rows]

    def by_code(self, code: str) -> list[str]:
        """The tokens of the coupons with this short code (almost always one or none)."""
        return [t for (t,) in self.db.execute("SELECT token FROM coupons WHERE code = ?", (code,))]

    def is_spent(self, coupon_id: str) -> bool:
        """True when the coupon was redeemed, here or (as the cloud said) elsewhere."""
        found = self.db.execute("SELECT 1 FROM spent WHERE coupon_id = ?", (coupon_id,))
        return found.fetchone() is not None

    def spend(self, coupon_id: str, at: float) -> bool:
        """Put the coupon on the spent list; False when it was on it already (nothing changes)."""
        with self.db:
            return bool(
                self.db.execute(
                    "INSERT INTO spent VALUES (?, ?, 1) ON CONFLICT (coupon_id) DO NOTHING",
                    (coupon_id, at),
                ).rowcount
            )

    def spent_elsewhere(self, coupon_ids: Iterable[str], at: float) -> int:
        """Put coupons the cloud says were redeemed elsewhere on the list; how many were new."""
        with self.db:
            return sum(
                self.db.execute(
                    "INSERT INTO spent VALUES (?, ?, 0) ON CONFLICT (coupon_id) DO NOTHING",
                    (coupon_id, at),
                ).rowcount
                for coupon_id in coupon_ids
            )

    def is_moved(self, coupon_id: str) -> bool:
        """True when the coupon's wallet moved to another address of the phone."""
        found = self.db.execute("SELECT 1 FROM moved WHERE coupon_id = ?", (coupon_id,))
        return found.fetchone() is not None

    def keep_move_code(self, code: str, device_id: str, expires_at: float) -> None:
        """Remember a one-time code that moves `device_id`'s wallet, until `expires_at`."""
        with self.db:
            self.db.execute("DELETE FROM move_codes WHERE expires_at < ?", (expires_at - 86400,))
            self.db.execute(
                "INSERT INTO move_codes VALUES (?, ?, ?, NULL)", (code, device_id, expires_at)
            )

    def use_move_code(self, code: str, now: float) -> str | None:
        """The device a one-time code moves the wallet of, marking it used; None if unusable."""
        with self.db:
            row = self.db.execute(
                "UPDATE move_codes SET used_at = ? WHERE code = ? AND used_at IS NULL "
                "AND expires_at > ? RETURNING device_id",
                (now, code, now),
            ).fetchone()
        return None if row is None else str(row[0])

    def record_moves(self, moves: Iterable[tuple[str, str]]) -> None:
        """Mark each (old coupon_id, new coupon_id): the old one is void from now on."""
        with self.db:
            self.db.executemany("INSERT OR IGNORE INTO moved VALUES (?, ?)", list(moves))
