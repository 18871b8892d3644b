"""The coupon token: a compact binary layout signed with Ed25519, as text for a QR code.

    certificate (108 bytes), signed by the alliance's root key:
        key_id u32 | alliance_id u32 | not_after u32 | issuer public key (32) | signature (64)
    coupon (213 bytes), signed by the issuer key the certificate names:
        version u8 | certificate | campaign u32 | merchant u32 | device (16) |
        not_before u32 | not_after u32 | nonce (8) | signature (64)

A router issues coupons offline with its own key, which the cloud certified; anyone with
the alliance's root public key verifies a coupon from its text alone. The device is its
device_id (an HMAC of the MAC), never the MAC. PASETO v4.public with the same claims
takes about 290 characters of base64url; this is 341 of base32, which a QR code holds in
its compact alphanumeric mode (version 10 at error correction L).
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from dataclasses import dataclass
from functools import lru_cache

from agent.coupons.ed25519 import PUBLIC_BYTES, SIGNATURE_BYTES, Backend, Verify
from agent.errors import LoopspotError
from agent.wire import DEVICE_ID_HEX

VERSION = 1
DEVICE_BYTES = DEVICE_ID_HEX // 2
NONCE_BYTES = 8
_CERT_CLAIMS = struct.Struct(">III")  # key_id, alliance_id, not_after
_COUPON_CLAIMS = struct.Struct(
    ">II16sII8s"
)  # campaign, merchant, device, not_before, not_after, nonce
CERT_BYTES = _CERT_CLAIMS.size + PUBLIC_BYTES + SIGNATURE_BYTES
TOKEN_BYTES = 1 + CERT_BYTES + _COUPON_CLAIMS.size + SIGNATURE_BYTES
TOKEN_CHARS = (TOKEN_BYTES * 8 + 4) // 5  # base32 without padding
_CERT_DOMAIN = b"loopspot issuer key v1\x00"  # a certificate's signature never verifies a coupon
_U32 = 2**32 - 1
_BASE32HEX = re.compile(r"[0-9A-V]*")


class TokenError(LoopspotError):
    """Text that is no coupon of this alliance: malformed, altered or forged; says which part."""


@dataclass(frozen=True, slots=True)
class IssuerCertificate:
    """The root's statement: key `public_key`, numbered `key_id`, issues for `alliance_id`."""

    key_id: int
    alliance_id: int
    not_after: int
    public_key: bytes
    signature: bytes = b""

    def claims(self) -> bytes:
        """The signed part."""
        head = _CERT_CLAIMS.pack(self.key_id, self.alliance_id, self.not_after)
        return head + self.public_key

    def to_bytes(self) -> bytes:
        """The certificate's 108 bytes."""
        return self.claims() + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> IssuerCertificate:
        """The certificate in `data` (exactly CERT_BYTES), not yet verified."""
        if len(data) != CERT_BYTES:
            raise TokenError(f"certificate: is {len(data)} bytes; expected {CERT_BYTES}")
        key_id, alliance_id, not_after = _CERT_CLAIMS.unpack_from(data)
        start = _CERT_CLAIMS.size
        public = data[start : start + PUBLIC_BYTES]
        return cls(key_id, alliance_id, not_after, public, data[start + PUBLIC_BYTES :])

    def to_text(self) -> str:
        """The certificate as base32 text (as a router's config carries it)."""
        return text_of(self.to_bytes())

    @classmethod
    def from_text(cls, text: str) -> IssuerCertificate:
        """The certificate written by `to_text`, not yet verified."""
        return cls.from_bytes(bytes_of(text, "certificate"))


def certify(
    backend: Backend, root_seed: bytes, key_id: int, alliance_id: int, not_after: int, public: bytes
) -> IssuerCertificate:
    """The root key's certificate for issuer key `public`."""
    for name, number in (
        ("key_id", key_id),
        ("alliance_id", alliance_id),
        ("not_after", not_after),
    ):
        if not 0 <= number <= _U32:
            raise ValueError(f"{name}: {number} does not fit in 32 bits")
    unsigned = IssuerCertificate(key_id, alliance_id, not_after, public)
    return IssuerCertificate(
        key_id,
        alliance_id,
        not_after,
        public,
        backend.sign(root_seed, _CERT_DOMAIN + unsigned.claims()),
    )


@dataclass(frozen=True, slots=True)
class Coupon:
    """One coupon: which campaign, honoured by which merchant, for which device, when."""

    issuer: IssuerCertificate
    campaign_id: int
    merchant_id: int
    device_id: str  # 32 hex digits
    not_before: int
    not_after: int
    nonce: bytes
    signature: bytes = b""

    def claims(self) -> bytes:
        """The part the issuer signs."""
        return (
            bytes([VERSION])
            + self.issuer.to_bytes()
            + _COUPON_CLAIMS.pack(
                self.campaign_id,
                self.merchant_id,
                bytes.fromhex(self.device_id),
                self.not_before,
                self.not_after,
                self.nonce,
            )
        )

    @property
    def coupon_id(self) -> str:
        """The coupon's identity everywhere (spent lists, the cloud's ledger): 128 bits, hex."""
        return hashlib.sha256(self.claims()).hexdigest()[:32]

    def to_bytes(self) -> bytes:
        """The token's 213 bytes."""
        return self.claims() + self.signature

    def to_text(self) -> str:
        """The token as the QR code and the wire carry it: 341 characters of base32."""
        return text_of(self.to_bytes())


