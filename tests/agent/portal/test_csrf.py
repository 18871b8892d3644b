"""The accept form's CSRF token: bound to the device, expiring, unforgeable."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from agent.portal.csrf import TOKEN_LIFETIME, check_token, issue_token

KEY = b"k" * 32
MAC = "02:11:22:33:44:55"


def test_a_token_served_to_a_device_is_accepted_from_it() -> None:
    assert check_token(KEY, MAC, issue_token(KEY, MAC, 1000.0), 1010.0)


def test_a_token_from_another_device_is_refused() -> None:
    assert not check_token(KEY, "02:00:00:00:00:01", issue_token(KEY, MAC, 1000.0), 1010.0)


def test_an_expired_or_future_token_is_refused() -> None:
    token = issue_token(KEY, MAC, 1000.0)
    assert not check_token(KEY, MAC, token, 1000.0 + TOKEN_LIFETIME + 1)
    assert not check_token(KEY, MAC, token, 999.0)


def test_a_token_signed_with_another_key_is_refused() -> None:
    assert not check_token(KEY, MAC, issue_token(b"x" * 32, MAC, 1000.0), 1000.0)


@example("1000.é")  # non-ASCII once made hmac.compare_digest raise: a 500, not a refusal
@example("\u0661\u0660\u0660\u0660.abc")  # Arabic-Indic digits are not a time we issued
@given(st.one_of(st.none(), st.text(max_size=100)))
def test_missing_or_forged_tokens_are_refused(token: str | None) -> None:
    assert not check_token(KEY, MAC, token, 1000.0)
