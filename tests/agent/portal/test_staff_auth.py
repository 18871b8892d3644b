"""Staff sessions are signed and end; wrong PINs lock a client out for longer each time."""

from __future__ import annotations

from agent.portal.staff_auth import LOCKOUT, MOST_LOCKOUT, PinLockout, StaffSessions

NOW = 1_800_000_000.0
PIN = "pbkdf2_sha256$1000$00$11"  # a PIN's hash, as the plan carries it


def test_a_session_cookie_proves_its_session_until_it_expires() -> None:
    sessions = StaffSessions(b"k" * 32, lifetime=3600)
    sid, cookie = sessions.open(NOW, PIN)
    assert sessions.sid_of(cookie, NOW + 3599, PIN) == sid
    assert sessions.sid_of(cookie, NOW + 3600, PIN) is None


def test_a_cookie_of_another_key_or_altered_is_no_session() -> None:
    sessions = StaffSessions(b"k" * 32)
    _, cookie = sessions.open(NOW, PIN)
    assert StaffSessions(b"j" * 32).sid_of(cookie, NOW, PIN) is None
    sid, expires, signature = cookie.split(".")
    assert sessions.sid_of(f"x{sid[1:]}.{expires}.{signature}", NOW, PIN) is None
    assert sessions.sid_of(f"{sid}.{int(expires) - 1}.{signature}", NOW, PIN) is None
    for junk in ("", "a.b", "a.b.c", "ä.1.x", "a." * 100):
        assert sessions.sid_of(junk, NOW, PIN) is None


def test_a_pin_changed_or_removed_from_the_cloud_ends_every_session() -> None:
    sessions = StaffSessions(b"k" * 32)
    sid, cookie = sessions.open(NOW, PIN)
    assert sessions.sid_of(cookie, NOW, PIN) == sid
    assert sessions.sid_of(cookie, NOW, "pbkdf2_sha256$1000$00$22") is None
    assert sessions.sid_of(cookie, NOW, "") is None


def test_logging_out_ends_the_session_and_only_that_one() -> None:
    sessions = StaffSessions(b"k" * 32)
    _, one = sessions.open(NOW, PIN)
    two_sid, two = sessions.open(NOW, PIN)
    sessions.end(one, NOW + 1, PIN)
    assert sessions.sid_of(one, NOW + 2, PIN) is None
    assert sessions.sid_of(two, NOW + 2, PIN) == two_sid


def test_five_wrong_pins_lock_out_and_each_next_lockout_doubles() -> None:
    lockout = PinLockout()
    for _ in range(4):
        assert lockout.wrong("phone", NOW) == 0
        assert lockout.retry_after("phone", NOW) == 0
    assert lockout.wrong("phone", NOW) == LOCKOUT
    assert lockout.retry_after("phone", NOW + 10) == LOCKOUT - 10
    assert lockout.retry_after("till", NOW) == 0  # another client is not locked out
    later = NOW + LOCKOUT
    assert lockout.retry_after("phone", later) == 0
    for _ in range(4):
        lockout.wrong("phone", later)
    assert lockout.wrong("phone", later) == 2 * LOCKOUT
    for _ in range(40):
        seconds = lockout.wrong("phone", later)
    assert seconds <= MOST_LOCKOUT


def test_the_right_pin_starts_the_count_again() -> None:
    lockout = PinLockout()
    for _ in range(4):
        lockout.wrong("phone", NOW)
    lockout.right("phone")
    for _ in range(4):
        assert lockout.wrong("phone", NOW) == 0
