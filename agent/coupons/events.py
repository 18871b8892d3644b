"""What the coupon desk reports to the cloud: the CouponEvents protocol and its silent default."""

from __future__ import annotations

from typing import Protocol

from agent.coupons.counter import Refusal
from agent.coupons.token import Coupon


class CouponEvents(Protocol):
    """Coupon happenings; every call returns at once and never fails."""

    def coupon_issued(self, device_id: str, coupon: Coupon, at: float, replaces: str = "") -> None:
        """A coupon was issued to the device (in place of `replaces`, when a wallet moved)."""

    def coupon_seen(self, device_id: str, coupon: Coupon, at: float) -> None:
        """The shopper's wallet showed the coupon."""

    def coupon_redeemed(self, coupon: Coupon, at: float) -> None:
        """Staff redeemed the coupon here."""

    def coupon_refused(self, refusal: Refusal, coupon: Coupon | None, at: float) -> None:
        """Staff checked a code at redemption and it was refused."""

    def wallet_moved(self, device_id: str, to_device: str, count: int, at: float) -> None:
        """`count` coupons of `device_id` moved to `to_device`."""


class NoCouponEvents:
    """Reports nothing: the agent without a cloud."""

    def coupon_issued(self, device_id: str, coupon: Coupon, at: float, replaces: str = "") -> None:
        """Ignored."""

    def coupon_seen(self, device_id: str, coupon: Coupon, at: float) -> None:
        """Ignored."""

    def coupon_redeemed(self, coupon: Coupon, at: float) -> None:
        """Ignored."""

    def coupon_refused(self, refusal: Refusal, coupon: Coupon | None, at: float) -> None:
        """Ignored."""

    def wallet_moved(self, device_id: str, to_device: str, count: int, at: float) -> None:
        """Ignored."""


NO_COUPON_EVENTS = NoCouponEvents()
