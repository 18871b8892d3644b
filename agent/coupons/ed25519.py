"""Ed25519 signing and verifying, from whichever library this machine has.

The router's daemon uses the libcrypto that Python's own `ssl` module has already loaded,
through ctypes: `cryptography` would cost it 8.5 MiB of memory for the same OpenSSL
calls (bench.coupon_check measures both). The cloud, and any machine without a usable
libcrypto, uses `cryptography`. Keys are raw: a 32-byte seed and a 32-byte public key.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import threading
import weakref
from collections.abc import Callable
from typing import Protocol

from agent.errors import LoopspotError

SEED_BYTES = 32
PUBLIC_BYTES = 32
SIGNATURE_BYTES = 64
_EVP_PKEY_ED25519 = 1087  # NID_ED25519 in OpenSSL's obj_mac.h

Verify = Callable[[bytes, bytes], bool]  # (signature, message) -> valid


class SigningUnavailable(LoopspotError):
    """No library here can do Ed25519; the message says what to install."""


class Backend(Protocol):
    """What coupons need of an Ed25519 library."""

    name: str

    def public_key(self, seed: bytes) -> bytes:
        """The public key of the private key `seed`."""

    def sign(self, seed: bytes, message: bytes) -> bytes:
        """The 64-byte signature of `message` by `seed`."""

    def verifier(self, public: bytes) -> Verify:
        """A function telling whether a signature of a message is `public`'s."""


def _loaded_libcrypto() -> str | None:
    """The path of the libcrypto this process has mapped (the one `ssl` linked), if any."""
    import ssl  # noqa: F401 -- loads libcrypto; the daemon has it already

    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                if "libcrypto" in line:
                    return line.rsplit(None, 1)[-1]
    except OSError:
        pass
    return ctypes.util.find_library("crypto")


class Libcrypto:
    """Ed25519 through OpenSSL's EVP interface, called with ctypes."""

    name = "libcrypto"

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        vp, cp, size = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
        for fn, restype, argtypes in (
            ("EVP_PKEY_new_raw_public_key", vp, [ctypes.c_int, vp, cp, size]),
            ("EVP_PKEY_new_raw_private_key", vp, [ctypes.c_int, vp, cp, size]),
            ("EVP_PKEY_get_raw_public_key", ctypes.c_int, [vp, cp, ctypes.POINTER(size)]),
            ("EVP_PKEY_free", None, [vp]),
            ("EVP_MD_CTX_new", vp, []),
            ("EVP_MD_CTX_free", None, [vp]),
            ("EVP_MD_CTX_reset", ctypes.c_int, [vp]),
            ("EVP_DigestVerifyInit", ctypes.c_int, [vp, vp, vp, vp, vp]),
            ("EVP_DigestVerify", ctypes.c_int, [vp, cp, size, cp, size]),
            ("EVP_DigestSignInit", ctypes.c_int, [vp, vp, vp, vp, vp]),
            ("EVP_DigestSign", ctypes.c_int, [vp, cp, ctypes.POINTER(size), cp, size]),
        ):
            function = getattr(lib, fn)
            function.restype = restype
            function.argtypes = argtypes
        self._lib = lib
        self._local = threading.local()  # one digest context per thread

    def _context(self) -> int:
        """This thread's digest context, reset: OpenSSL 3 does not re-initialise a used one."""
        ctx: int | None = getattr(self._local, "ctx", None)
        if ctx is None:
            ctx = self._lib.EVP_MD_CTX_new()
            if not ctx:
                raise MemoryError("EVP_MD_CTX_new")
            self._local.ctx = ctx
        else:
            self._lib.EVP_MD_CTX_reset(ctx)
        return ctx

    def _private(self, seed: bytes) -> int:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"an Ed25519 seed is {SEED_BYTES} bytes, not {len(seed)}")
        key: int | None = self._lib.EVP_PKEY_new_raw_private_key(
            _EVP_PKEY_ED25519, None, seed, SEED_BYTES
        )
        if not key:
            raise ValueError("libcrypto refused the Ed25519 seed")
        return key

    def public_key(self, seed: bytes) -> bytes:
        """The public key of the private key `seed`."""
        key = self._private(seed)
        try:
            out = ctypes.create_string_buffer(PUBLIC_BYTES)
            size = ctypes.c_size_t(PUBLIC_BYTES)
            if self._lib.EVP_PKEY_get_raw_public_key(key, out, ctypes.byref(size)) != 1:
                raise ValueError("libcrypto could not derive the public key")
            return out.raw
        finally:
            self._lib.EVP_PKEY_free(key)

    def sign(self, seed: bytes, message: bytes) -> bytes:
        """The 64-byte signature of `message` by `seed`."""
        key = self._private(seed)
        ctx = self._context()
        try:
            if self._lib.EVP_DigestSignInit(ctx, None, None, None, key) != 1:
                raise ValueError("libcrypto could not start an Ed25519 signature")
            out = ctypes.create_string_buffer(SIGNATURE_BYTES)
            size = ctypes.c_size_t(SIGNATURE_BYTES)
            if self._lib.EVP_DigestSign(ctx, out, ctypes.byref(size), message, len(message)) != 1:
                raise ValueError("libcrypto could not sign")
            return out.raw
        finally:
            self._lib.EVP_PKEY_free(key)

    def verifier(self, public: bytes) -> Verify:
        """A function telling whether a signature of a message is `public`'s."""
        if len(public) != PUBLIC_BYTES:
            raise ValueError(f"an Ed25519 public key is {PUBLIC_BYTES} bytes, not {len(public)}")
        lib = self._lib
        key = lib.EVP_PKEY_new_raw_public_key(_EVP_PKEY_ED25519, None, public, PUBLIC_BYTES)
        if not key:
            raise ValueError("libcrypto refused the Ed25519 public key")
        init, verify, context = lib.EVP_DigestVerifyInit, lib.EVP_DigestVerify, self._context

        def check(signature: bytes, message: bytes) -> bool:
            if len(signature) != SIGNATURE_BYTES:
                return False
            ctx = context()
            if init(ctx, None, None, None, key) != 1:
                return False
            return bool(verify(ctx, signature, SIGNATURE_BYTES, message, len(message)) == 1)

        weakref.finalize(check, lib.EVP_PKEY_free, key)
        return check


