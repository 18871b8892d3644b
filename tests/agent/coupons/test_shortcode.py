"""Short codes: no look-alikes, at least 40 random bits, and every typo of one symbol caught."""

from __future__ import annotations

import math
import secrets

import pytest

from agent.coupons.shortcode import (
    ALPHABET,
    BASE,
    CODE_SYMBOLS,
    RANDOM_SYMBOLS,
    ShortCodeError,
    check_symbol,
    code_of,
    parse_code,
    pretty,
)

CODES = [code_of(secrets.token_hex(16)) for _ in range(40)]


def test_the_alphabet_has_no_look_alikes_and_a_prime_size() -> None:
    assert not set("01ILO") & set(ALPHABET)
    assert len(set(ALPHABET)) == BASE == 31
    assert all(BASE % d for d in range(2, BASE))


def test_a_code_carries_at_least_40_random_bits_and_a_check_symbol() -> None:
    assert RANDOM_SYMBOLS * math.log2(BASE) >= 40
    for code in CODES:
        assert len(code) == CODE_SYMBOLS
        assert code[-1] == check_symbol(code[:-1])


def test_staff_may_type_a_code_in_any_case_with_dashes_or_spaces() -> None:
    code = CODES[0]
    assert parse_code(pretty(code).lower()) == code
    assert parse_code(f" {code[:3]} {code[3:7]}-{code[7:]} ") == code


@pytest.mark.parametrize("code", CODES[:10])
def test_every_single_wrong_symbol_is_caught(code: str) -> None:
    for position in range(CODE_SYMBOLS):
        for symbol in ALPHABET:
            if symbol != code[position]:
                typo = code[:position] + symbol + code[position + 1 :]
                with pytest.raises(ShortCodeError, match="mistyped"):
                    parse_code(typo)


@pytest.mark.parametrize("code", CODES)
def test_every_swap_of_two_neighbours_is_caught(code: str) -> None:
    for i in range(CODE_SYMBOLS - 1):
        if code[i] != code[i + 1]:
            swapped = code[:i] + code[i + 1] + code[i] + code[i + 2 :]
            with pytest.raises(ShortCodeError, match="mistyped"):
                parse_code(swapped)


@pytest.mark.parametrize(
    ("typed", "problem"),
    [
        ("ABC", "has 3"),
        ("0000000000", "never use 0"),
        ("IIIIILLLLL", "never use I L"),
        ("优惠优惠优惠优惠优惠", "never use"),
    ],
)
def test_what_is_wrong_with_a_typed_code_is_said(typed: str, problem: str) -> None:
    with pytest.raises(ShortCodeError, match=problem):
        parse_code(typed)


def test_the_code_of_a_coupon_is_the_same_on_every_router() -> None:
    coupon_id = "a2e85b284ab6496c2b8b2ea448bb2372"
    assert code_of(coupon_id) == code_of(coupon_id.upper().lower())
