"""CSRF tokens for the accept form: stateless, bound to the device, no cookie needed."""

from __future__ import annotations

import base64
import hashlib
import hmac

TOKEN_LIFETIME = 2 * 3600


def _mac(key: bytes, subject: str, issued: int) -> str:
    digest = hmac.new(key, f"{subject}|{issued}".encode(), hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(digest).decode()


def issue_token(key: bytes, subject: str, now: float) -> str:
    """A token that proves the form was served to `subject` (the device) at `now`."""
    issued = int(now)
    return f"{issued}.{_mac(key, subject, issued)}"


def check_token(key: bytes, subject: str, token: str | None, now: float) -> bool:
    """True when `token` was issued by us to `subject` within the token lifetime."""
    if not token or len(token) > 64 or "." not in token or not token.isascii():
        return False  # a forged token may hold anything; ours are ASCII
    issued_text, signature = token.split(".", 1)
    if not issued_text.isdigit():
        return False
    issued = int(issued_text)
    if not 0 <= now - issued <= TOKEN_LIFETIME:
        return False
    return hmac.compare_digest(signature, _mac(key, subject, issued))
