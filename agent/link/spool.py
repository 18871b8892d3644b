"""The spool's bookkeeping, pure: which stored events wait, which are in flight, what to drop.

Rows are numbered by consecutive ids. Waiting rows and each batch in flight are lists of
inclusive id ranges, so the book stays a few numbers however many events wait. The adapter
(`agent.link.spool_db`) does what the book decides: insert, delete, read ranges.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agent.link.errors import StateError

BATCH_SIZE = 100  # events per MQTT message (about 25 KB; the wire allows 256 KB)
MAX_IN_FLIGHT = 4  # batches published and waiting for their PUBACK
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


@dataclass(frozen=True, slots=True)
class Admitted:
    """Where new events go: ids for the newest `len(ids)` of them (the older ones are dropped
    at once when more came than the spool holds), and the oldest waiting rows to delete."""

    ids: range
    dropped: tuple[Range, ...]
    dropped_count: int  # events: waiting rows deleted plus new ones never stored


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


class SpoolBook:
    """A bounded queue of row ids: admit, take batches, ack them, requeue on a lost link."""

    def __init__(
        self,
        capacity: int,
        stored: Iterable[Range] = (),
        *,
        next_id: int = 1,
        reports: Mapping[int, int] | None = None,
        dropped_total: int = 0,
        dropped_unreported: int = 0,
    ) -> None:
        if capacity < 1:
            raise ValueError("a spool holds at least one event")
        self.capacity = capacity
        self.waiting: list[Range] = merge(stored)
        self.in_flight: dict[int, Batch] = {}
        self.next_id = max(next_id, self.waiting[-1][1] + 1 if self.waiting else 1)
        self.reports: dict[int, int] = dict(reports or {})  # row id -> dropped count it reports
        self.dropped_total = dropped_total
        self.dropped_unreported = dropped_unreported
        self._next_batch = 1

    @property
    def depth(self) -> int:
        """Rows stored: waiting and in flight."""
        return count_of(self.waiting) + sum(b.size for b in self.in_flight.values())

    def admit(self, count: int) -> Admitted:
        """Room for `count` new events: the oldest waiting go first, counted as dropped.

        At most `capacity` rows wait. Rows in flight are never dropped (their PUBACK may be
        on its way), so the spool may hold up to MAX_IN_FLIGHT batches beyond capacity.
        """
        over = max(0, count_of(self.waiting) + count - self.capacity)
        dropped, self.waiting = take_front(self.waiting, over)
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

    def acked(self, number: int) -> Batch:
        """The broker has batch `number` (PUBACK): its rows are to be deleted."""
        batch = self.in_flight.pop(number, None)
        if batch is None:
            raise StateError(f"batch {number} is not in flight")
        for first, last in batch.ranges:
            for row in [r for r in self.reports if first <= r <= last]:
                del self.reports[row]
        return batch

    def requeue(self) -> None:
        """The connection is gone: every batch in flight waits again, in id order."""
        returned = [r for batch in self.in_flight.values() for r in batch.ranges]
        self.in_flight.clear()
        self.waiting = merge([*self.waiting, *returned])


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
