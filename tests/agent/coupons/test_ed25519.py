"""Both Ed25519 backends sign alike, verify each other, and meet RFC 8032's test vector."""

from __future__ import annotations

import pytest

from agent.coupons.ed25519 import backend

# RFC 8032, section 7.1, TEST 2
SEED = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
PUBLIC = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
MESSAGE = bytes.fromhex("72")
SIGNATURE = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)


@pytest.mark.parametrize("name", ["libcrypto", "cryptography"])
def test_each_backend_meets_the_rfc_8032_vector(name: str) -> None:
    ed = backend(name)
    assert ed.public_key(SEED) == PUBLIC
    assert ed.sign(SEED, MESSAGE) == SIGNATURE
    verify = ed.verifier(PUBLIC)
    assert verify(SIGNATURE, MESSAGE)
    assert not verify(SIGNATURE, b"\x73")
    assert not verify(SIGNATURE[:-1] + b"\x01", MESSAGE)
    assert not verify(SIGNATURE[:63], MESSAGE)


def test_a_signature_from_one_backend_verifies_with_the_other() -> None:
    ours, theirs = backend("libcrypto"), backend("cryptography")
    message = b"a spa coupon"
    assert theirs.verifier(PUBLIC)(ours.sign(SEED, message), message)
    assert ours.verifier(PUBLIC)(theirs.sign(SEED, message), message)


def test_signing_after_verifying_on_one_thread_still_works() -> None:
    ed = backend("libcrypto")
    verify = ed.verifier(PUBLIC)
    for _ in range(3):
        assert verify(ed.sign(SEED, MESSAGE), MESSAGE)


def test_an_unknown_backend_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="unknown Ed25519 backend 'nacl'"):
        backend("nacl")
