"""Counter checks per second on one core, against the bare Ed25519 verify rate; token size.

    python -m bench.coupon_check [--rounds 7] [--checks 3000] [--spent 100000]

A check is what the staff page does with a scanned token: decode the base32 text, verify
both signatures (the issuer's certificate is verified once per issuer and kept), and look
the coupon up on the spent list on flash, here holding `--spent` coupons. The bare rate is
`cryptography`'s Ed25519 verify of the same coupon's signature, in the same rounds. The
goal is at least 0.8 of it. Runs without root: no network is involved.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import segno

from agent.coupons.ed25519 import backend
from agent.coupons.store import CouponStore
from agent.coupons.token import TOKEN_BYTES, Coupon, Verifier, certify, sign_coupon
from bench import common as C

ALLIANCE, MERCHANT = 1, 20
# PASETO v4.public of the same claims as JSON: "v4.public." + base64url(payload + 64-byte
# signature), payload {"cmp":…,"mer":…,"dev":32 hex,"nbf":…,"exp":…,"jti":16 hex,"kid":…}
PASETO_EXAMPLE_PAYLOAD = (
    b'{"cmp":4294967295,"mer":4294967295,"dev":"0123456789abcdef0123456789abcdef",'
    b'"nbf":1800000000,"exp":1802592000,"jti":"0123456789abcdef","kid":4294967295}'
)


def paseto_chars() -> int:
    """Characters of a PASETO v4.public token with the same claims (and no certificate)."""
    signed = len(PASETO_EXAMPLE_PAYLOAD) + 64
    return len("v4.public.") + (signed * 4 + 2) // 3


def coupons(count: int) -> tuple[Verifier, list[Coupon], bytes]:
    """`count` coupons of one issuer certified by a fresh root; the verifier and root key."""
    ed = backend("cryptography")
    root, issuer = os.urandom(32), os.urandom(32)
    cert = certify(ed, root, 1, ALLIANCE, 2**32 - 1, ed.public_key(issuer))
    made = [
        sign_coupon(
            ed,
            issuer,
            Coupon(cert, 1, MERCHANT, os.urandom(16).hex(), 0, 2**32 - 1, os.urandom(8)),
        )
        for _ in range(count)
    ]
    return Verifier(backend(), ed.public_key(root), ALLIANCE), made, ed.public_key(issuer)


def fill_spent(store: CouponStore, count: int) -> None:
    """Put `count` made-up coupon ids on the spent list."""
    with store.db:
        store.db.executemany(
            "INSERT INTO spent VALUES (?, 0, 1)", ((os.urandom(16).hex(),) for _ in range(count))
        )


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.coupon_check", description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--checks", type=int, default=3000)
    parser.add_argument("--spent", type=int, default=100_000)
    args = parser.parse_args(argv)
    print(C.setting())
    verifier, made, issuer_key = coupons(args.checks)
    texts = [c.to_text() for c in made]
    bare = backend("cryptography").verifier(issuer_key)
    signed = [(c.signature, c.claims()) for c in made]
    with tempfile.TemporaryDirectory() as folder:
        store = CouponStore(Path(folder))
        fill_spent(store, args.spent)
        rates: dict[str, list[float]] = {"check": [], "bare": []}
        for _ in range(args.rounds):
            started = time.perf_counter()
            for text in texts:
                coupon = verifier.coupon(text)
                if store.is_spent(coupon.coupon_id):
                    raise C.BenchError("a fresh coupon was on the spent list")
            rates["check"].append(len(texts) / (time.perf_counter() - started))
            started = time.perf_counter()
            for signature, claims in signed:
                if not bare(signature, claims):
                    raise C.BenchError("a good signature did not verify")
            rates["bare"].append(len(signed) / (time.perf_counter() - started))
        store.close()
    ratios = [c / b for c, b in zip(rates["check"], rates["bare"], strict=True)]
    qr = segno.make(texts[0], error="l")
    figures: dict[str, object] = {
        "checks_per_second": round(C.median(rates["check"])),
        "bare_verifies_per_second": round(C.median(rates["bare"])),
        "ratio": round(C.median(ratios), 3),
        "token_bytes": TOKEN_BYTES,
        "token_chars": len(texts[0]),
        "paseto_v4_chars_without_certificate": paseto_chars(),
        "qr": f"{qr.designator} ({qr.mode})",
        "backend": verifier.backend.name,
    }
    C.report(
        f"Counter checks, one core, {args.spent:,} coupons on the spent list "
        f"({args.rounds} rounds of {args.checks})",
        ["figure", "median"],
        figures.items(),
    )
    return figures


if __name__ == "__main__":
    main()
