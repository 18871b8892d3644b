"""Short codes staff type at the counter: 9 random symbols and a check symbol.

The alphabet has no look-alikes (no 0, 1, I, L or O) and 31 symbols: 31 is prime, so a
check symbol weighted by position catches every single wrong symbol and every swap of two
neighbours. Nine symbols carry 44.6 bits, drawn from the coupon's id, itself a hash of
the signed coupon: a code names one coupon the router knows, and guessing one is hopeless.
"""

from __future__ import annotations

from agent.errors import LoopspotError

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
BASE = len(ALPHABET)  # 31, a prime
RANDOM_SYMBOLS = 9
CODE_SYMBOLS = RANDOM_SYMBOLS + 1
_VALUE = {symbol: value for value, symbol in enumerate(ALPHABET)}
_SEPARATORS = " -_.\t"


class ShortCodeError(LoopspotError):
    """Text that is no short code; the message says what is wrong, for the person typing it."""


def check_symbol(symbols: str) -> str:
    """The check symbol of the random symbols: their position-weighted sum, modulo 31."""
    total = sum(weight * _VALUE[s] for weight, s in enumerate(symbols, start=1))
    return ALPHABET[total % BASE]


def code_of(coupon_id: str) -> str:
    """The short code of the coupon with this id (32 hex digits)."""
    number = int(coupon_id, 16)
    symbols = []
    for _ in range(RANDOM_SYMBOLS):
        number, digit = divmod(number, BASE)
        symbols.append(ALPHABET[digit])
    body = "".join(symbols)
    return body + check_symbol(body)


def pretty(code: str) -> str:
    """The code as shown to people: two groups of five, `7KQ2M-X9D4R`."""
    return f"{code[:5]}-{code[5:]}"


def parse_code(text: str) -> str:
    """The code typed in `text` (any case, dashes or spaces anywhere); else ShortCodeError."""
    cleaned = "".join(c for c in text.upper() if c not in _SEPARATORS)
    if len(cleaned) != CODE_SYMBOLS:
        raise ShortCodeError(
            f"a code has {CODE_SYMBOLS} letters and digits; this has {len(cleaned)}"
        )
    wrong = sorted({c for c in cleaned if c not in _VALUE})
    if wrong:
        raise ShortCodeError(f"codes never use {' '.join(wrong)}: they have no 0, 1, I, L or O")
    body, check = cleaned[:RANDOM_SYMBOLS], cleaned[RANDOM_SYMBOLS]
    if check_symbol(body) != check:
        raise ShortCodeError("a letter or digit is mistyped: check the code again")
    return cleaned
