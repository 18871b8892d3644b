"""The router's coupon desk: issue at login, show wallets, check and redeem at the counter.

It joins the pure core (campaigns, token, counter) to the store on flash, the cloud (for
wallets issued elsewhere) and the events the cloud learns from. The portal and the staff
page call it; every method that touches the store runs on the executor, off the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeVar

from agent.coupons import campaigns as rules
from agent.coupons.counter import Refusal, Verdict, judge
from agent.coupons.ed25519 import Backend
from agent.coupons.events import NO_COUPON_EVENTS, CouponEvents
from agent.coupons.plan import ActivePlan
from agent.coupons.shortcode import ShortCodeError, code_of, parse_code
from agent.coupons.store import CouponStore
from agent.coupons.token import NONCE_BYTES, Coupon, TokenError, looks_like_token, sign_coupon
from agent.errors import LoopspotError
from agent.wire import Campaign, CouponPlan, WalletReply, device_id

log = logging.getLogger("loopspot.coupons")
T = TypeVar("T")
Said = list[Callable[[], None]]  # events to tell once back on the event loop
MOVE_CODE_LIFETIME = 15 * 60  # seconds a wallet's one-time move code works


class MoveError(LoopspotError):
    """A wallet move was refused; the message is for the shopper."""


class WalletSource(Protocol):
    """The cloud, asked for a device's wallet across the alliance."""

    async def wallet(self, device_id: str) -> WalletReply | None:
        """The cloud's answer, or None when it cannot answer in time (offline)."""


@dataclass(frozen=True, slots=True)
class Held:
    """A coupon in a wallet, with its short code, its offer and whether it can be used."""

    coupon: Coupon
    code: str
    campaign: Campaign | None  # None: a campaign this router was not told about
    state: Refusal | None  # None: valid; else why it cannot be used (spent, expired, moved)
    issued_here: bool
    got_at: float

    @property
    def text(self) -> str:
        """The token text, for its QR code."""
        return self.coupon.to_text()


@dataclass(frozen=True, slots=True)
class Check:
    """What staff see for one code: the verdict, the coupon and offer, the phone's presence."""

    verdict: Verdict
    campaign: Campaign | None = None
    code: str = ""
    on_wifi: bool = False
    hint: str = ""  # for a mistyped short code: what is wrong with it


