"""The session core: limits, counters, moves and start-up reconciliation. No root, no sleeping."""

from __future__ import annotations

from agent.clients import Client
from agent.sessions import EndReason, Limits, Session, SessionBook, reconcile

PHONE = Client.of("02:11:22:33:44:55", "10.77.0.10")
SAME_PHONE_NEW_IP = Client.of("02:11:22:33:44:55", "10.77.0.99")
OTHER = Client.of("02:aa:bb:cc:dd:ee", "10.77.0.11")
T0 = 1_700_000_000.0


def book(timeout: int = 3600, idle: int = 900, quota: int = 0) -> SessionBook:
    return SessionBook(Limits(timeout, idle, quota))


def test_accepting_terms_starts_a_session_with_the_configured_limits() -> None:
    sessions = book(timeout=60, idle=30, quota=1000)
    session, moved = sessions.start(PHONE, T0, "2026-11")
    assert moved is None
    assert session.terms_version == "2026-11"
    assert session.seconds_remaining(T0 + 10) == 50
    assert session.bytes_remaining() == 1000
    assert sessions.of_client(PHONE) is session


def test_session_ends_when_its_time_is_up() -> None:
    sessions = book(timeout=60, idle=0)
    sessions.start(PHONE, T0, "1")
    assert sessions.observe({PHONE: 10}, T0 + 59).ended == []
    ended = sessions.observe({PHONE: 20}, T0 + 60).ended
    assert [e.reason for e in ended] == [EndReason.TIMEOUT]
    assert sessions.of_mac(PHONE.mac) is None


def test_session_ends_when_the_data_quota_is_used() -> None:
    sessions = book(quota=1_000)
    sessions.start(PHONE, T0, "1")
    assert sessions.observe({PHONE: 999}, T0 + 1).ended == []
    ended = sessions.observe({PHONE: 1_000}, T0 + 2).ended
    assert [(e.reason, e.session.bytes_used) for e in ended] == [(EndReason.QUOTA, 1_000)]


def test_session_ends_after_the_idle_timeout_without_traffic() -> None:
    sessions = book(idle=30)
    sessions.start(PHONE, T0, "1")
    sessions.observe({PHONE: 500}, T0 + 20)  # traffic at +20 resets the idle clock
    assert sessions.observe({PHONE: 500}, T0 + 49).ended == []
    ended = sessions.observe({PHONE: 500}, T0 + 50).ended
    assert [e.reason for e in ended] == [EndReason.IDLE]


def test_a_restarted_kernel_counter_keeps_the_bytes_already_used() -> None:
    sessions = book(quota=1_000)
    sessions.start(PHONE, T0, "1")
    sessions.observe({PHONE: 600}, T0 + 1)
    sessions.observe({PHONE: 100}, T0 + 2)  # element re-added: counter started again
    session = sessions.of_client(PHONE)
    assert session is not None and session.bytes_used == 700


def test_an_element_lost_from_the_kernel_is_put_back_while_time_remains() -> None:
    sessions = book()
    sessions.start(PHONE, T0, "1")
    observed = sessions.observe({}, T0 + 5)
    assert [s.client for s in observed.lost] == [PHONE]
    assert observed.ended == []


def test_accepting_again_while_online_changes_nothing() -> None:
    sessions = book(timeout=60)
    first, _ = sessions.start(PHONE, T0, "1")
    sessions.observe({PHONE: 300}, T0 + 10)
    again, moved = sessions.start(PHONE, T0 + 20, "1")
    assert moved is None
    assert again.expires_at == first.expires_at
    assert again.bytes_used == 300


def test_a_phone_on_a_new_ip_keeps_its_time_and_bytes() -> None:
    sessions = book(timeout=60, quota=10_000)
    sessions.start(PHONE, T0, "1")
    sessions.observe({PHONE: 4_000}, T0 + 10)
    moved_to, moved = sessions.start(SAME_PHONE_NEW_IP, T0 + 20, "1")
    assert moved is not None and moved.reason is EndReason.MOVED
    assert moved.session.client == PHONE
    assert moved_to.seconds_remaining(T0 + 20) == 40
    assert moved_to.bytes_remaining() == 6_000


