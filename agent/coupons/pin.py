"""The staff PIN: the cloud stores and pushes only its hash; the router checks a typed PIN.

PBKDF2-HMAC-SHA256 from the standard library: a router has no `cryptography`, and scrypt
would take it megabytes for each check. A PIN has few possible values, so what guards it
is the staff page's limit on attempts; the hash keeps the PIN itself out of every config.
"""

from __future__ import annotations

import hashlib
import hmac
import os

SCHEME = "pbkdf2_sha256"
ITERATIONS = 200_000
PIN_DIGITS = (4, 8)


class PinError(ValueError):
    """A PIN that cannot be set; the message says what a PIN must be."""


def check_pin_format(pin: str) -> str:
    """`pin` if it is 4 to 8 digits; else PinError."""
    least, most = PIN_DIGITS
    if not (pin.isascii() and pin.isdigit() and least <= len(pin) <= most):
        raise PinError(f"a staff PIN is {least} to {most} digits (0-9), nothing else")
    return pin


def hash_pin(pin: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The stored form of `pin`: "pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>"."""
    check_pin_format(pin)
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, iterations)
    return f"{SCHEME}${iterations}${salt.hex()}${digest.hex()}"


def pin_matches(stored: str, pin: str) -> bool:
    """True when `pin` is the PIN `stored` was made from; False for any malformed `stored`."""
    try:
        scheme, iterations_text, salt_hex, digest_hex = stored.split("$")
        iterations, salt, digest = (
            int(iterations_text),
            bytes.fromhex(salt_hex),
            bytes.fromhex(digest_hex),
        )
    except ValueError:
        return False
    if scheme != SCHEME or not 1 <= iterations <= 10 * ITERATIONS or len(pin) > 64:
        return False
    typed = hashlib.pbkdf2_hmac("sha256", pin.encode(errors="replace"), salt, iterations)
    return hmac.compare_digest(typed, digest)
