"""The coupon desk's files on flash: the router's issuer key and the cloud's latest plan."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from agent.coupons.ed25519 import SEED_BYTES
from agent.flash import write_atomically
from agent.wire import CouponPlan, WireError, decode

log = logging.getLogger("loopspot.coupons")
ISSUER_KEY_FILE = "issuer.key"  # the router's own Ed25519 seed; it never leaves the router
PLAN_FILE = "coupon-plan.json"  # the last plan the cloud pushed, kept across other pushes


def issuer_seed(flash_dir: Path) -> bytes:
    """The router's coupon-issuing key, made on first use and kept on flash (mode 0600)."""
    path = flash_dir / ISSUER_KEY_FILE
    try:
        seed = path.read_bytes()
    except FileNotFoundError:
        seed = b""
    if len(seed) == SEED_BYTES:
        return seed
    if seed:
        log.warning("%s is not a %d-byte key; making a new one", path, SEED_BYTES)
    seed = os.urandom(SEED_BYTES)
    write_atomically(path, seed, mode=0o600)
    return seed


def load_plan(flash_dir: Path) -> CouponPlan | None:
    """The coupon plan kept on flash; None when there is none or it is unreadable."""
    path = flash_dir / PLAN_FILE
    try:
        return decode(path.read_bytes(), CouponPlan)
    except FileNotFoundError:
        return None
    except (OSError, WireError) as error:
        log.error("ignoring %s: %s", path, error)
        return None


def save_plan(flash_dir: Path, plan: CouponPlan) -> None:
    """Keep `plan` on flash, atomically."""
    write_atomically(flash_dir / PLAN_FILE, plan.encode())
