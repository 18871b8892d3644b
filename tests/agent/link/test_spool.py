"""The spool's bookkeeping: bounded, drop-oldest with a count, ack removes, requeue resends."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.link.errors import StateError
from agent.link.spool import (
    BATCH_SIZE,
    MAX_IN_FLIGHT,
    FlushPolicy,
    SpoolBook,
    count_of,
    merge,
    take_front,
)


def ids_of(ranges: tuple[tuple[int, int], ...] | list[tuple[int, int]]) -> list[int]:
    return [i for first, last in ranges for i in range(first, last + 1)]


def test_new_events_get_consecutive_ids_and_wait() -> None:
    book = SpoolBook(capacity=100)
    assert list(book.admit(3).ids) == [1, 2, 3]
    assert list(book.admit(2).ids) == [4, 5]
    assert book.waiting == [(1, 5)] and book.depth == 5


def test_a_full_spool_drops_the_oldest_and_counts_them() -> None:
    book = SpoolBook(capacity=5)
    book.admit(5)
    admitted = book.admit(2)
    assert admitted.dropped == ((1, 2),) and admitted.dropped_count == 2
    assert book.waiting == [(3, 7)] and book.depth == 5
    assert (book.dropped_total, book.dropped_unreported) == (2, 2)


def test_more_new_events_than_room_keeps_the_newest() -> None:
    book = SpoolBook(capacity=5)
    admitted = book.admit(7)
    assert list(admitted.ids) == [1, 2, 3, 4, 5] and admitted.dropped_count == 2
    assert book.depth == 5 and book.dropped_total == 2


def test_the_next_batch_reports_the_drop_first_in_its_own_row() -> None:
    book = SpoolBook(capacity=5)
    book.admit(5)
    book.admit(2)
    batch = book.take()
    assert batch is not None
    assert batch.report_count == 2 and batch.report_id == 8
    assert ids_of(batch.ranges) == [3, 4, 5, 6, 7, 8]
    assert book.dropped_unreported == 0 and book.dropped_total == 2


def test_a_batch_holds_at_most_batch_size_rows_in_id_order() -> None:
    book = SpoolBook(capacity=1000)
    book.admit(250)
    sizes = []
    while (batch := book.take()) is not None:
        sizes.append(batch.size)
    assert sizes == [BATCH_SIZE, BATCH_SIZE, 50]


def test_only_max_in_flight_batches_wait_for_their_puback() -> None:
    book = SpoolBook(capacity=10_000)
    book.admit(BATCH_SIZE * (MAX_IN_FLIGHT + 2))
    batches = [book.take() for _ in range(MAX_IN_FLIGHT)]
    assert all(batches) and book.take() is None
    book.acked(batches[0].number)  # type: ignore[union-attr]
    assert book.take() is not None


def test_an_ack_removes_exactly_its_batch() -> None:
    book = SpoolBook(capacity=1000)
    book.admit(150)
    first, second = book.take(), book.take()
    assert first is not None and second is not None
    acked = book.acked(second.number)
    assert acked is second
    assert book.depth == 100
    with pytest.raises(StateError):
        book.acked(second.number)  # a PUBACK counts once


def test_a_lost_connection_sends_the_batches_in_flight_again_in_order() -> None:
    book = SpoolBook(capacity=1000)
    book.admit(150)
    book.take()
    book.admit(10)
    book.requeue()
    assert book.waiting == [(1, 160)] and not book.in_flight
    again = book.take()
    assert again is not None and again.ranges == ((1, 100),)


def test_rows_in_flight_are_not_dropped() -> None:
    book = SpoolBook(capacity=10)
    book.admit(10)
    batch = book.take()
    assert batch is not None and batch.ranges == ((1, 10),)
    admitted = book.admit(3)
    assert admitted.dropped == () and book.depth == 13  # over by what is in flight, no more
    book.acked(batch.number)
    assert book.depth == 3


def test_a_dropped_report_passes_its_count_on() -> None:
    book = SpoolBook(capacity=3)
    book.admit(5)  # 2 dropped at once
    report = book.take(size=1)  # only the report fits
    assert report is not None and report.report_count == 2
    book.requeue()  # never acknowledged: the report row waits like any other
    book.admit(3)  # drops the 3 older events and the report row
    assert book.dropped_unreported == 2 + 3  # the report's count is carried, not lost
    assert book.dropped_total == 5
    assert not book.reports


def test_a_restart_rebuilds_the_book_from_stored_ranges() -> None:
    book = SpoolBook(capacity=100, stored=[(5, 9), (12, 12), (10, 11)], next_id=3)
    assert book.waiting == [(5, 12)]
    assert book.next_id == 13  # never reuses an id
    assert list(book.admit(1).ids) == [13]


def test_range_helpers() -> None:
    assert merge([(5, 6), (1, 2), (3, 3), (9, 9), (6, 7)]) == [(1, 3), (5, 7), (9, 9)]
    assert take_front([(1, 3), (7, 9)], 4) == ([(1, 3), (7, 7)], [(8, 9)])
    assert count_of([(1, 3), (7, 9)]) == 6


@settings(max_examples=300)
@given(
    st.integers(1, 40),
    st.lists(
        st.one_of(
            st.tuples(st.just("admit"), st.integers(0, 15)),
            st.tuples(st.just("take"), st.integers(1, 20)),
            st.tuples(st.just("ack"), st.integers(0, 10)),
            st.tuples(st.just("requeue"), st.just(0)),
        ),
        max_size=60,
    ),
)
def test_every_event_is_stored_acked_or_counted_dropped(
    capacity: int, steps: list[tuple[str, int]]
) -> None:
    """A model of the rows: nothing vanishes without being acked or counted."""
    book = SpoolBook(capacity)
    stored: set[int] = set()
    events_admitted = acked_events = 0
    for op, n in steps:
        if op == "admit":
            admitted = book.admit(n)
            for row in ids_of(list(admitted.dropped)):
                stored.discard(row)
            stored |= set(admitted.ids)
            events_admitted += n
        elif op == "take":
            batch = book.take(n)
            if batch is not None and batch.report_id is not None:
                stored.add(batch.report_id)
        elif op == "ack" and book.in_flight:
            number = sorted(book.in_flight)[n % len(book.in_flight)]
            reports = set(book.reports)
            batch = book.acked(number)
            rows = ids_of(list(batch.ranges))
            acked_events += len([r for r in rows if r not in reports])
            stored -= set(rows)
        elif op == "requeue":
            book.requeue()
        in_flight_rows = sum(b.size for b in book.in_flight.values())
        assert book.depth == len(stored)
        assert book.depth <= capacity + MAX_IN_FLIGHT * BATCH_SIZE + len(book.reports)
        if op == "admit":  # waiting rows are trimmed to capacity as new ones come
            assert book.depth - in_flight_rows <= capacity + len(book.reports)
        assert sorted(stored) == sorted(
            ids_of(book.waiting)
            + [r for b in book.in_flight.values() for r in ids_of(list(b.ranges))]
        )
    waiting_events = len(stored - set(book.reports))
    assert events_admitted == waiting_events + acked_events + book.dropped_total


def test_flash_is_written_after_the_interval_or_many_changes_never_for_nothing() -> None:
    policy = FlushPolicy(interval=300, after_changes=1000, min_spacing=10)
    assert not policy.due(changes=0, since_last=10_000)
    assert not policy.due(changes=5, since_last=299)
    assert policy.due(changes=5, since_last=300)
    assert policy.due(changes=1000, since_last=10)
    assert not policy.due(changes=5000, since_last=9)  # a burst does not hammer the flash