def test_a_new_session_after_the_old_one_ended_starts_fresh() -> None:
    sessions = book(timeout=60)
    sessions.start(PHONE, T0, "1")
    fresh, moved = sessions.start(SAME_PHONE_NEW_IP, T0 + 61, "2")
    assert fresh.seconds_remaining(T0 + 61) == 60
    assert fresh.terms_version == "2"
    assert moved is not None  # the stale record is replaced


def test_revoking_ends_the_session_with_reason_revoked() -> None:
    sessions = book()
    sessions.start(PHONE, T0, "1")
    ended = sessions.end(PHONE.mac, T0 + 1, EndReason.REVOKED)
    assert ended is not None and ended.reason is EndReason.REVOKED
    assert sessions.end(PHONE.mac, T0 + 2, EndReason.REVOKED) is None


def test_kernel_timeout_is_rounded_up_so_the_kernel_never_ends_a_session_early() -> None:
    session = Session(PHONE, T0, "1", expires_at=T0 + 10.2)
    assert session.kernel_timeout(T0) == 11
    assert session.kernel_timeout(T0 + 20) == 1
    assert Session(PHONE, T0, "1", expires_at=None).kernel_timeout(T0) is None


def saved(client: Client, *, expires: float | None, carried: int = 0, counted: int = 0) -> Session:
    return Session(client, T0, "1", expires, 0, 10_000, carried, counted, T0)


def test_restart_keeps_sessions_and_takes_bytes_from_the_live_kernel_counter() -> None:
    plan = reconcile(
        [saved(PHONE, expires=T0 + 100, counted=50)], {PHONE: (90, 400)}, T0 + 10, Limits()
    )
    assert [s.client for s in plan.sessions] == [PHONE]
    kept = plan.sessions[0]
    assert (kept.bytes_carried, kept.bytes_counted) == (400, 0)
    assert kept.seconds_remaining(T0 + 10) == 90


def test_reboot_restores_sessions_from_the_saved_bytes_and_absolute_expiry() -> None:
    plan = reconcile(
        [saved(PHONE, expires=T0 + 100, carried=100, counted=50)], {}, T0 + 70, Limits()
    )
    kept = plan.sessions[0]
    assert kept.bytes_used == 150
    assert kept.seconds_remaining(T0 + 70) == 30  # downtime counts against the session


def test_sessions_that_expired_while_the_agent_was_down_end_at_start() -> None:
    plan = reconcile([saved(PHONE, expires=T0 + 5)], {}, T0 + 10, Limits())
    assert plan.sessions == []
    assert [e.reason for e in plan.ended] == [EndReason.TIMEOUT]


def test_quota_spent_while_the_agent_was_down_ends_the_session_at_start() -> None:
    plan = reconcile([saved(PHONE, expires=T0 + 100)], {PHONE: (90, 10_000)}, T0 + 10, Limits())
    assert [e.reason for e in plan.ended] == [EndReason.QUOTA]


def test_kernel_elements_without_a_record_are_adopted_with_the_kernels_time() -> None:
    plan = reconcile([], {OTHER: (120, 77)}, T0, Limits(idle_timeout=0, data_quota=0))
    assert [s.client for s in plan.adopted] == [OTHER]
    adopted = plan.adopted[0]
    assert adopted.seconds_remaining(T0) == 120
    assert adopted.bytes_used == 77


def test_counters_restarted_with_the_table_carry_the_bytes_counted_so_far() -> None:
    sessions = book(quota=2_000)
    sessions.start(PHONE, T0, "1")
    sessions.observe({PHONE: 700}, T0 + 1)
    sessions.counters_restarted()  # the table was put back: every counter starts from 0
    # 800 more since, past the 700 read before: only the restart tells that it is new
    assert sessions.observe({PHONE: 800}, T0 + 2).ended == []
    session = sessions.of_client(PHONE)
    assert session is not None and session.bytes_used == 1_500
    ended = sessions.observe({PHONE: 1_300}, T0 + 3).ended
    assert [(e.reason, e.session.bytes_used) for e in ended] == [(EndReason.QUOTA, 2_000)]