class CouponDesk:
    """Coupons at one router; `plan` comes from the cloud's config (none: coupons off)."""

    def __init__(
        self,
        store: CouponStore,
        backend: Backend,
        issuer_seed: bytes,
        alliance_key: bytes,
        *,
        clock: Callable[[], float] = time.time,
        events: CouponEvents = NO_COUPON_EVENTS,
        cloud: WalletSource | None = None,
        online_macs: Callable[[], Iterable[str]] = tuple,
        executor: Executor | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.issuer_seed = issuer_seed
        self.issuer_key = backend.public_key(issuer_seed)
        self.alliance_key = alliance_key
        self.clock = clock
        self.events = events
        self.cloud = cloud
        self.online_macs = online_macs
        self.executor = executor
        self.plan: ActivePlan | None = None

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _run_telling(self, fn: Callable[..., T], *args: object) -> T:
        """Run `fn(*args, said)` off the loop, then tell the events it put in `said`, on the loop.

        The events' sink (the link's spooler) belongs to the event loop's thread.
        """
        said: list[Callable[[], None]] = []
        result = await self._run(fn, *args, said)
        for tell in said:
            tell()
        return result

    def prepare(self, plan: CouponPlan) -> ActivePlan:
        """The cloud's coupon plan checked and ready, not yet in force; else PlanError."""
        return ActivePlan.check(plan, self.backend, self.issuer_key)

    def use(self, plan: ActivePlan | None) -> None:
        """Put a prepared plan in force (None: coupons off)."""
        self.plan = plan

    def apply_plan(self, plan: CouponPlan | None) -> None:
        """Check and put a plan in force; raises PlanError (and nothing changes) if it is bad."""
        self.use(None if plan is None else self.prepare(plan))

    def device(self, mac: str) -> str:
        """The device_id of `mac` in this alliance."""
        return device_id(self.alliance_key, mac)

    @property
    def staff_pin(self) -> str:
        """The staff PIN's hash from the plan ("" when none is set)."""
        return self.plan.plan.staff_pin if self.plan else ""

    # the shopper

    async def on_login(self, mac: str) -> tuple[Held, ...]:
        """Issue the coupons this login earns; the new coupons (none without a plan)."""
        plan = self.plan
        if plan is None:
            return ()
        return await self._run_telling(self._issue, plan, self.device(mac), self.clock())

    def _issue(self, plan: ActivePlan, device: str, now: float, said: Said) -> tuple[Held, ...]:
        day = rules.visit_day(now, plan.plan.utc_offset)  # the site's day, as the cloud counts it
        visits = self.store.login(device, day)
        history = rules.DeviceHistory(
            visits.visit_number, visits.logins_today, self.store.held(device)
        )
        earned = rules.awards(
            plan.plan.campaigns, plan.place, history, int(now), self.store.issued()
        )
        made = [self._sign(plan, award, device) for award in earned]
        self.store.add([_row(c) for c in made], issued_here=True, at=now)
        for coupon in made:
            said.append(partial(self.events.coupon_issued, device, coupon, now))
        return tuple(self._held(plan, c, True, now, now) for c in made)

    def _sign(self, plan: ActivePlan, award: rules.Award, device: str) -> Coupon:
        unsigned = Coupon(
            plan.certificate,
            award.campaign_id,
            award.merchant_id,
            device,
            award.not_before,
            award.not_after,
            os.urandom(NONCE_BYTES),
        )
        return sign_coupon(self.backend, self.issuer_seed, unsigned)

    async def wallet(self, mac: str) -> tuple[Held, ...]:
        """Every coupon the phone holds: from the cloud when it answers, else from the cache."""
        plan = self.plan
        if plan is None:
            return ()
        device = self.device(mac)
        reply = await self.cloud.wallet(device) if self.cloud is not None else None
        if reply is not None:
            await self._run(self._keep_reply, plan, reply)
        held = await self._run(self._wallet, plan, device)
        now = self.clock()
        for item in held:
            if item.state is None:
                self.events.coupon_seen(device, item.coupon, now)
        return held

    def _keep_reply(self, plan: ActivePlan, reply: WalletReply) -> None:
        now = self.clock()
        rows = []
        for text in reply.coupons:
            try:
                coupon = plan.verifier.coupon(text)
            except TokenError as error:
                log.warning("the cloud sent a coupon that does not verify: %s", error)
                continue
            if coupon.device_id == reply.device_id:
                rows.append(_row(coupon))
        self.store.add(rows, issued_here=False, at=now)
        self.store.spent_elsewhere(reply.spent, now)

    def _wallet(self, plan: ActivePlan, device: str) -> tuple[Held, ...]:
        now = self.clock()
        held = []
        for stored in self.store.of_device(device):
            try:
                coupon = plan.verifier.coupon(stored.token)
            except TokenError:
                continue  # kept under an earlier root key: no longer this alliance's
            held.append(self._held(plan, coupon, stored.issued_here, stored.got_at, now))
        return tuple(held)

    def _held(
        self, plan: ActivePlan, coupon: Coupon, here: bool, got_at: float, now: float
    ) -> Held:
        verdict = self._judge(coupon, coupon.merchant_id, now, None)
        campaign = plan.campaign(coupon.campaign_id)
        return Held(coupon, code_of(coupon.coupon_id), campaign, verdict.refusal, here, got_at)

    def _judge(self, coupon: Coupon, merchant_id: int, now: float, shown_by: str | None) -> Verdict:
        return judge(
            coupon,
            merchant_id=merchant_id,
            now=int(now),
            spent=_Lookup(self.store.is_spent),
            moved=_Lookup(self.store.is_moved),
            shown_by=shown_by,
        )

    async def new_since(self, mac: str, since: float) -> tuple[Held, ...]:
        """The coupons this router issued the phone since `since` (its session's start)."""
        plan = self.plan
        if plan is None:
            return ()
        held = await self._run(self._wallet, plan, self.device(mac))
        return tuple(h for h in held if h.issued_here and h.got_at >= since)

    async def start_move(self, mac: str) -> tuple[str, float]:
        """A one-time code that moves this phone's wallet to its next address; (code, expiry)."""
        code = code_of(secrets.token_hex(16))
        expires = self.clock() + MOVE_CODE_LIFETIME
        await self._run(self.store.keep_move_code, code, self.device(mac), expires)
        return code, expires

    async def finish_move(self, mac: str, typed: str) -> tuple[Held, ...]:
        """Move the wallet a one-time code names to this phone; the coupons it now holds.

        Each valid coupon is issued again, bound to this phone, and the old one is void.
        """
        plan = self.plan
        if plan is None:
            raise MoveError("coupons are not set up at this shop")
        try:
            code = parse_code(typed)
        except ShortCodeError as error:
            raise MoveError(str(error)) from None
        return await self._run_telling(self._move, plan, code, self.device(mac))

    def _move(self, plan: ActivePlan, code: str, device: str, said: Said) -> tuple[Held, ...]:
        now = self.clock()
        old = self.store.use_move_code(code, now)
        if old is None:
            raise MoveError("this code is unknown, used already or expired: ask for a new one")
        if old == device:
            raise MoveError("this code is for another phone: open it on your new address")
        moving = [h.coupon for h in self._wallet(plan, old) if h.state is None]
        moved = [
            self._sign(
                plan, rules.Award(c.campaign_id, c.merchant_id, c.not_before, c.not_after), device
            )
            for c in moving
        ]
        self.store.add([_row(c) for c in moved], issued_here=False, at=now)
        self.store.record_moves(
            (a.coupon_id, b.coupon_id) for a, b in zip(moving, moved, strict=True)
        )
        for before, after in zip(moving, moved, strict=True):
            said.append(
                partial(self.events.coupon_issued, device, after, now, replaces=before.coupon_id)
            )
        said.append(partial(self.events.wallet_moved, old, device, len(moved), now))
        return self._wallet(plan, device)

    # the counter

    async def check(self, typed: str, shown_by_mac: str | None = None) -> Check:
        """What staff see for a typed short code or a scanned token; nothing is changed."""
        plan = self.plan
        if plan is None:
            return Check(Verdict(None, Refusal.NOT_A_COUPON), hint="coupons are not set up here")
        shown_by = self.device(shown_by_mac) if shown_by_mac else None
        return await self._run(self._check, plan, typed, shown_by)

    def _check(self, plan: ActivePlan, typed: str, shown_by: str | None) -> Check:
        coupon, hint, refusal = self._find(plan, typed)
        if coupon is None:
            return Check(Verdict(None, refusal), hint=hint)
        verdict = self._judge(coupon, plan.place.merchant_id, self.clock(), shown_by)
        online = {self.device(mac) for mac in self.online_macs()}
        return Check(
            verdict,
            plan.campaign(coupon.campaign_id),
            code_of(coupon.coupon_id),
            coupon.device_id in online,
        )

    def _find(self, plan: ActivePlan, typed: str) -> tuple[Coupon | None, str, Refusal]:
        """The coupon `typed` names, or why none: (coupon, hint, refusal)."""
        if looks_like_token(typed):
            try:
                return plan.verifier.coupon(typed), "", Refusal.NOT_A_COUPON
            except TokenError as error:
                return None, str(error), Refusal.FORGED
        try:
            code = parse_code(typed)
        except ShortCodeError as error:
            return None, str(error), Refusal.NOT_A_COUPON
        for token in self.store.by_code(code):
            try:
                return plan.verifier.coupon(token), "", Refusal.NOT_A_COUPON
            except TokenError:
                continue
        return None, "no coupon with this code is known at this router", Refusal.NOT_A_COUPON

    async def redeem(self, typed: str) -> Check:
        """Redeem the coupon `typed` names, if the check passes; on flash when this returns."""
        plan = self.plan
        if plan is None:
            return Check(Verdict(None, Refusal.NOT_A_COUPON), hint="coupons are not set up here")
        return await self._run_telling(self._redeem, plan, typed)

    def _redeem(self, plan: ActivePlan, typed: str, said: Said) -> Check:
        check = self._check(plan, typed, None)
        now = self.clock()
        coupon = check.verdict.coupon
        if coupon is None or not check.verdict.valid:
            refusal = check.verdict.refusal or Refusal.NOT_A_COUPON
            said.append(partial(self.events.coupon_refused, refusal, coupon, now))
            return check
        if not self.store.spend(coupon.coupon_id, now):  # a second tap, or another till, won
            refused = Check(
                Verdict(coupon, Refusal.SPENT), check.campaign, check.code, check.on_wifi
            )
            said.append(partial(self.events.coupon_refused, Refusal.SPENT, coupon, now))
            return refused
        self.store.add([_row(coupon)], issued_here=False, at=now)  # known here from now on
        said.append(partial(self.events.coupon_redeemed, coupon, now))
        return check

    async def spent_elsewhere(self, coupon_ids: Iterable[str]) -> int:
        """The cloud says these coupons were redeemed at another router: refuse them here."""
        return await self._run(self.store.spent_elsewhere, list(coupon_ids), self.clock())


class _Lookup:
    """A Container asking the store, so judge() reads one row, not the whole spent list."""

    def __init__(self, has: Callable[[str], bool]) -> None:
        self._has = has

    def __contains__(self, item: object) -> bool:
        return isinstance(item, str) and self._has(item)


def _row(coupon: Coupon) -> tuple[str, str, str, str, int, int, int]:
    coupon_id = coupon.coupon_id
    return (
        coupon_id,
        code_of(coupon_id),
        coupon.to_text(),
        coupon.device_id,
        coupon.campaign_id,
        coupon.merchant_id,
        coupon.not_after,
    )
