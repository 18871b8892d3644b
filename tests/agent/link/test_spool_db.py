"""The spool on disk: every write to tmpfs, a restart (kill -9 included) keeps it all, and
only the cloud's receipt deletes an event."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from agent.link.spool import RECEIPT_TIMEOUT
from agent.link.spool_db import DB_NAME, SpoolDB
from agent.wire import Event, EventBatch, EventKind, Receipt, SeqRange, decode

ROUTER = "shop-1"


def open_spool(tmp_path: Path, capacity: int = 100, router_id: str = ROUTER) -> SpoolDB:
    return SpoolDB(tmp_path / "tmpfs", tmp_path / "flash", router_id, capacity, 300)


def seen(n: int) -> list[Event]:
    return [Event(router_id=ROUTER, at=float(i), kind=EventKind.PORTAL_VIEWED) for i in range(n)]


def sent(spool: SpoolDB) -> tuple[int, list[Event]]:
    taken = spool.take()
    assert taken is not None
    batch, payload = taken
    return batch.number, list(decode(payload, EventBatch).events)


def receipt_for(events: list[Event]) -> Receipt:
    """What the cloud answers after storing `events` (one range per event: any split works)."""
    return Receipt(ROUTER, tuple(SeqRange(e.boot_id, e.seq, e.seq) for e in events))


def test_stored_events_are_stamped_with_the_boot_and_a_rising_seq(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.append(seen(3))
    _, events = sent(spool)
    assert [e.seq for e in events] == [1, 2, 3]
    assert {e.boot_id for e in events} == {spool.boot_id}
    assert all(e.router_id == ROUTER for e in events)


def test_a_receipted_batch_is_gone_and_an_unreceipted_one_comes_back(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, capacity=1000)
    spool.append(seen(150))
    first, stored = sent(spool)
    second, events = sent(spool)
    assert len(events) == 50
    spool.acked(first)
    spool.acked(second)  # both PUBACKed; the cloud has stored only the first
    assert spool.stats().depth == 150 and spool.stats().unconfirmed == 150
    assert spool.receipted(receipt_for(stored)) == 100
    spool.requeue()  # the connection dropped before the second receipt
    _, again = sent(spool)
    assert again == events
    assert spool.stats().depth == 50


def test_a_puback_alone_deletes_nothing_and_the_batch_goes_again_after_the_timeout(
    tmp_path: Path,
) -> None:
    now = [0.0]
    spool = SpoolDB(
        tmp_path / "tmpfs", tmp_path / "flash", ROUTER, 100, 300, monotonic=lambda: now[0]
    )
    spool.append(seen(5))
    number, events = sent(spool)
    spool.acked(number)
    assert spool.take() is None and spool.resend_in() == RECEIPT_TIMEOUT
    now[0] = RECEIPT_TIMEOUT - 1
    assert spool.take() is None and spool.resend_in() == 1
    now[0] = RECEIPT_TIMEOUT
    _, again = sent(spool)
    assert again == events and spool.resend_in() is None


def test_a_receipt_naming_unknown_or_forgotten_events_deletes_nothing_else(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.append(seen(5))
    _, events = sent(spool)
    assert spool.receipted(receipt_for(events[:2])) == 2
    assert spool.receipted(receipt_for(events[:2])) == 0  # the same receipt again
    assert spool.receipted(Receipt(ROUTER, (SeqRange("elsewhere", 1, 1000),))) == 0
    assert spool.stats().depth == 3


def refusal_for(events: list[Event], reason: str) -> Receipt:
    """What the cloud answers after dead-lettering the batch that held `events`."""
    return Receipt(
        ROUTER, refused=tuple(SeqRange(e.boot_id, e.seq, e.seq) for e in events), reason=reason
    )


def test_events_the_cloud_refused_are_deleted_counted_and_logged_with_its_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = open_spool(tmp_path)
    spool.append(seen(5))
    number, events = sent(spool)
    spool.acked(number)
    reason = "events[2].reason: is longer than the 64 characters events keeps"
    with caplog.at_level(logging.WARNING, logger="loopspot.link"):
        assert spool.receipted(refusal_for(events[:3], reason)) == 3
        assert spool.receipted(refusal_for(events[:3], reason)) == 0  # the same refusal again
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "refused 3 events" in warning and reason in warning
    stats = spool.stats()
    assert (stats.depth, stats.unconfirmed, stats.refused, stats.dropped_total) == (2, 2, 3, 0)
    restarted = open_spool(tmp_path)  # kill -9: the rows are gone on disk, the count kept
    _, after = sent(restarted)
    assert after == events[3:]
    assert restarted.stats().refused == 3


def test_events_of_the_last_boot_are_receipted_after_a_kill_9(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.append(seen(5))
    number, before = sent(spool)
    spool.acked(number)  # the broker has them, no receipt yet; then kill -9
    restarted = open_spool(tmp_path)
    restarted.append(seen(1))
    _, after = sent(restarted)
    assert after[:5] == before  # sent again, under their first boot_id and seq
    assert restarted.receipted(receipt_for(after[:5])) == 5
    assert restarted.receipted(receipt_for(after[5:])) == 1
    assert restarted.stats().depth == 0
    assert open_spool(tmp_path).take() is None  # deleted on disk, not only in the book


def test_a_restart_after_kill_9_keeps_unacked_events_and_never_reuses_boot_and_seq(
    tmp_path: Path,
) -> None:
    spool = open_spool(tmp_path)
    spool.append(seen(5))
    _, before = sent(spool)  # in flight when the agent dies: no clean close
    restarted = open_spool(tmp_path)
    assert restarted.boot_id != spool.boot_id
    restarted.append(seen(2))
    _, after = sent(restarted)
    assert after[:5] == before
    keys = [(e.boot_id, e.seq) for e in after]
    assert len(set(keys)) == 7
    assert [e.seq for e in after[5:]] == [1, 2]


def test_a_full_spool_drops_the_oldest_and_the_next_batch_says_how_many(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, capacity=10)
    assert spool.append(seen(25)) == 15
    _, events = sent(spool)
    report = [e for e in events if e.kind is EventKind.EVENTS_DROPPED]
    assert len(report) == 1 and report[0].count == 15
    assert [e.at for e in events if e.kind is EventKind.PORTAL_VIEWED] == [
        float(i) for i in range(15, 25)
    ]
    assert spool.stats().dropped_total == 15


def test_the_drop_count_survives_a_restart_until_reported(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, capacity=10)
    spool.append(seen(12))
    restarted = open_spool(tmp_path, capacity=10)
    _, events = sent(restarted)
    assert [e.count for e in events if e.kind is EventKind.EVENTS_DROPPED] == [2]


def test_a_rebooted_router_restores_the_spool_from_flash(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.append(seen(4))
    spool.snapshot()
    spool.close()
    (tmp_path / "tmpfs" / DB_NAME).unlink()  # tmpfs is empty after a reboot
    for leftover in (tmp_path / "tmpfs").glob(DB_NAME + "-*"):
        leftover.unlink()
    _, events = sent(open_spool(tmp_path))
    assert len(events) == 4


def test_flash_is_written_only_when_the_policy_says(tmp_path: Path) -> None:
    now = [0.0]
    spool = SpoolDB(
        tmp_path / "tmpfs", tmp_path / "flash", ROUTER, 100, 300, monotonic=lambda: now[0]
    )
    spool.append(seen(1))
    assert not spool.maybe_snapshot()
    assert not (tmp_path / "flash" / DB_NAME).exists()
    now[0] = 300.0
    assert spool.maybe_snapshot()
    assert (tmp_path / "flash" / DB_NAME).exists()
    now[0] = 900.0
    assert not spool.maybe_snapshot()  # nothing changed since


def test_events_of_a_former_router_id_are_not_sent_under_the_new_one(tmp_path: Path) -> None:
    open_spool(tmp_path, router_id="old-name").append(seen(3))
    assert open_spool(tmp_path, router_id="new-name").take() is None


@pytest.mark.parametrize("count", [0, 1, 100, 101])
def test_every_batch_is_a_valid_wire_message(tmp_path: Path, count: int) -> None:
    spool = open_spool(tmp_path, capacity=1000)
    spool.append(seen(count))
    total = 0
    while (taken := spool.take()) is not None:
        batch, payload = taken
        events = list(decode(payload, EventBatch).events)
        total += len(events)
        spool.acked(batch.number)
        spool.receipted(receipt_for(events))
    assert total == count and spool.stats().depth == 0


def test_a_link_that_keeps_up_never_writes_flash(tmp_path: Path) -> None:
    now = [0.0]
    spool = SpoolDB(
        tmp_path / "tmpfs", tmp_path / "flash", ROUTER, 100, 300, monotonic=lambda: now[0]
    )
    now[0] = 300.0
    assert spool.maybe_snapshot()  # the first one: flash learns the spool is empty
    written = (tmp_path / "flash" / DB_NAME).stat().st_mtime_ns
    for minute in range(2, 12):
        spool.append(seen(3))
        number, events = sent(spool)
        spool.acked(number)
        spool.receipted(receipt_for(events))
        now[0] = 300.0 * minute
        assert not spool.maybe_snapshot()
    assert (tmp_path / "flash" / DB_NAME).stat().st_mtime_ns == written


def test_a_spool_an_older_agent_wrote_is_sent_and_receipted_after_an_upgrade(
    tmp_path: Path,
) -> None:
    spool = open_spool(tmp_path)
    spool.append(seen(4))
    spool.close()
    # As the agent before (boot_id, seq) had their own columns left it: bodies only.
    db = sqlite3.connect(tmp_path / "tmpfs" / DB_NAME)
    with db:
        db.execute("CREATE TABLE old AS SELECT id, body, report FROM events")
        db.execute("DROP TABLE events")
        db.execute("ALTER TABLE old RENAME TO events")
    db.close()
    upgraded = open_spool(tmp_path)
    upgraded.append(seen(1))
    _, events = sent(upgraded)
    assert [e.seq for e in events] == [1, 2, 3, 4, 1]
    assert upgraded.receipted(receipt_for(events)) == 5
    assert upgraded.stats().depth == 0