class Cryptography:
    """Ed25519 through the `cryptography` package."""

    name = "cryptography"

    def __init__(self) -> None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric import ed25519
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self._ed25519 = ed25519
        self._invalid = InvalidSignature
        self._raw = (Encoding.Raw, PublicFormat.Raw)

    def public_key(self, seed: bytes) -> bytes:
        """The public key of the private key `seed`."""
        key = self._ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        return key.public_key().public_bytes(*self._raw)

    def sign(self, seed: bytes, message: bytes) -> bytes:
        """The 64-byte signature of `message` by `seed`."""
        return self._ed25519.Ed25519PrivateKey.from_private_bytes(seed).sign(message)

    def verifier(self, public: bytes) -> Verify:
        """A function telling whether a signature of a message is `public`'s."""
        key = self._ed25519.Ed25519PublicKey.from_public_bytes(public)
        invalid = self._invalid

        def check(signature: bytes, message: bytes) -> bool:
            try:
                key.verify(signature, message)
            except invalid:
                return False
            return True

        return check


BACKENDS = ("auto", Libcrypto.name, Cryptography.name)
_chosen: dict[str, Backend] = {}


def backend(name: str = "auto") -> Backend:
    """The Ed25519 backend `name`; "auto" is libcrypto, else `cryptography`. Kept once made."""
    if name in _chosen:
        return _chosen[name]
    if name not in BACKENDS:
        raise ValueError(f"unknown Ed25519 backend {name!r}; use one of {', '.join(BACKENDS)}")
    made: Backend | None = None
    if name in ("auto", Libcrypto.name):
        path = _loaded_libcrypto()
        try:
            made = Libcrypto(path) if path else None
        except (OSError, AttributeError):  # no such library, or one without EVP_DigestSign
            made = None
    wants_cryptography = name in ("auto", Cryptography.name)
    if made is None and wants_cryptography and importlib.util.find_spec("cryptography"):
        made = Cryptography()
    if made is None:
        raise SigningUnavailable(
            f"no Ed25519 backend ({name}): Python's ssl module has no libcrypto 1.1.1 or "
            "newer and `cryptography` is not installed. Install python3-openssl "
            "(OpenSSL 3) or python3-cryptography."
        )
    _chosen[name] = made
    return made
