"""The coupon token: it round-trips, fits a small QR code, and no altered copy verifies."""

from __future__ import annotations

import base64
import os

import pytest
import segno
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.coupons.token import (
    TOKEN_BYTES,
    TOKEN_CHARS,
    Coupon,
    IssuerCertificate,
    TokenError,
    Verifier,
    bytes_of,
    certify,
    sign_coupon,
    text_of,
)
from tests.agent.coupons.helpers import ALLIANCE, BACKEND, DAY0, ROOT_KEY, ROOT_SEED, SPA, seed

ISSUER = seed("restaurant router")
CERT = certify(BACKEND, ROOT_SEED, 7, ALLIANCE, DAY0 + 86400 * 365, BACKEND.public_key(ISSUER))
VERIFIER = Verifier(BACKEND, ROOT_KEY, ALLIANCE)
DEVICE = "0123456789abcdef0123456789abcdef"


def spa_coupon(issuer_seed: bytes = ISSUER, cert: IssuerCertificate = CERT) -> Coupon:
    unsigned = Coupon(cert, 3, SPA, DEVICE, DAY0, DAY0 + 86400, b"\x01" * 8)
    return sign_coupon(BACKEND, issuer_seed, unsigned)


TOKEN = spa_coupon().to_text()


def test_a_coupon_round_trips_through_its_text() -> None:
    coupon = spa_coupon()
    assert VERIFIER.coupon(coupon.to_text()) == coupon
    assert VERIFIER.coupon(coupon.to_text().lower()) == coupon  # a scanner's case
    assert VERIFIER.coupon(" " + coupon.to_text()[:100] + "\n" + coupon.to_text()[100:]) == coupon


def test_the_token_is_213_bytes_and_its_qr_code_is_version_10_or_less() -> None:
    assert TOKEN_BYTES == 213
    assert len(TOKEN) == TOKEN_CHARS == 341
    qr = segno.make(TOKEN, error="l")
    assert qr.mode == "alphanumeric"
    assert int(qr.designator.split("-")[0]) <= 10


def test_the_token_names_no_mac_only_the_device_id() -> None:
    coupon = VERIFIER.coupon(TOKEN)
    assert coupon.device_id == DEVICE
    assert (coupon.campaign_id, coupon.merchant_id) == (3, SPA)


def test_a_coupon_signed_by_an_uncertified_key_is_refused() -> None:
    forged = spa_coupon(issuer_seed=seed("a forger"))
    with pytest.raises(TokenError, match="altered or not signed"):
        VERIFIER.coupon(forged.to_text())


def test_a_certificate_from_another_root_is_refused() -> None:
    other = certify(BACKEND, seed("other root"), 7, ALLIANCE, DAY0, BACKEND.public_key(ISSUER))
    with pytest.raises(TokenError, match="not signed by this alliance's root key"):
        VERIFIER.coupon(spa_coupon(cert=other).to_text())


def test_a_coupon_of_another_alliance_is_refused() -> None:
    cert = certify(BACKEND, ROOT_SEED, 7, ALLIANCE + 1, DAY0, BACKEND.public_key(ISSUER))
    with pytest.raises(TokenError, match="for alliance 2"):
        VERIFIER.coupon(spa_coupon(cert=cert).to_text())


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "expected 213"),
        ("A" * 339, "a length base32 never has"),
        ("W" * 341, "not base32"),
        ("0" * 340 + "1", "does not end as base32"),
        ("+" + TOKEN[1:], "not base32"),
        ("_".join(TOKEN[:2]) + TOKEN[2:], "not base32"),
        ("优惠" * 10, "not base32"),
        (TOKEN[:-8], "expected 213"),
        (TOKEN + "AAAAAAAA", "expected 213"),
    ],
)
def test_text_that_is_no_token_is_refused_with_the_part_named(text: str, problem: str) -> None:
    with pytest.raises(TokenError, match=problem):
        VERIFIER.coupon(text)


RAW = spa_coupon().to_bytes()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """The token's bytes with at least one byte changed, some bytes cut or some added."""
    data = bytearray(RAW)
    kind = draw(st.sampled_from(["flip", "replace", "cut", "add"]))
    if kind == "flip":
        for position in draw(st.lists(st.integers(0, len(data) * 8 - 1), min_size=1, max_size=4)):
            data[position // 8] ^= 1 << (position % 8)
    elif kind == "replace":
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255).filter(lambda b: b != RAW[position]))
    elif kind == "cut":
        start = draw(st.integers(0, len(data) - 1))
        del data[start : start + draw(st.integers(1, 8))]
    else:
        data[draw(st.integers(0, len(data))) : 0] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@settings(max_examples=10_000, deadline=None)
@given(mutated())
def test_no_mutated_token_is_accepted(data: bytes) -> None:
    if data == RAW:
        return  # flips that cancel out
    text = text_of(data)
    with pytest.raises(TokenError):
        VERIFIER.coupon(text)


@given(st.binary(max_size=300))
def test_base32_text_reads_back_as_the_bytes_it_was_made_of(data: bytes) -> None:
    assert bytes_of(text_of(data)) == data
    assert text_of(data) == base64.b32hexencode(data).decode().rstrip("=")


def test_a_fresh_nonce_makes_a_fresh_coupon_id() -> None:
    unsigned = Coupon(CERT, 3, SPA, DEVICE, DAY0, DAY0 + 86400, os.urandom(8))
    other = Coupon(CERT, 3, SPA, DEVICE, DAY0, DAY0 + 86400, os.urandom(8))
    assert (
        sign_coupon(BACKEND, ISSUER, unsigned).coupon_id
        != sign_coupon(BACKEND, ISSUER, other).coupon_id
    )
