"""What happens at the router, as wire Events: the one place a MAC becomes a device_id.

The session core and the portal report through the SessionEvents protocol; NO_EVENTS is
the silent default, so the agent runs (and its service is tested) without a cloud. Events
leave here without (boot_id, seq): the spool stamps those when it stores them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from agent.clients import is_randomized
from agent.sessions import Ended, Session
from agent.wire import Event, EventKind, device_id

if TYPE_CHECKING:  # only an agent with the cloud link (and its coupon desk) reports these
    from agent.coupons.counter import Refusal
    from agent.coupons.token import Coupon


class SessionEvents(Protocol):
    """What the service and the portal report; every call returns at once, never fails."""

    def session_started(self, session: Session, at: float) -> None:
        """A device's session began."""

    def session_ended(self, ended: Ended) -> None:
        """A device's session ended."""

    def terms_accepted(self, session: Session, at: float) -> None:
        """The shopper tapped 'accept' on terms `session.terms_version`."""

    def portal_viewed(self, mac: str, at: float) -> None:
        """A device was shown the portal page."""


class NoEvents:
    """Reports nothing: the agent without a cloud."""

    def session_started(self, session: Session, at: float) -> None:
        """Ignored."""

    def session_ended(self, ended: Ended) -> None:
        """Ignored."""

    def terms_accepted(self, session: Session, at: float) -> None:
        """Ignored."""

    def portal_viewed(self, mac: str, at: float) -> None:
        """Ignored."""


NO_EVENTS = NoEvents()


class Emitter:
    """Turns happenings into Events for `sink`; the raw MAC stays here, only device_id leaves."""

    def __init__(self, router_id: str, alliance_key: bytes, sink: Callable[[Event], None]) -> None:
        self.router_id = router_id
        self._key = alliance_key
        self._sink = sink

    def device_id(self, mac: str) -> str:
        """The device's pseudonym in this alliance."""
        return device_id(self._key, mac)

    def _emit(self, kind: EventKind, mac: str, at: float, **details: Any) -> None:
        event = Event(
            router_id=self.router_id,
            at=round(at, 3),
            kind=kind,
            device_id=self.device_id(mac),
            randomized=is_randomized(mac),
        )
        self._sink(replace(event, **details) if details else event)

    def device_seen(self, mac: str, at: float) -> None:
        """The device showed up in the shop (a visit begins)."""
        self._emit(EventKind.DEVICE_SEEN, mac, at)

    def device_left(self, mac: str, at: float, dwell: float) -> None:
        """The device has been unseen long enough to count as gone; `dwell` is the visit."""
        self._emit(EventKind.DEVICE_LEFT, mac, at, duration=round(max(0.0, dwell), 3))

    def session_started(self, session: Session, at: float) -> None:
        """A device's session began."""
        self._emit(EventKind.SESSION_STARTED, session.client.mac, at)

    def session_ended(self, ended: Ended) -> None:
        """A device's session ended: bytes both ways, how long it lasted, why."""
        session = ended.session
        self._emit(
            EventKind.SESSION_ENDED,
            session.client.mac,
            ended.at,
            session_bytes=session.bytes_used,
            duration=round(max(0.0, ended.at - session.started_at), 3),
            reason=ended.reason.value,
        )

    def terms_accepted(self, session: Session, at: float) -> None:
        """The shopper accepted the terms of `session.terms_version`."""
        self._emit(
            EventKind.TERMS_ACCEPTED, session.client.mac, at, terms_version=session.terms_version
        )

    def portal_viewed(self, mac: str, at: float) -> None:
        """A device was shown the portal page."""
        self._emit(EventKind.PORTAL_VIEWED, mac, at)

    def _coupon_event(self, kind: EventKind, device: str, at: float, **details: Any) -> None:
        self._sink(
            Event(router_id=self.router_id, at=round(at, 3), kind=kind, device_id=device, **details)
        )

    def coupon_issued(self, device_id: str, coupon: Coupon, at: float, replaces: str = "") -> None:
        """A coupon was issued to the device (in place of `replaces`, when a wallet moved)."""
        self._coupon_event(
            EventKind.COUPON_ISSUED,
            device_id,
            at,
            coupon=coupon.to_text(),
            coupon_id=coupon.coupon_id,
            campaign_id=coupon.campaign_id,
            replaces=replaces,
        )

    def coupon_seen(self, device_id: str, coupon: Coupon, at: float) -> None:
        """The shopper's wallet showed the coupon."""
        self._coupon_event(
            EventKind.COUPON_SEEN,
            device_id,
            at,
            coupon_id=coupon.coupon_id,
            campaign_id=coupon.campaign_id,
        )

    def coupon_redeemed(self, coupon: Coupon, at: float) -> None:
        """Staff redeemed the coupon here; the token goes too, for a coupon the cloud lacks."""
        self._coupon_event(
            EventKind.COUPON_REDEEMED,
            coupon.device_id,
            at,
            coupon=coupon.to_text(),
            coupon_id=coupon.coupon_id,
            campaign_id=coupon.campaign_id,
        )

    def coupon_refused(self, refusal: Refusal, coupon: Coupon | None, at: float) -> None:
        """Staff tried to redeem a code that was refused for `refusal`."""
        self._coupon_event(
            EventKind.COUPON_REFUSED,
            coupon.device_id if coupon else "",
            at,
            reason=refusal.value,
            coupon_id=coupon.coupon_id if coupon else "",
            campaign_id=coupon.campaign_id if coupon else 0,
        )

    def wallet_moved(self, device_id: str, to_device: str, count: int, at: float) -> None:
        """`count` coupons of `device_id` moved to `to_device`."""
        self._coupon_event(EventKind.WALLET_MOVED, device_id, at, to_device=to_device, count=count)
