"""The spool on disk: sqlite3 on tmpfs takes every write, flash gets batched snapshots.

Not thread-safe: the link calls it from one worker thread. Each change is one transaction,
so a kill -9 loses nothing that was stored; a power cut loses what came after the last
snapshot (and re-sends what was receipted after it, which the cloud deduplicates). Which
rows were sent is not stored: after a restart every row goes out again.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from agent.flash import open_on_tmpfs, snapshot_to_flash
from agent.link.spool import Batch, FlushPolicy, Range, SpoolBook, count_of, merge, origins_of
from agent.wire import Event, EventKind, Receipt, SeqRange, decode, encoded_batch

log = logging.getLogger("loopspot.link")

DB_NAME = "spool.db"
KEPT_BOOTS = 50
CACHE_KIB = 64  # events are read once, in order, from tmpfs: a bigger page cache buys nothing

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    body BLOB NOT NULL,
    report INTEGER NOT NULL DEFAULT 0,
    boot_id TEXT,
    seq INTEGER
);
CREATE TABLE IF NOT EXISTS boots (
    boot_id TEXT PRIMARY KEY,
    started_at REAL NOT NULL,
    next_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# The event's (boot_id, seq), beside its body so that sending it needs no decoding. A spool
# written by an older agent lacks these columns: they are added, and its rows decoded.
_ORIGIN_COLUMNS = {"boot_id": "TEXT", "seq": "INTEGER"}
# Runs of consecutive ids ("gaps and islands"): the book's ranges, read in one query.
_RANGES = """
SELECT MIN(id), MAX(id) FROM (SELECT id, id - ROW_NUMBER() OVER (ORDER BY id) AS run FROM events)
GROUP BY run ORDER BY 1
"""


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """What the status message says about the spool."""

    depth: int
    dropped_total: int
    in_flight: int  # batches waiting for their PUBACK
    unconfirmed: int = 0  # rows the broker has, waiting for the cloud's receipt
    refused: int = 0  # events the cloud refused (dead-lettered) and the spool deleted


class SpoolDB:
    """Events kept until the cloud receipts them, stamped with (boot_id, seq) as stored."""

    def __init__(
        self,
        state_dir: Path,
        flash_dir: Path,
        router_id: str,
        capacity: int,
        flush_interval: float,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = state_dir / DB_NAME
        self.snapshot_path = flash_dir / DB_NAME
        self.router_id = router_id
        self.clock = clock
        self.monotonic = monotonic
        self.policy = FlushPolicy(flush_interval)
        self._db = open_on_tmpfs(self.path, self.snapshot_path, _SCHEMA)
        self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self._add_origin_columns()
        self.boot_id = secrets.token_hex(8)
        self._next_seq = 1
        self.book = self._load(capacity)
        self._changes = 1  # the new boot is a change worth a snapshot
        self._on_flash = (-1, 0, 0, 0)  # unknown until the first snapshot
        self._snapshot_at = monotonic()

    def _add_origin_columns(self) -> None:
        present = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
        with self._db:
            for name, kind in _ORIGIN_COLUMNS.items():
                if name not in present:
                    self._db.execute(f"ALTER TABLE events ADD COLUMN {name} {kind}")

    def _counter(self, name: str, default: str = "0") -> str:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return str(row[0]) if row else default

    def _set_counters(self, **values: object) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)",
            [(name, str(value)) for name, value in values.items()],
        )

    def _load(self, capacity: int) -> SpoolBook:
        with self._db:
            self._db.execute("BEGIN")
            owner = self._counter("router_id", self.router_id)
            if owner != self.router_id:  # re-enrolled under another name: not ours to send
                gone = self._db.execute("DELETE FROM events").rowcount
                log.warning("spool: dropped %d events of former router id %s", gone, owner)
            self._db.execute(
                "INSERT INTO boots (boot_id, started_at, next_seq) VALUES (?, ?, 1)",
                (self.boot_id, self.clock()),
            )
            self._db.execute(
                "DELETE FROM boots WHERE boot_id NOT IN "
                "(SELECT boot_id FROM boots ORDER BY started_at DESC LIMIT ?)",
                (KEPT_BOOTS,),
            )
            self._set_counters(router_id=self.router_id)
            ranges: list[Range] = [(int(a), int(b)) for a, b in self._db.execute(_RANGES)]
            reports = dict(self._db.execute("SELECT id, report FROM events WHERE report > 0"))
            next_id = int(self._counter("next_id", "1"))
            return SpoolBook(
                capacity,
                ranges,
                next_id=next_id,
                reports=reports,
                dropped_total=int(self._counter("dropped_total")),
                dropped_unreported=int(self._counter("dropped_unreported")),
                refused_total=int(self._counter("refused_total")),
            )

    def _resync(self, dropped: tuple[int, int], lost: int) -> None:
        """Rebuild the book from the rows after a failed write; `lost` events count as dropped."""
        old = self.book
        total, unreported = dropped
        ranges = [(int(a), int(b)) for a, b in self._db.execute(_RANGES)]
        reports = dict(self._db.execute("SELECT id, report FROM events WHERE report > 0"))
        self.book = SpoolBook(
            old.capacity,
            ranges,
            next_id=old.next_id,
            reports=reports,
            dropped_total=total + lost,
            dropped_unreported=unreported + lost,
            refused_total=old.refused_total,
        )

    def _delete(self, ranges: Sequence[Range]) -> None:
        self._db.executemany("DELETE FROM events WHERE id BETWEEN ? AND ?", ranges)

    def _stamp(self, event: Event) -> Event:
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        return replace(event, router_id=self.router_id, boot_id=self.boot_id, seq=seq)

    def _save_book(self) -> None:
        book = self.book
        self._db.execute(
            "UPDATE boots SET next_seq = ? WHERE boot_id = ?", (self._next_seq, self.boot_id)
        )
        self._set_counters(
            next_id=book.next_id,
            dropped_total=book.dropped_total,
            dropped_unreported=book.dropped_unreported,
            refused_total=book.refused_total,
        )

    def append(self, events: Sequence[Event], lost: int = 0) -> int:
        """Store events (stamping boot_id and seq), dropping the oldest if full; count dropped.

        `lost` counts events that never reached the spool; they are reported as dropped too.
        """
        self.book.dropped_total += lost
        self.book.dropped_unreported += lost
        if not events:
            if lost:
                with self._db:
                    self._db.execute("BEGIN")
                    self._save_book()
            return lost
        before = (self.book.dropped_total, self.book.dropped_unreported)
        admitted = self.book.admit(len(events))
        newest = events[len(events) - len(admitted.ids) :]
        stamped = [self._stamp(e) for e in newest]
        rows = [(i, e.encode(), *_origin(e)) for i, e in zip(admitted.ids, stamped, strict=True)]
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._delete(admitted.dropped)
                self._db.executemany(
                    "INSERT INTO events (id, body, boot_id, seq) VALUES (?, ?, ?, ?)", rows
                )
                self._save_book()
        except sqlite3.Error as error:  # e.g. tmpfs full: count the loss, keep the book true
            log.error("spool: cannot store %d events: %s", len(rows), error)
            self._resync(before, lost=len(rows))
            return len(rows)
        self._changes += len(rows)
        if admitted.dropped_count:
            log.warning("spool full: dropped the %d oldest events", admitted.dropped_count)
        return admitted.dropped_count

    def take(self) -> tuple[Batch, bytes] | None:
        """The next batch and its EventBatch payload, or None when there is nothing to send.

        Batches unconfirmed past the receipt timeout wait again first, to go out again.
        """
        again = self.book.expire(self.monotonic())
        if again:
            log.info("spool: no receipt for %d events within the timeout: sending again", again)
        batch = self.book.take()
        if batch is None:
            return None
        if batch.report_id is not None:
            report = self._stamp(Event(at=round(self.clock(), 3), kind=EventKind.EVENTS_DROPPED))
            report = replace(report, count=batch.report_count)
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute(
                    "INSERT INTO events (id, body, report, boot_id, seq) VALUES (?, ?, ?, ?, ?)",
                    (batch.report_id, report.encode(), batch.report_count, *_origin(report)),
                )
                self._save_book()
            self._changes += 1
        bodies: list[bytes] = []
        origins: list[tuple[int, str, int]] = []
        for first, last in batch.ranges:
            rows = self._db.execute(
                "SELECT id, body, boot_id, seq FROM events WHERE id BETWEEN ? AND ? ORDER BY id",
                (first, last),
            )
            for row, body, boot_id, seq in rows:
                if boot_id is None:  # stored by an older agent
                    event = decode(bytes(body), Event)
                    boot_id, seq = event.boot_id, event.seq
                bodies.append(body)
                origins.append((row, boot_id, seq))
        self.book.learn(origins_of(origins))
        return batch, encoded_batch(self.router_id, bodies)

    def acked(self, number: int) -> None:
        """The broker acknowledged batch `number`: its rows wait for the cloud's receipt."""
        self.book.acked(number, self.monotonic())

    def receipted(self, receipt: Receipt) -> int:
        """The cloud stored or refused what `receipt` names: delete those rows; how many were."""
        stored = self.book.receipted(_seqs(receipt.ranges))
        refused = self.book.refused(_seqs(receipt.refused))
        gone = merge([*stored, *refused])
        if gone:
            with self._db:
                self._db.execute("BEGIN")
                self._delete(gone)
                if refused:
                    self._save_book()  # the refused count, and a refused report's drops
            self._changes += count_of(gone)
        if refused:
            log.warning(
                "spool: the cloud refused %d events and will never store them: %s",
                count_of(refused),
                receipt.reason or "(no reason given)",
            )
        return count_of(gone)

    def resend_in(self) -> float | None:
        """Seconds until unconfirmed rows go out again unless receipted; None if there are none."""
        at = self.book.resend_at()
        return None if at is None else max(0.0, at - self.monotonic())

    def requeue(self) -> None:
        """The connection dropped: batches in flight will be sent again."""
        self.book.requeue()

    def stats(self) -> SpoolStats:
        """Depth, events dropped since the spool was created, batches in flight, unconfirmed,
        events refused since the spool was created."""
        book = self.book
        return SpoolStats(
            book.depth,
            book.dropped_total,
            len(book.in_flight),
            book.unconfirmed_rows,
            book.refused_total,
        )

    def _worth_keeping(self) -> tuple[int, int, int, int]:
        book = self.book
        return book.depth, book.dropped_total, book.dropped_unreported, book.refused_total

    def maybe_snapshot(self) -> bool:
        """Snapshot to flash if the flush policy says it is time; True if it did.

        While the link keeps up, events come and go between snapshots and flash holds an
        empty spool already: then nothing is written at all.
        """
        if not self.policy.due(self._changes, self.monotonic() - self._snapshot_at):
            return False
        if self._worth_keeping() == self._on_flash and self._on_flash[0] == 0:
            self._changes = 0
            self._snapshot_at = self.monotonic()
            return False
        self.snapshot()
        return True

    def snapshot(self) -> None:
        """Copy the spool to flash atomically (write a temporary file, then rename)."""
        snapshot_to_flash(self._db, self.snapshot_path)
        self._on_flash = self._worth_keeping()
        self._changes = 0
        self._snapshot_at = self.monotonic()

    def close(self) -> None:
        """Close the database (snapshot first if anything changed)."""
        if self._changes:
            self.snapshot()
        self._db.close()


def _origin(event: Event) -> tuple[str, int]:
    return event.boot_id, event.seq


def _seqs(ranges: tuple[SeqRange, ...]) -> list[tuple[str, int, int]]:
    return [(r.boot_id, r.first, r.last) for r in ranges]
