"""The one issuing function around the restaurant -> spa -> gym -> restaurant loop, and budgets."""

from __future__ import annotations

import dataclasses

import pytest

from agent.coupons.campaigns import (
    DAY,
    CampaignError,
    DeviceHistory,
    Place,
    awards,
    check_budget,
    check_campaign,
    issuers_of,
    overshoot,
    refill,
    visit_day,
)
from agent.wire import Campaign, Reach, Trigger
from tests.agent.coupons.helpers import ALLIANCE, DAY0, GYM, RESTAURANT, SPA, loop_campaigns

CAMPAIGNS = loop_campaigns()
FIRST_LOGIN = DeviceHistory(visit_number=1, logins_this_visit=1, held={})


def at(merchant: int) -> Place:
    return Place(ALLIANCE, merchant, merchant + 1)


def earned(merchant: int, history: DeviceHistory = FIRST_LOGIN, **issued: int) -> list[int]:
    """The merchants whose coupons a login at `merchant` earns."""
    counts = {int(k.removeprefix("c")): v for k, v in issued.items()}
    return [a.merchant_id for a in awards(CAMPAIGNS, at(merchant), history, DAY0, counts)]


def test_the_restaurant_hands_out_spa_coupons_the_spa_gym_ones_and_the_gym_restaurant_ones() -> (
    None
):
    assert earned(RESTAURANT) == [SPA]
    assert earned(SPA) == [GYM]
    assert earned(GYM) == [RESTAURANT]


def test_a_device_at_its_limit_gets_no_more() -> None:
    held = DeviceHistory(visit_number=3, logins_this_visit=1, held={1: 1})
    assert earned(RESTAURANT, held) == []


def test_a_router_whose_slice_is_spent_stops_issuing() -> None:
    assert earned(RESTAURANT, c1=9) == [SPA]
    assert earned(RESTAURANT, c1=10) == []


def test_nothing_is_issued_outside_the_campaign_window() -> None:
    campaign = CAMPAIGNS[0]
    for moment in (campaign.starts_at - 1, campaign.ends_at):
        assert awards(CAMPAIGNS, at(RESTAURANT), FIRST_LOGIN, moment, {}) == ()


def test_a_coupon_is_valid_until_the_campaign_ends_or_for_its_days() -> None:
    (award,) = awards(CAMPAIGNS, at(RESTAURANT), FIRST_LOGIN, DAY0, {})
    assert (award.not_before, award.not_after) == (DAY0, CAMPAIGNS[0].ends_at)
    short = dataclasses.replace(CAMPAIGNS[0], coupon_days=2)
    (award,) = awards((short,), at(RESTAURANT), FIRST_LOGIN, DAY0, {})
    assert award.not_after == DAY0 + 2 * DAY


def visits(trigger: Trigger, nth: int = 1) -> list[tuple[int, int]]:
    """(visit, login) pairs of 4 visits with 2 logins each at which the campaign fires."""
    campaign = dataclasses.replace(CAMPAIGNS[0], trigger=trigger, nth_visit=nth, per_device=9)
    fired = []
    for visit in range(1, 5):
        for login in (1, 2):
            history = DeviceHistory(visit, login, {})
            if awards((campaign,), at(RESTAURANT), history, DAY0, {}):
                fired.append((visit, login))
    return fired


def test_a_first_visit_campaign_fires_once_at_the_first_login_of_the_first_visit() -> None:
    assert visits(Trigger.FIRST_VISIT) == [(1, 1)]


def test_an_nth_visit_campaign_fires_at_the_first_login_of_that_visit() -> None:
    assert visits(Trigger.NTH_VISIT, nth=3) == [(3, 1)]


def test_a_login_campaign_fires_at_every_login() -> None:
    assert len(visits(Trigger.LOGIN)) == 8


def test_a_trigger_from_a_newer_cloud_never_fires() -> None:
    assert visits(Trigger.UNKNOWN) == []


def test_own_campaigns_go_out_at_the_own_sites_and_partner_ones_at_accepted_partners() -> None:
    assert issuers_of(SPA, Reach.OWN, [RESTAURANT]) == (SPA,)
    assert issuers_of(SPA, Reach.PARTNERS, [GYM, RESTAURANT, SPA]) == (RESTAURANT, GYM)


GOOD = Campaign(
    id=1,
    merchant_id=SPA,
    title_en="Spa",
    title_zh="水疗",
    starts_at=DAY0,
    ends_at=DAY0 + DAY,
    budget=10,
)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"ends_at": DAY0}, "ends_at"),
        ({"ends_at": DAY0 - 1}, "ends_at"),
        ({"budget": 0}, "budget"),
        ({"per_device": 0}, "per_device"),
        ({"title_zh": " "}, "title"),
        ({"trigger": Trigger.UNKNOWN}, "trigger"),
        ({"trigger": Trigger.NTH_VISIT, "nth_visit": 1}, "nth_visit"),
        ({"reach": Reach.UNKNOWN}, "reach"),
    ],
)
def test_a_campaign_that_makes_no_sense_is_refused_naming_the_field(
    change: dict[str, object], field: str
) -> None:
    with pytest.raises(CampaignError) as refused:
        check_campaign(dataclasses.replace(GOOD, **change))  # type: ignore[arg-type]
    assert refused.value.field == field


def test_a_budget_under_the_slices_handed_out_is_refused() -> None:
    assert check_budget(50, 50) == 50
    with pytest.raises(CampaignError, match="under the 60 coupons already handed out"):
        check_budget(50, 60)


def test_a_router_is_topped_up_by_a_slice_when_half_of_it_is_used() -> None:
    allotted = {"r1": 20, "r2": 20}
    assert refill(100, allotted, {"r1": 9}, "r1", 20) == 20  # 11 left: more than half
    assert refill(100, allotted, {"r1": 10}, "r1", 20) == 40
    assert refill(100, {"r1": 20, "r2": 70}, {"r1": 15}, "r1", 20) == 30  # only 10 unallotted
    assert refill(100, {"r1": 30, "r2": 70}, {"r1": 30}, "r1", 20) == 30  # budget all allotted


def test_slices_never_add_up_to_more_than_the_budget() -> None:
    allotted: dict[str, int] = {}
    for _ in range(30):
        for router in ("r1", "r2", "r3"):
            allotted[router] = refill(95, allotted, dict(allotted), router, 20)
    assert sum(allotted.values()) == 95


def test_overshoot_counts_coupons_beyond_the_limit_per_device() -> None:
    assert overshoot(1, {"d1": 1, "d2": 2, "d3": 3}) == 3
    assert overshoot(2, {"d1": 2}) == 0


def test_a_visit_is_a_day_of_the_sites_own_time_zone() -> None:
    shanghai = 8 * 3600
    before_midnight = 1_800_028_740  # 15:59 UTC: 23:59 in Shanghai
    after_midnight = before_midnight + 120  # 00:01 in Shanghai, still the same UTC day
    assert visit_day(before_midnight) == visit_day(after_midnight)
    assert visit_day(after_midnight, shanghai) == visit_day(before_midnight, shanghai) + 1
    assert visit_day(after_midnight, -5 * 3600) == visit_day(before_midnight, -5 * 3600)
