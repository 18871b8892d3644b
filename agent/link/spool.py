"""The spool's bookkeeping, pure: which stored events wait, which are on their way, what to drop.

Rows are numbered by consecutive ids. A row waits; goes out in a batch, in flight until the
broker's PUBACK; is then unconfirmed until the cloud's receipt names its (boot_id, seq), as
stored or as refused (dead-lettered, never to be stored, so counted apart); and only then
is it deleted. The broker's PUBACK is not enough: a broker may lose what it acknowledged (a
restart, a crash), so an unconfirmed row goes out again after a reconnect or
RECEIPT_TIMEOUT seconds, and the cloud's unique key makes the repeat a no-op. Each timeout
that fires doubles the next one, up to MAX_RECEIPT_TIMEOUT, until nothing is unconfirmed:
a cloud slow to catch up is not buried under repeats of what it has queued already. Each state is
a list of inclusive id ranges, so the book stays a few numbers however many events wait. The
adapter (`agent.link.spool_db`) does what the book decides: insert, delete, read ranges.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from agent.link.errors import StateError

BATCH_SIZE = 100  # events per MQTT message (about 25 KB; the wire allows 256 KB)
MAX_IN_FLIGHT = 4  # batches published and waiting for their PUBACK
RECEIPT_TIMEOUT = 30.0  # seconds after its PUBACK that a batch without a receipt goes again
MAX_RECEIPT_TIMEOUT = 480.0  # ... the timeout doubles each time it fires, up to this
FLUSH_AFTER_CHANGES = 1000  # snapshot to flash early after this many changes ...
MIN_FLUSH_SPACING = 10.0  # ... but never twice within this many seconds

Range = tuple[int, int]  # first and last id, inclusive


def count_of(ranges: Iterable[Range]) -> int:
    """How many ids the ranges hold."""
    return sum(last - first + 1 for first, last in ranges)


def merge(ranges: Iterable[Range]) -> list[Range]:
    """The ranges sorted, with touching or overlapping ones joined."""
    merged: list[Range] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def take_front(ranges: list[Range], count: int) -> tuple[list[Range], list[Range]]:
    """The first `count` ids of `ranges`, and what is left of them."""
    taken: list[Range] = []
    left = list(ranges)
    while count > 0 and left:
        first, last = left[0]
        size = last - first + 1
        if size <= count:
            taken.append(left.pop(0))
            count -= size
        else:
            taken.append((first, first + count - 1))
            left[0] = (first + count, last)
            count = 0
    return taken, left


def ranges_of(ids: Iterable[int]) -> list[Range]:
    """Sorted ids as ranges."""
    return merge((i, i) for i in ids)


def subtract(ranges: Iterable[Range], removed: Iterable[Range]) -> list[Range]:
    """The ids of `ranges` that are not in `removed`, as merged ranges."""
    left: list[Range] = []
    cut = merge(removed)
    for first, last in merge(ranges):
        start = first
        for gone_first, gone_last in cut:
            if gone_last < start or gone_first > last:
                continue
            if gone_first > start:
                left.append((start, gone_first - 1))
            start = gone_last + 1
        if start <= last:
            left.append((start, last))
    return left


def intersect(ranges: Iterable[Range], other: Iterable[Range]) -> list[Range]:
    """The ids in both, as merged ranges."""
    mine = merge(ranges)
    return subtract(mine, subtract(mine, other))


@dataclass(frozen=True, slots=True)
class Origin:
    """Rows `first_id` to `last_id` hold events `first_seq`, `first_seq` + 1, ... of `boot_id`."""

    boot_id: str
    first_seq: int
    first_id: int
    last_id: int

    @property
    def last_seq(self) -> int:
        """The seq of the row `last_id`."""
        return self.first_seq + self.last_id - self.first_id

    def rows(self, first_seq: int, last_seq: int) -> Range | None:
        """The ids of seqs `first_seq` to `last_seq` that this run holds, or None."""
        low, high = max(first_seq, self.first_seq), min(last_seq, self.last_seq)
        if low > high:
            return None
        return self.first_id + low - self.first_seq, self.first_id + high - self.first_seq

    def within(self, ranges: Iterable[Range]) -> list[Origin]:
        """The pieces of this run whose ids are in `ranges`."""
        return [
            Origin(self.boot_id, self.first_seq + first - self.first_id, first, last)
            for first, last in intersect([(self.first_id, self.last_id)], ranges)
        ]

    def without(self, ranges: Iterable[Range]) -> list[Origin]:
        """The pieces of this run whose ids are not in `ranges`."""
        return self.within(subtract([(self.first_id, self.last_id)], ranges))


def origins_of(rows: Iterable[tuple[int, str, int]]) -> list[Origin]:
    """(row id, boot_id, seq) in id order, as runs in which id and seq both step by one."""
    runs: list[Origin] = []
    for row, boot_id, seq in rows:
        last = runs[-1] if runs else None
        if last and (last.boot_id, last.last_id + 1, last.last_seq + 1) == (boot_id, row, seq):
            runs[-1] = replace(last, last_id=row)
        else:
            runs.append(Origin(boot_id, seq, row, row))
    return runs


@dataclass(frozen=True, slots=True)
class Admitted:
    """Where new events go: ids for the newest `len(ids)` of them (the older ones are dropped
    at once when more came than the spool holds), and the oldest stored rows to delete."""

    ids: range
    dropped: tuple[Range, ...]
    dropped_count: int  # events: stored rows deleted plus new ones never stored


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows to publish as one message; `report_id` is a new row that reports dropped events."""

    number: int
    ranges: tuple[Range, ...]
    report_id: int | None = None
    report_count: int = 0

    @property
    def size(self) -> int:
        """Rows in the batch, the drop report included."""
        return count_of(self.ranges)