def sign_coupon(backend: Backend, issuer_seed: bytes, unsigned: Coupon) -> Coupon:
    """`unsigned` signed by the issuer key (whose certificate it names)."""
    if len(unsigned.device_id) != DEVICE_ID_HEX or len(unsigned.nonce) != NONCE_BYTES:
        raise ValueError("a coupon needs a 32-hex-digit device_id and an 8-byte nonce")
    for name in ("campaign_id", "merchant_id", "not_before", "not_after"):
        if not 0 <= getattr(unsigned, name) <= _U32:
            raise ValueError(f"{name}: {getattr(unsigned, name)} does not fit in 32 bits")
    signature = backend.sign(issuer_seed, unsigned.claims())
    return Coupon(
        unsigned.issuer,
        unsigned.campaign_id,
        unsigned.merchant_id,
        unsigned.device_id,
        unsigned.not_before,
        unsigned.not_after,
        unsigned.nonce,
        signature,
    )


def parse_coupon(data: bytes) -> Coupon:
    """The coupon in `data`, its layout checked but no signature verified."""
    if len(data) != TOKEN_BYTES:
        raise TokenError(f"token: is {len(data)} bytes; expected {TOKEN_BYTES}")
    if data[0] != VERSION:
        raise TokenError(f"version: {data[0]} is not a coupon version this router reads")
    issuer = IssuerCertificate.from_bytes(data[1 : 1 + CERT_BYTES])
    start = 1 + CERT_BYTES
    campaign, merchant, device, not_before, not_after, nonce = _COUPON_CLAIMS.unpack_from(
        data, start
    )
    signature = data[start + _COUPON_CLAIMS.size :]
    return Coupon(issuer, campaign, merchant, device.hex(), not_before, not_after, nonce, signature)


class Verifier:
    """Verifies coupons against one alliance's root key; issuer keys are checked once each."""

    def __init__(self, backend: Backend, root_public: bytes, alliance_id: int) -> None:
        self.backend = backend
        self.alliance_id = alliance_id
        self._root = backend.verifier(root_public)
        self._issuers = lru_cache(maxsize=1024)(self._issuer_key)

    def _issuer_key(self, certificate: bytes) -> Verify:
        issuer = IssuerCertificate.from_bytes(certificate)
        if issuer.alliance_id != self.alliance_id:
            raise TokenError(f"certificate: is for alliance {issuer.alliance_id}, not this one")
        if not self._root(issuer.signature, _CERT_DOMAIN + issuer.claims()):
            raise TokenError("certificate: not signed by this alliance's root key")
        return self.backend.verifier(issuer.public_key)

    def certificate(self, issuer: IssuerCertificate) -> IssuerCertificate:
        """`issuer` if the root key signed it for this alliance; else TokenError."""
        self._issuers(issuer.to_bytes())
        return issuer

    def coupon(self, text: str) -> Coupon:
        """The coupon `text` carries, every signature verified; else TokenError.

        Validity in time is not judged here: an expired certificate or coupon is still
        this alliance's, and the counter's check says why it is refused.
        """
        data = bytes_of(text, "token")
        coupon = parse_coupon(data)
        issuer_key = self._issuers(coupon.issuer.to_bytes())
        if not issuer_key(coupon.signature, coupon.claims()):
            raise TokenError("signature: the coupon was altered or not signed by its issuer")
        return coupon


def looks_like_token(text: str) -> bool:
    """True when `text` has a token's length (a short code is much shorter)."""
    return len(text.strip()) == TOKEN_CHARS


def text_of(data: bytes) -> str:
    """`data` as base32 text with the extended hex alphabet (0-9, A-V), without padding.

    RFC 4648's "base32hex": every character is one a QR code's alphanumeric mode holds, and
    int(text, 32) reads it back in C, where base64.b32decode loops in Python (22 µs a token,
    a quarter of the counter's check).
    """
    return base64.b32hexencode(data).decode().rstrip("=")


def bytes_of(text: str, what: str = "token") -> bytes:
    """The bytes that `text_of` wrote as `text` (any case, whitespace ignored); else TokenError."""
    cleaned = "".join(text.split()).upper()
    if not _BASE32HEX.fullmatch(cleaned):
        raise TokenError(f"{what}: is not base32 text (0-9 and A-V)")
    size, spare = divmod(len(cleaned) * 5, 8)
    if spare >= 5:
        raise TokenError(f"{what}: has {len(cleaned)} characters, a length base32 never has")
    value = int(cleaned, 32) if cleaned else 0
    if value & ((1 << spare) - 1):
        raise TokenError(f"{what}: does not end as base32 text ends")
    return (value >> spare).to_bytes(size, "big")
