"""The pure part of coupon ingest: which rows coupon events make, and which are refused."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from agent import wire
from agent.coupons.ed25519 import backend
from agent.coupons.token import Coupon, Verifier, certify, sign_coupon
from cloud.coupon_ingest import CouponDesk, Place, double_spends, wants_coupons
from cloud.ingest_core import event_row, read_message

ALLIANCE = 7
DEVICE = "0123456789abcdef0123456789abcdef"
ED = backend("cryptography")
ROOT, ISSUER = os.urandom(32), os.urandom(32)
VERIFIER = Verifier(ED, ED.public_key(ROOT), ALLIANCE)
CERT = certify(ED, ROOT, 1, ALLIANCE, 2**32 - 1, ED.public_key(ISSUER))
PLACES = {"r1": Place("r1", 3, 30, ALLIANCE), "lonely": Place("lonely", 4, 40, None)}


def verify(alliance_id: int, text: str) -> Coupon:
    assert alliance_id == ALLIANCE
    return VERIFIER.coupon(text)


def coupon(device: str = DEVICE) -> Coupon:
    unsigned = Coupon(CERT, 5, 20, device, 0, 2**32 - 1, os.urandom(8))
    return sign_coupon(ED, ISSUER, unsigned)


def issued_event(router: str = "r1", **values: object) -> wire.Event:
    made = coupon()
    fields: dict[str, object] = {
        "coupon": made.to_text(),
        "coupon_id": made.coupon_id,
        "device_id": DEVICE,
        **values,
    }
    return wire.Event(
        router_id=router,
        boot_id="b",
        seq=1,
        at=10.0,
        kind=wire.EventKind.COUPON_ISSUED,
        **fields,  # type: ignore[arg-type]
    )


def test_an_issued_coupon_becomes_a_ledger_row_and_fills_its_event_row() -> None:
    desk = CouponDesk(PLACES, verify)
    event = issued_event()
    row = event_row(event)
    assert desk.take(event, row) is None
    [ledger] = desk.writes.issued
    assert (ledger["campaign_id"], ledger["merchant_id"], ledger["alliance_id"]) == (5, 20, 7)
    assert (ledger["issuer_site_id"], ledger["issuer_merchant_id"]) == (3, 30)
    assert row["campaign_id"] == 5 and row["coupon_id"] == ledger["coupon_id"]


def test_coupon_events_that_cannot_be_true_are_refused_with_the_field() -> None:
    desk = CouponDesk(PLACES, verify)
    cases = {
        "coupon: the router's merchant is in no alliance": issued_event("lonely"),
        "coupon_id: is not the id": issued_event(coupon_id="ab" * 16),
        "device_id: is not the device": issued_event(device_id="cd" * 16),
        "coupon: ": issued_event(coupon="0" * 341),
    }
    for reason, event in cases.items():
        refused = desk.take(event, event_row(event))
        assert refused is not None and refused.startswith(reason), (reason, refused)
    assert desk.writes.issued == []


def test_a_redemption_without_a_coupon_id_or_token_is_refused() -> None:
    desk = CouponDesk(PLACES, verify)
    event = wire.Event(router_id="r1", boot_id="b", seq=2, kind=wire.EventKind.COUPON_REDEEMED)
    assert (desk.take(event, event_row(event)) or "").startswith("coupon_id:")
    assert desk.writes.redeemed == []


def test_only_batches_with_coupon_events_or_issuer_keys_need_the_coupon_desk() -> None:
    plain = wire.EventBatch(
        router_id="r1",
        events=(wire.Event(router_id="r1", boot_id="b", kind=wire.EventKind.DEVICE_SEEN),),
    )
    topic = str(wire.Topic("r1", wire.Channel.EVENTS))
    assert not wants_coupons([read_message(topic, plain.encode())])
    keyed = wire.Status(router_id="r1", issuer_key="ab" * 32)
    status_topic = str(wire.Topic("r1", wire.Channel.STATUS))
    assert wants_coupons([read_message(status_topic, keyed.encode())])


def test_a_status_key_that_is_no_public_key_is_ignored() -> None:
    desk = CouponDesk(PLACES, verify)
    desk.status(wire.Status(router_id="r1", issuer_key="not hex"))
    desk.status(wire.Status(router_id="r1", issuer_key="AB" * 32))
    assert desk.writes.issuer_keys == {}


redemption = st.tuples(
    st.integers(0, 10**6), st.sampled_from(["c1", "c2", "c3"]), st.floats(0, 100), st.text()
)


@given(st.lists(redemption, unique_by=lambda r: r[0]))
def test_each_coupon_keeps_exactly_its_earliest_redemption_whatever_the_order(
    redemptions: list[tuple[int, str, float, str]],
) -> None:
    flags = double_spends(redemptions)
    assert flags == double_spends(list(reversed(redemptions)))
    for coupon_id in {r[1] for r in redemptions}:
        mine = [r for r in redemptions if r[1] == coupon_id]
        keeper = min(mine, key=lambda r: (r[2], r[3], r[0]))
        assert [r[0] for r in mine if not flags[r[0]]] == [keeper[0]]
