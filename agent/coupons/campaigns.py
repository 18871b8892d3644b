"""Which coupons a login earns, and the budget arithmetic: one pure core, router and cloud.

`awards` is the one issuing function: the campaigns, where the router stands, what the
device has had and the time go in; the coupons to issue come out. A router runs it at each
login; the cloud runs it over the same facts to check what routers did.

Budgets hold fleet-wide by slices: the cloud allots each router a number of coupons it may
issue on its own (`Campaign.allotted`, growing as it refills), and the slices of one
campaign never add up to more than its budget. The limit per device holds exactly for
what a router knows; two routers offline at once may each give a device its coupon, and
that overshoot (at most one slice) is counted by `overshoot`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from agent.errors import LoopspotError
from agent.wire import Campaign, Reach, Trigger

DAY = 86400


class CampaignError(LoopspotError):
    """A campaign or a budget change breaks a rule; the message names the field and the fix."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True, slots=True)
class Place:
    """Where a router stands: its alliance, merchant and site."""

    alliance_id: int
    merchant_id: int
    site_id: int


@dataclass(frozen=True, slots=True)
class DeviceHistory:
    """What the router knows of a device when it logs in."""

    visit_number: int  # this visit's number at this site (a visit: a day with a login); 1 = first
    logins_this_visit: int  # counting this one: 1 = the first login of the visit
    held: Mapping[int, int]  # campaign id -> coupons of it the device has had, anywhere known


@dataclass(frozen=True, slots=True)
class Award:
    """One coupon to issue: its campaign, the merchant that honours it, its validity."""

    campaign_id: int
    merchant_id: int
    not_before: int
    not_after: int


def visit_day(at: float, utc_offset: int = 0) -> int:
    """The number of the site's local day at `at`: a visit is a day with a login there."""
    return int((at + utc_offset) // DAY)


def triggered(campaign: Campaign, history: DeviceHistory) -> bool:
    """True when this login is one the campaign hands its coupon out at."""
    if campaign.trigger is Trigger.LOGIN:
        return True
    if history.logins_this_visit != 1:
        return False  # a visit earns a visit's coupon once, at its first login
    if campaign.trigger is Trigger.FIRST_VISIT:
        return history.visit_number == 1
    if campaign.trigger is Trigger.NTH_VISIT:
        return history.visit_number == campaign.nth_visit
    return False  # a trigger from a newer cloud: not understood, so never fired


def validity(campaign: Campaign, now: int) -> tuple[int, int]:
    """The validity window of a coupon of `campaign` issued at `now`."""
    end = campaign.ends_at
    if campaign.coupon_days:
        end = min(end, now + campaign.coupon_days * DAY)
    return now, end


def awards(
    campaigns: Sequence[Campaign],
    place: Place,
    history: DeviceHistory,
    now: int,
    issued: Mapping[int, int],
) -> tuple[Award, ...]:
    """The coupons a login at `place` earns at `now`; `issued`: by this router, per campaign."""
    earned = []
    for campaign in sorted(campaigns, key=lambda c: c.id):
        if place.merchant_id not in campaign.issuers:
            continue
        if not campaign.starts_at <= now < campaign.ends_at:
            continue
        if history.held.get(campaign.id, 0) >= campaign.per_device:
            continue
        if issued.get(campaign.id, 0) >= campaign.allotted:
            continue  # this router's slice is spent until the cloud allots more
        if not triggered(campaign, history):
            continue
        start, end = validity(campaign, now)
        earned.append(Award(campaign.id, campaign.merchant_id, start, end))
    return tuple(earned)


def issuers_of(
    campaign_merchant: int, reach: Reach, accepted_partners: Iterable[int]
) -> tuple[int, ...]:
    """The merchants whose sites hand a campaign out: its own, or its accepted partners."""
    if reach is Reach.OWN:
        return (campaign_merchant,)
    return tuple(sorted(set(accepted_partners) - {campaign_merchant}))


def check_campaign(campaign: Campaign) -> Campaign:
    """`campaign` if its rules make sense; else CampaignError naming the field."""
    if not campaign.title_en.strip() or not campaign.title_zh.strip():
        raise CampaignError("title", "give the offer a title in English and in Chinese")
    if campaign.ends_at <= campaign.starts_at:
        raise CampaignError(
            "ends_at",
            "the validity window ends before it starts; make ends_at later than starts_at",
        )
    if campaign.budget < 1:
        raise CampaignError("budget", "must be at least 1 coupon")
    if campaign.per_device < 1:
        raise CampaignError("per_device", "must be at least 1 coupon per device")
    if campaign.trigger is Trigger.UNKNOWN:
        raise CampaignError("trigger", "use login, first_visit or nth_visit")
    if campaign.trigger is Trigger.NTH_VISIT and campaign.nth_visit < 2:
        raise CampaignError("nth_visit", "must be 2 or more (use first_visit for the first)")
    if campaign.reach is Reach.UNKNOWN:
        raise CampaignError("reach", "use own or partners")
    return campaign


def check_budget(budget: int, allotted_total: int) -> int:
    """`budget` if it is at least the coupons already allotted as slices; else CampaignError."""
    if budget < allotted_total:
        raise CampaignError(
            "budget",
            f"{budget} is under the {allotted_total} coupons already handed out to routers as "
            f"slices; set it to {allotted_total} or more",
        )
    return budget


def refill(
    budget: int,
    allotted: Mapping[str, int],
    issued: Mapping[str, int],
    router: str,
    slice_size: int,
) -> int:
    """The router's new allotment (all slices so far): topped up by one slice when half used.

    `allotted` and `issued` are per router; the slices of all routers never exceed `budget`.
    """
    mine = allotted.get(router, 0)
    if mine - issued.get(router, 0) > slice_size // 2:
        return mine  # more than half a slice left
    free = budget - sum(allotted.values())
    return mine + max(0, min(slice_size, free))


def overshoot(per_device: int, held: Mapping[str, int]) -> int:
    """Coupons given beyond the limit per device (two routers offline at once), in all."""
    return sum(max(0, count - per_device) for count in held.values())
