"""The staff page's login: signed session cookies, and the lockout after wrong PINs. Pure."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
from collections import OrderedDict
from dataclasses import dataclass

COOKIE = "loopspot_staff"
SESSION_LIFETIME = 12 * 3600  # a shift; staff type the PIN again after it
MAX_WRONG_PINS = 5  # wrong PINs in a row from one client before it is locked out
LOCKOUT = 300  # seconds of the first lockout; each next one doubles, up to MOST_LOCKOUT
MOST_LOCKOUT = 3600
_SID_BYTES = 12


class StaffSessions:
    """Cookies `<sid>.<expires>.<hmac>` signed with a key derived from the portal's key.

    Each session is bound to the PIN it was opened with (`pin_hash`, the plan's): a PIN
    changed or removed from the cloud ends every session. Logging out ends one here at
    once; the router forgets that when it restarts, so a copied cookie of an ended
    session works again until it expires (at most 12 h) or the PIN changes.
    """

    def __init__(self, portal_key: bytes, lifetime: int = SESSION_LIFETIME) -> None:
        self._key = hmac.new(portal_key, b"loopspot staff session v1", hashlib.sha256).digest()
        self.lifetime = lifetime
        self._ended: dict[str, int] = {}  # sid: its expiry, kept until then

    def _sign(self, sid: str, expires: int, pin_hash: str) -> str:
        claims = f"{sid}.{expires}.{pin_hash}".encode()
        digest = hmac.new(self._key, claims, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()

    def open(self, now: float, pin_hash: str) -> tuple[str, str]:
        """A new session for the PIN `pin_hash`: (its id, the cookie's value)."""
        sid = secrets.token_urlsafe(_SID_BYTES)
        expires = int(now) + self.lifetime
        return sid, f"{sid}.{expires}.{self._sign(sid, expires, pin_hash)}"

    def sid_of(self, cookie: str | None, now: float, pin_hash: str) -> str | None:
        """The session id a cookie proves, or None: forged, expired, logged out, PIN changed."""
        if not cookie or len(cookie) > 128 or not cookie.isascii():
            return None
        parts = cookie.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        sid, expires_text, signature = parts
        expires = int(expires_text)
        if not now < expires <= now + self.lifetime or sid in self._ended:
            return None
        if not pin_hash or not hmac.compare_digest(signature, self._sign(sid, expires, pin_hash)):
            return None
        return sid

    def end(self, cookie: str | None, now: float, pin_hash: str) -> None:
        """Log the cookie's session out."""
        sid = self.sid_of(cookie, now, pin_hash)
        if sid is not None:
            self._ended[sid] = int(cookie.split(".")[1]) if cookie else 0
        self._ended = {s: until for s, until in self._ended.items() if until > now}


@dataclass(slots=True)
class _Tries:
    wrong: int = 0
    lockouts: int = 0
    locked_until: float = 0.0


class PinLockout:
    """Wrong PINs per client: after `tries` in a row, a lockout that doubles each time."""

    def __init__(
        self,
        tries: int = MAX_WRONG_PINS,
        lockout: int = LOCKOUT,
        most: int = MOST_LOCKOUT,
        max_keys: int = 10_000,
    ) -> None:
        self.tries = tries
        self.lockout = lockout
        self.most = most
        self.max_keys = max_keys
        self._clients: OrderedDict[str, _Tries] = OrderedDict()

    def retry_after(self, key: str, now: float) -> int:
        """Whole seconds until `key` may try a PIN again; 0 when it may now."""
        tries = self._clients.get(key)
        if tries is None or tries.locked_until <= now:
            return 0
        return max(1, math.ceil(tries.locked_until - now))

    def wrong(self, key: str, now: float) -> int:
        """Count a wrong PIN from `key`; the lockout it starts in seconds (0: none yet)."""
        tries = self._clients.pop(key, None) or _Tries()
        self._clients[key] = tries
        while len(self._clients) > self.max_keys:
            self._clients.popitem(last=False)
        tries.wrong += 1
        if tries.wrong < self.tries:
            return 0
        seconds = int(min(self.most, self.lockout * 2**tries.lockouts))
        tries.wrong = 0
        tries.lockouts += 1
        tries.locked_until = now + seconds
        return seconds

    def right(self, key: str) -> None:
        """The right PIN from `key`: its count starts again."""
        self._clients.pop(key, None)