@dataclass(frozen=True, slots=True)
class Unconfirmed:
    """Rows of a batch the broker acknowledged at `since`, waiting for the cloud's receipt."""

    ranges: tuple[Range, ...]
    since: float


class SpoolBook:
    """A bounded queue of row ids: admit, take batches, ack them, delete what the cloud
    receipted or refused, and send again what it did not (after a lost link or a timeout)."""

    def __init__(
        self,
        capacity: int,
        stored: Iterable[Range] = (),
        *,
        next_id: int = 1,
        reports: Mapping[int, int] | None = None,
        dropped_total: int = 0,
        dropped_unreported: int = 0,
        refused_total: int = 0,
    ) -> None:
        if capacity < 1:
            raise ValueError("a spool holds at least one event")
        self.capacity = capacity
        self.waiting: list[Range] = merge(stored)
        self.in_flight: dict[int, Batch] = {}
        self.unconfirmed: dict[int, Unconfirmed] = {}  # by batch number
        self.origins: list[Origin] = []  # (boot_id, seq) of rows sent at least once
        self.receipt_timeout = RECEIPT_TIMEOUT
        self.next_id = max(next_id, self.waiting[-1][1] + 1 if self.waiting else 1)
        self.reports: dict[int, int] = dict(reports or {})  # row id -> dropped count it reports
        self.dropped_total = dropped_total
        self.dropped_unreported = dropped_unreported
        self.refused_total = refused_total  # events the cloud refused, deleted unstored
        self._next_batch = 1

    @property
    def depth(self) -> int:
        """Rows stored: waiting, in flight and unconfirmed."""
        return (
            count_of(self.waiting)
            + sum(b.size for b in self.in_flight.values())
            + self.unconfirmed_rows
        )

    @property
    def unconfirmed_rows(self) -> int:
        """Rows the broker has acknowledged and the cloud has not yet receipted."""
        return sum(count_of(u.ranges) for u in self.unconfirmed.values())

    def admit(self, count: int) -> Admitted:
        """Room for `count` new events: the oldest stored go first, counted as dropped.

        At most `capacity` rows wait or are unconfirmed. Rows in flight are never dropped
        (their PUBACK may be on its way), so the spool may hold up to MAX_IN_FLIGHT batches
        beyond capacity. An unconfirmed row dropped may have reached the cloud after all.
        """
        droppable = merge(
            [*self.waiting, *(r for u in self.unconfirmed.values() for r in u.ranges)]
        )
        over = max(0, count_of(droppable) + count - self.capacity)
        dropped, _ = take_front(droppable, over)
        self._forget(dropped)
        lost = 0
        for first, last in dropped:
            for row in [r for r in self.reports if first <= r <= last]:
                self.dropped_unreported += self.reports.pop(row)  # carry the report's count on
                lost -= 1  # a drop report is not an event
            lost += last - first + 1
        kept = min(count, self.capacity)
        lost += count - kept
        self.dropped_total += lost
        self.dropped_unreported += lost
        ids = range(self.next_id, self.next_id + kept)
        self.next_id += kept
        if kept:
            self.waiting = merge([*self.waiting, (ids.start, ids.stop - 1)])
        return Admitted(ids, tuple(dropped), lost)

    def take(self, size: int = BATCH_SIZE) -> Batch | None:
        """The next batch to publish, or None when nothing waits or too many are in flight."""
        if len(self.in_flight) >= MAX_IN_FLIGHT:
            return None
        report_id: int | None = None
        report_count = self.dropped_unreported
        if report_count:
            report_id = self.next_id
            self.next_id += 1
            self.reports[report_id] = report_count
            self.dropped_unreported = 0
            size -= 1
        taken, self.waiting = take_front(self.waiting, size)
        if report_id is not None:
            taken = merge([*taken, (report_id, report_id)])
        if not taken:
            return None
        batch = Batch(self._next_batch, tuple(taken), report_id, report_count)
        self._next_batch += 1
        self.in_flight[batch.number] = batch
        return batch

    def learn(self, origins: Iterable[Origin]) -> None:
        """The (boot_id, seq) of rows just read to be sent, so that a receipt can name them."""
        new = list(origins)
        ids = [(o.first_id, o.last_id) for o in new]
        kept = [piece for o in self.origins for piece in o.without(ids)]
        self.origins = sorted([*kept, *new], key=lambda o: o.first_id)

    def acked(self, number: int, now: float) -> Batch:
        """The broker has batch `number` (PUBACK): its rows wait for the cloud's receipt."""
        batch = self.in_flight.pop(number, None)
        if batch is None:
            raise StateError(f"batch {number} is not in flight")
        if batch.ranges:
            self.unconfirmed[number] = Unconfirmed(batch.ranges, now)
        return batch

    def receipted(self, seqs: Iterable[tuple[str, int, int]]) -> list[Range]:
        """The cloud stored these (boot_id, first seq, last seq): the ids of rows to delete.

        Seqs of rows never sent, or already deleted, are ignored; any state is covered, for a
        receipt may come after its rows went back to waiting or out again.
        """
        gone = self._delete(seqs)
        for row in self._reports_in(gone):
            del self.reports[row]  # the report reached the cloud
        return gone

    def refused(self, seqs: Iterable[tuple[str, int, int]]) -> list[Range]:
        """The cloud will never store these (boot_id, first seq, last seq), as it dead-lettered
        them: the ids of rows to delete, counted in `refused_total`.

        Ignored and covered as in receipted(). A drop report among them is no event: its
        count goes to the next report, for it never reached the cloud's events.
        """
        gone = self._delete(seqs)
        reports = self._reports_in(gone)
        for row in reports:
            self.dropped_unreported += self.reports.pop(row)
        self.refused_total += count_of(gone) - len(reports)
        return gone

    def _delete(self, seqs: Iterable[tuple[str, int, int]]) -> list[Range]:
        """Rows the cloud is done with, by (boot_id, first seq, last seq): out of every state."""
        found: list[Range] = []
        for boot_id, first, last in seqs:
            for origin in self.origins:
                if origin.boot_id == boot_id and (rows := origin.rows(first, last)):
                    found.append(rows)
        gone = intersect(found, self._held())
        if gone:
            self._forget(gone)
            self.in_flight = {
                n: replace(b, ranges=tuple(subtract(b.ranges, gone)))
                for n, b in self.in_flight.items()
            }
        if not self.unconfirmed:
            self.receipt_timeout = RECEIPT_TIMEOUT  # the cloud has caught up
        return gone

    def _reports_in(self, ranges: list[Range]) -> list[int]:
        return [r for r in self.reports if any(first <= r <= last for first, last in ranges)]

    def expire(self, now: float) -> int:
        """Unconfirmed batches older than the receipt timeout wait again; how many rows did."""
        late = [n for n, u in self.unconfirmed.items() if now - u.since >= self.receipt_timeout]
        if late:
            self.receipt_timeout = min(2 * self.receipt_timeout, MAX_RECEIPT_TIMEOUT)
        returned = [r for n in late for r in self.unconfirmed.pop(n).ranges]
        self.waiting = merge([*self.waiting, *returned])
        return count_of(returned)

    def resend_at(self) -> float | None:
        """When the oldest unconfirmed batch goes out again unless receipted; None if none."""
        if not self.unconfirmed:
            return None
        return min(u.since for u in self.unconfirmed.values()) + self.receipt_timeout

    def requeue(self) -> None:
        """The connection is gone: every batch in flight or unconfirmed waits again, in order."""
        returned = [r for batch in self.in_flight.values() for r in batch.ranges]
        returned += [r for u in self.unconfirmed.values() for r in u.ranges]
        self.in_flight.clear()
        self.unconfirmed.clear()
        self.waiting = merge([*self.waiting, *returned])

    def _held(self) -> list[Range]:
        return merge(
            [
                *self.waiting,
                *(r for b in self.in_flight.values() for r in b.ranges),
                *(r for u in self.unconfirmed.values() for r in u.ranges),
            ]
        )

    def _forget(self, gone: list[Range]) -> None:
        """Rows deleted: out of waiting, unconfirmed and the origins (not in flight)."""
        if not gone:
            return
        self.waiting = subtract(self.waiting, gone)
        for number, sent in list(self.unconfirmed.items()):
            left = subtract(sent.ranges, gone)
            if left:
                self.unconfirmed[number] = replace(sent, ranges=tuple(left))
            else:
                del self.unconfirmed[number]
        self.origins = [piece for o in self.origins for piece in o.without(gone)]


@dataclass(frozen=True, slots=True)
class FlushPolicy:
    """When the spool is snapshotted to flash: changes exist, and enough time or changes passed."""

    interval: float
    after_changes: int = FLUSH_AFTER_CHANGES
    min_spacing: float = MIN_FLUSH_SPACING

    def due(self, changes: int, since_last: float) -> bool:
        """True when a snapshot should be written now."""
        if changes <= 0:
            return False
        if since_last >= self.interval:
            return True
        return changes >= self.after_changes and since_last >= self.min_spacing
