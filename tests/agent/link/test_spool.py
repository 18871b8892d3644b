"""The spool's bookkeeping: bounded, drop-oldest with a count, kept past the PUBACK until the
cloud's receipt, sent again on a lost link or when no receipt comes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.link.errors import StateError
from agent.link.spool import (
    BATCH_SIZE,
    MAX_IN_FLIGHT,
    MAX_RECEIPT_TIMEOUT,
    RECEIPT_TIMEOUT,
    FlushPolicy,
    Origin,
    SpoolBook,
    count_of,
    intersect,
    merge,
    origins_of,
    subtract,
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
    book.acked(batches[0].number, now=0.0)  # type: ignore[union-attr]
    assert book.take() is not None


def test_a_pubacked_batch_is_kept_until_the_cloud_receipts_it() -> None:
    book = SpoolBook(capacity=1000)
    book.admit(150)
    first, second = book.take(), book.take()
    assert first is not None and second is not None
    acked = book.acked(second.number, now=5.0)
    assert acked is second
    assert book.depth == 150 and book.unconfirmed_rows == 50
    with pytest.raises(StateError):
        book.acked(second.number, now=5.0)  # a PUBACK counts once


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
    book.acked(batch.number, now=0.0)
    book.learn([Origin("b", 1, 1, 10)])
    assert book.receipted([("b", 1, 10)]) == [(1, 10)]
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
    assert subtract([(1, 10), (20, 25)], [(3, 4), (9, 21), (30, 40)]) == [(1, 2), (5, 8), (22, 25)]
    assert intersect([(1, 10), (20, 25)], [(3, 4), (9, 21)]) == [(3, 4), (9, 10), (20, 21)]


def test_rows_read_for_sending_become_runs_of_boot_and_seq() -> None:
    rows = [
        (1, "old", 7),
        (2, "old", 8),
        (3, "new", 1),
        (4, "new", 2),
        (6, "new", 3),
        (7, "new", 9),
    ]
    assert origins_of(rows) == [
        Origin("old", 7, 1, 2),
        Origin("new", 1, 3, 4),
        Origin("new", 3, 6, 6),
        Origin("new", 9, 7, 7),
    ]


def sent_and_acked(book: SpoolBook, boot: str = "b", now: float = 0.0) -> list[tuple[int, int]]:
    """Take every batch, learn seq = id of `boot` for its rows, ack it; the ranges sent."""
    sent: list[tuple[int, int]] = []
    while (batch := book.take()) is not None:
        book.learn(Origin(boot, first, first, last) for first, last in batch.ranges)
        book.acked(batch.number, now)
        sent.extend(batch.ranges)
    return sent


def test_a_receipt_deletes_exactly_the_rows_it_names() -> None:
    book = SpoolBook(capacity=1000)
    book.admit(250)
    sent_and_acked(book)
    assert book.receipted([("b", 1, 100), ("b", 201, 250)]) == [(1, 100), (201, 250)]
    assert book.depth == 100 and book.unconfirmed_rows == 100  # the batch lost in the middle


def test_a_partial_receipt_deletes_only_the_covered_rows() -> None:
    book = SpoolBook(capacity=1000)
    book.admit(100)
    sent_and_acked(book)
    assert book.receipted([("b", 10, 19), ("b", 50, 50)]) == [(10, 19), (50, 50)]
    assert book.depth == 89
    book.requeue()
    assert book.waiting == [(1, 9), (20, 49), (51, 100)]


def test_receipts_for_unknown_or_already_deleted_seqs_are_ignored() -> None:
    book = SpoolBook(capacity=1000)
    book.admit(10)
    sent_and_acked(book)
    assert book.receipted([("b", 1, 10)]) == [(1, 10)]
    assert book.receipted([("b", 1, 10)]) == []  # a receipt delivered twice
    assert book.receipted([("other-boot", 1, 10), ("b", 500, 900)]) == []
    book.admit(5)  # rows 11-15, never sent: a receipt cannot name them yet
    assert book.receipted([("b", 11, 15)]) == []
    assert book.depth == 5


def test_a_receipt_for_an_earlier_boot_deletes_the_rows_of_that_boot() -> None:
    book = SpoolBook(capacity=1000, stored=[(1, 20)], next_id=21)  # restarted: old rows wait
    book.admit(5)  # rows 21-25 of the new boot
    batch = book.take()
    assert batch is not None and batch.ranges == ((1, 25),)
    book.learn([Origin("old", 81, 1, 20), Origin("new", 1, 21, 25)])
    book.acked(batch.number, now=0.0)
    assert book.receipted([("old", 81, 100)]) == [(1, 20)]
    assert book.receipted([("new", 1, 5)]) == [(21, 25)]
    assert book.depth == 0 and not book.unconfirmed


def test_a_receipt_that_comes_after_a_reconnect_still_deletes_the_rows() -> None:
    book = SpoolBook(capacity=1000)
    book.admit(30)
    sent_and_acked(book)
    book.requeue()  # the link dropped before the receipt came
    assert book.waiting == [(1, 30)]
    assert book.receipted([("b", 1, 30)]) == [(1, 30)]
    assert book.depth == 0 and book.take() is None


def test_a_receipt_before_the_puback_empties_the_batch_in_flight() -> None:
    book = SpoolBook(capacity=1000)
    book.admit(10)
    batch = book.take()
    assert batch is not None
    book.learn([Origin("b", 1, 1, 10)])
    assert book.receipted([("b", 1, 4)]) == [(1, 4)]
    assert book.in_flight[batch.number].ranges == ((5, 10),)
    book.acked(batch.number, now=0.0)
    assert book.unconfirmed_rows == 6 and book.depth == 6


def test_without_a_receipt_a_batch_goes_again_after_the_timeout() -> None:
    book = SpoolBook(capacity=1000)
    book.admit(10)
    sent_and_acked(book, now=100.0)
    assert book.take() is None and book.resend_at() == 100.0 + RECEIPT_TIMEOUT
    assert book.expire(100.0 + RECEIPT_TIMEOUT - 0.1) == 0
    assert book.expire(100.0 + RECEIPT_TIMEOUT) == 10
    again = book.take()
    assert again is not None and again.ranges == ((1, 10),)
    assert book.resend_at() is None


def test_each_timeout_that_fires_doubles_the_next_until_the_cloud_has_caught_up() -> None:
    book = SpoolBook(capacity=1000)
    book.admit(10)
    now, waits = 0.0, []
    for _ in range(6):  # a cloud far behind: the same rows go again, less and less often
        sent_and_acked(book, now=now)
        at = book.resend_at()
        assert at is not None
        waits.append(at - now)
        now = at
        assert book.expire(now) == 10
    assert waits == [30.0, 60.0, 120.0, 240.0, 480.0, 480.0]
    assert MAX_RECEIPT_TIMEOUT == 480.0 and RECEIPT_TIMEOUT == 30.0
    sent_and_acked(book, now=now)
    book.receipted([("b", 1, 10)])  # caught up: nothing unconfirmed
    book.admit(1)
    sent_and_acked(book, now=now)
    assert book.resend_at() == now + RECEIPT_TIMEOUT


def test_rows_the_cloud_refused_are_deleted_and_counted_apart_from_receipted_ones() -> None:
    book = SpoolBook(capacity=1000)
    book.admit(30)
    sent_and_acked(book, now=100.0)
    assert book.receipted([("b", 1, 10)]) == [(1, 10)]
    assert book.refused([("b", 11, 20)]) == [(11, 20)]
    assert book.refused([("b", 11, 20), ("other-boot", 1, 30)]) == []  # delivered twice
    assert (book.depth, book.unconfirmed_rows, book.refused_total) == (10, 10, 10)
    assert book.dropped_total == 0
    assert book.expire(100.0 + RECEIPT_TIMEOUT) == 10  # only the unanswered rows go again
    again = book.take()
    assert again is not None and again.ranges == ((21, 30),)


def test_a_refused_drop_report_passes_its_count_on_to_the_next_report() -> None:
    book = SpoolBook(capacity=3)
    book.admit(5)  # 2 dropped at once
    sent_and_acked(book)  # rows 1-3 and the report of 2, row 4
    assert book.refused([("b", 1, 4)]) == [(1, 4)]
    assert (book.refused_total, book.dropped_total, book.dropped_unreported) == (3, 2, 2)
    book.admit(1)
    report = book.take()
    assert report is not None and report.report_count == 2


def test_a_full_spool_drops_the_oldest_unconfirmed_rows_too_but_never_those_in_flight() -> None:
    book = SpoolBook(capacity=10)
    book.admit(10)
    sent_and_acked(book)  # rows 1-10 unconfirmed
    book.admit(3)  # rows 11-13
    assert book.depth == 10 and book.dropped_total == 3 and book.unconfirmed_rows == 7
    in_flight = book.take()  # rows 11-13 and a report of the 3 dropped, row 14
    assert in_flight is not None and in_flight.ranges == ((11, 14),)
    admitted = book.admit(8)  # room: 7 unconfirmed + 8 new for 10, the 5 oldest go
    assert admitted.dropped == ((4, 8),) and admitted.dropped_count == 5
    assert book.in_flight[in_flight.number].ranges == ((11, 14),)
    assert book.receipted([("b", 1, 10)]) == [(9, 10)]  # dropped rows are gone for good


@settings(max_examples=300)
@given(
    st.integers(1, 40),
    st.lists(
        st.one_of(
            st.tuples(st.just("admit"), st.integers(0, 15)),
            st.tuples(st.just("take"), st.integers(1, 20)),
            st.tuples(st.just("ack"), st.integers(0, 10)),
            st.tuples(st.just("receipt"), st.integers(0, 2**40)),
            st.tuples(st.just("refuse"), st.integers(0, 2**40)),
            st.tuples(st.just("expire"), st.integers(0, 60)),
            st.tuples(st.just("requeue"), st.just(0)),
        ),
        max_size=60,
    ),
)
def test_every_event_is_stored_receipted_or_counted_dropped(
    capacity: int, steps: list[tuple[str, int]]
) -> None:
    """A model of the rows: nothing vanishes without a receipt or being counted (dropped or
    refused)."""
    book = SpoolBook(capacity)
    stored: set[int] = set()
    sent: set[int] = set()  # rows read for sending at least once: a receipt can name them
    events_admitted = receipted_events = refused_events = 0
    now = 0.0
    for op, n in steps:
        if op == "admit":
            admitted = book.admit(n)
            for row in ids_of(list(admitted.dropped)):
                stored.discard(row)
            stored |= set(admitted.ids)
            events_admitted += n
        elif op == "take":
            batch = book.take(n)
            if batch is not None:
                if batch.report_id is not None:
                    stored.add(batch.report_id)
                book.learn(Origin("b", first, first, last) for first, last in batch.ranges)
                sent |= set(ids_of(list(batch.ranges)))
        elif op == "ack" and book.in_flight:
            number = sorted(book.in_flight)[n % len(book.in_flight)]
            book.acked(number, now)
        elif op in ("receipt", "refuse"):
            named = {i for i in range(book.next_id) if n >> (i % 40) & 1}
            ranges = [("b", first, last) for first, last in merge((i, i) for i in named)]
            reports = set(book.reports)
            answer = book.receipted if op == "receipt" else book.refused
            gone = set(ids_of(answer(ranges)))
            assert gone == named & stored & sent
            if op == "receipt":
                receipted_events += len(gone - reports)
            else:
                refused_events += len(gone - reports)
            stored -= gone
        elif op == "expire":
            now += n
            book.expire(now)
        elif op == "requeue":
            book.requeue()
        in_flight_rows = sum(b.size for b in book.in_flight.values())
        assert book.depth == len(stored)
        assert book.depth <= capacity + MAX_IN_FLIGHT * BATCH_SIZE + len(book.reports)
        if op == "admit":  # stored rows not in flight are trimmed to capacity as new ones come
            assert book.depth - in_flight_rows <= capacity + len(book.reports)
        assert sorted(stored) == sorted(
            ids_of(book.waiting)
            + [r for b in book.in_flight.values() for r in ids_of(list(b.ranges))]
            + [r for u in book.unconfirmed.values() for r in ids_of(list(u.ranges))]
        )
    waiting_events = len(stored - set(book.reports))
    assert book.refused_total == refused_events
    assert (
        events_admitted == waiting_events + receipted_events + refused_events + book.dropped_total
    )


def test_flash_is_written_after_the_interval_or_many_changes_never_for_nothing() -> None:
    policy = FlushPolicy(interval=300, after_changes=1000, min_spacing=10)
    assert not policy.due(changes=0, since_last=10_000)
    assert not policy.due(changes=5, since_last=299)
    assert policy.due(changes=5, since_last=300)
    assert policy.due(changes=1000, since_last=10)
    assert not policy.due(changes=5000, since_last=9)  # a burst does not hammer the flash
