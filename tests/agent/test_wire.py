"""The wire contract: receipts name exactly the events the cloud stored, and survive the wire."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.wire import (
    CHANNEL_TYPES,
    MAX_BATCH,
    MAX_TEXT,
    MESSAGE_TYPES,
    Channel,
    CouponPlan,
    Event,
    EventBatch,
    EventKind,
    Receipt,
    SeqRange,
    Topic,
    WireError,
    decode,
    decode_from,
    encoded_batch,
)

ROUTER = "shop-1"
boot_ids = st.text("0123456789abcdef", min_size=1, max_size=64)
seqs = st.integers(0, 2**63 - 1)


@st.composite
def seq_ranges(draw: st.DrawFn) -> SeqRange:
    first, last = sorted((draw(seqs), draw(seqs)))
    return SeqRange(boot_id=draw(boot_ids), first=first, last=last)


receipts = st.builds(
    Receipt,
    router_id=st.from_regex(r"[a-z0-9][a-z0-9-]{0,62}", fullmatch=True),
    ranges=st.lists(seq_ranges(), max_size=20).map(tuple),
    refused=st.lists(seq_ranges(), max_size=20).map(tuple),
    reason=st.text(max_size=MAX_TEXT),
)


@given(receipts)
def test_a_receipt_decodes_to_what_was_encoded(receipt: Receipt) -> None:
    assert decode(receipt.encode(), Receipt) == receipt


def test_a_receipt_comes_on_the_routers_down_receipt_topic() -> None:
    receipt = Receipt(ROUTER, (SeqRange("b1", 1, 40), SeqRange("b1", 42, 42)))
    topic, decoded = decode_from(f"loopspot/v1/{ROUTER}/down/receipt", receipt.encode())
    assert topic == Topic(ROUTER, Channel.RECEIPT) and decoded == receipt
    assert CHANNEL_TYPES[Channel.RECEIPT] is Receipt and MESSAGE_TYPES["receipt"] is Receipt


def test_a_receipt_lists_ranges_not_a_high_water_mark() -> None:
    body = Receipt(ROUTER, (SeqRange("b1", 1, 3), SeqRange("b0", 7, 9))).to_json()
    assert body["ranges"] == [
        {"boot_id": "b1", "first": 1, "last": 3},
        {"boot_id": "b0", "first": 7, "last": 9},
    ]


def test_a_refusal_names_the_dead_lettered_events_and_why_and_survives_the_wire() -> None:
    receipt = Receipt(
        ROUTER, refused=(SeqRange("b1", 4, 6),), reason="events[1].reason: is longer than 64"
    )
    body = receipt.to_json()
    assert "ranges" not in body  # nothing stored
    assert body["refused"] == [{"boot_id": "b1", "first": 4, "last": 6}]
    assert decode(receipt.encode(), Receipt) == receipt


def test_a_receipt_of_an_older_cloud_without_refusals_still_decodes() -> None:
    payload = (
        b'{"v":1,"type":"receipt","router_id":"shop-1",'
        b'"ranges":[{"boot_id":"b1","first":1,"last":2}]}'
    )
    decoded = decode(payload, Receipt)
    assert decoded == Receipt(ROUTER, (SeqRange("b1", 1, 2),))
    assert (decoded.refused, decoded.reason) == ((), "")


def test_unknown_fields_of_a_newer_cloud_are_ignored() -> None:
    payload = (
        b'{"v":2,"type":"receipt","router_id":"shop-1","stored_at":5,'
        b'"ranges":[{"boot_id":"b1","first":1,"last":2,"worker":"ingest-0"}]}'
    )
    assert decode(payload, Receipt) == Receipt(ROUTER, (SeqRange("b1", 1, 2),))


@pytest.mark.parametrize(
    ("ranges", "field"),
    [
        ('[{"boot_id":"b1","first":5,"last":4}]', "ranges[0].last"),
        ('[{"first":1,"last":2}]', "ranges[0].boot_id"),
        ('[{"boot_id":"' + "b" * 65 + '","first":1,"last":2}]', "ranges[0].boot_id"),
        ('[{"boot_id":"b1","first":-1,"last":2}]', "ranges[0].first"),
        ('[{"boot_id":"b1","first":1,"last":"2"}]', "ranges[0].last"),
        ('{"boot_id":"b1"}', "ranges"),
        ("[" + ",".join(['{"boot_id":"b","first":1,"last":1}'] * (MAX_BATCH + 1)) + "]", "ranges"),
    ],
)
def test_a_malformed_receipt_is_refused_naming_the_field(ranges: str, field: str) -> None:
    payload = f'{{"v":1,"type":"receipt","router_id":"shop-1","ranges":{ranges}}}'.encode()
    with pytest.raises(WireError) as refused:
        decode(payload, Receipt)
    assert refused.value.field == field


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ('"refused":[{"boot_id":"b1","first":5,"last":4}]', "refused[0].last"),
        ('"refused":[{"first":1,"last":2}]', "refused[0].boot_id"),
        ('"refused":{"boot_id":"b1"}', "refused"),
        ('"reason":"' + "x" * (MAX_TEXT + 1) + '"', "reason"),
        ('"reason":7', "reason"),
    ],
)
def test_a_malformed_refusal_is_refused_naming_the_field(extra: str, field: str) -> None:
    payload = f'{{"v":1,"type":"receipt","router_id":"shop-1",{extra}}}'.encode()
    with pytest.raises(WireError) as refused:
        decode(payload, Receipt)
    assert refused.value.field == field


def test_a_receipt_for_another_router_on_this_routers_topic_is_refused() -> None:
    with pytest.raises(WireError, match="router_id"):
        decode_from(f"loopspot/v1/{ROUTER}/down/receipt", Receipt("shop-2").encode())


def test_events_joined_as_encoded_decode_as_the_batch_of_those_events() -> None:
    events = tuple(
        Event(router_id="shop-1", boot_id="b1", seq=n, at=1.5, kind=EventKind.PORTAL_VIEWED)
        for n in (1, 2)
    )
    joined = encoded_batch("shop-1", [e.encode() for e in events])
    assert decode(joined, EventBatch) == EventBatch(router_id="shop-1", events=events)
    assert decode(encoded_batch("shop-1", []), EventBatch) == EventBatch(router_id="shop-1")


def test_a_sites_utc_offset_may_be_west_of_greenwich_but_not_beyond_14_hours() -> None:
    plan = CouponPlan(utc_offset=-5 * 3600)
    assert decode(plan.encode(), CouponPlan) == plan
    with pytest.raises(WireError, match="utc_offset"):
        decode(CouponPlan(utc_offset=15 * 3600).encode(), CouponPlan)
