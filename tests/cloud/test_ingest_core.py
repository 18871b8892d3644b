"""The pure core of ingest: reading messages, batching, and planning rows (no broker, no DB)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from agent import wire
from cloud.ingest_core import (
    DEAD_LETTER_PAYLOAD_MAX,
    EVENTS,
    RECEIPT_MAX_RANGES,
    RECEIPT_REASON_MAX,
    ROUTERS,
    Accepted,
    Batcher,
    Origin,
    Refused,
    misfit,
    plan_batch,
    read_message,
    receipts,
    runs,
    weight,
)
from cloud.status import Will

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DEVICE = "0123456789abcdef0123456789abcdef"


def events_topic(router_id: str = "r1") -> str:
    return str(wire.Topic(router_id, wire.Channel.EVENTS))


def status_topic(router_id: str = "r1") -> str:
    return str(wire.Topic(router_id, wire.Channel.STATUS))


def ack_topic(router_id: str = "r1") -> str:
    return str(wire.Topic(router_id, wire.Channel.ACK))


def batch(
    router_id: str = "r1",
    seqs: range = range(3),
    boot: str = "boot-a",
    kind: wire.EventKind = wire.EventKind.DEVICE_SEEN,
    **fields: object,
) -> bytes:
    events = tuple(
        wire.Event(
            router_id=router_id,
            boot_id=boot,
            seq=seq,
            at=1_800_000_000.0 + seq,
            kind=kind,
            device_id=DEVICE,
            **fields,  # type: ignore[arg-type]
        )
        for seq in seqs
    )
    return wire.EventBatch(router_id=router_id, events=events).encode()


def status(
    router_id: str = "r1",
    at: float = 100.0,
    state: wire.RouterState = wire.RouterState.ONLINE,
    **fields: object,
) -> bytes:
    return wire.Status(router_id=router_id, state=state, at=at, **fields).encode()  # type: ignore[arg-type]


# --- reading ------------------------------------------------------------------------------


def test_an_event_batch_is_accepted_with_its_router() -> None:
    item = read_message(events_topic(), batch())
    assert isinstance(item, Accepted)
    assert item.router_id == "r1"
    assert isinstance(item.message, wire.EventBatch)
    assert weight(item) == 3


def test_malformed_json_is_refused_naming_the_payload() -> None:
    item = read_message(events_topic(), b"{not json")
    assert isinstance(item, Refused)
    assert item.reason.startswith("payload: is not JSON")
    assert weight(item) == 1


def test_a_body_claiming_another_router_is_refused() -> None:
    item = read_message(events_topic("r1"), batch("r2"))
    assert isinstance(item, Refused)
    assert "'r2' was published on 'r1'" in item.reason


def test_a_device_id_that_is_a_raw_mac_is_refused() -> None:
    body = batch().replace(DEVICE.encode(), b"02:11:22:33:44:55")
    item = read_message(events_topic(), body)
    assert isinstance(item, Refused)
    assert "device_id" in item.reason and "never a MAC" in item.reason


def test_an_oversized_payload_is_refused() -> None:
    item = read_message(events_topic(), b" " * (wire.MAX_PAYLOAD + 1))
    assert isinstance(item, Refused)
    assert item.reason.startswith("payload: is")


def test_a_topic_outside_the_contract_is_refused() -> None:
    assert isinstance(read_message("loopspot/v1/r1/up/shell", b"{}"), Refused)
    assert isinstance(read_message("loopspot/v1/R1!/up/events", batch()), Refused)


def test_a_downstream_message_is_not_ingested() -> None:
    body = wire.RouterConfig(version=3).encode()
    item = read_message(str(wire.Topic("r1", wire.Channel.CONFIG)), body)
    assert isinstance(item, Refused)
    assert "not an upstream channel" in item.reason


@given(st.binary(max_size=2048), st.text(max_size=80))
def test_reading_never_raises_whatever_arrives(payload: bytes, topic: str) -> None:
    item = read_message(topic, payload)
    assert isinstance(item, Accepted | Refused)


# --- batching -----------------------------------------------------------------------------


def test_a_batch_is_due_when_it_holds_enough_events() -> None:
    batcher: Batcher[str] = Batcher(max_weight=10, max_wait=1.0, max_items=100)
    batcher.add("a", 6, now=0.0)
    assert not batcher.due(0.0)
    batcher.add("b", 4, now=0.1)
    assert batcher.due(0.1)
    assert batcher.take() == ["a", "b"]
    assert len(batcher) == 0 and not batcher.due(5.0)


def test_a_partial_batch_is_due_after_the_flush_interval_from_its_first_message() -> None:
    batcher: Batcher[str] = Batcher(max_weight=10, max_wait=0.2, max_items=100)
    assert batcher.deadline() is None
    batcher.add("a", 1, now=10.0)
    batcher.add("b", 1, now=10.15)
    assert batcher.deadline() == 10.2
    assert not batcher.due(10.19)
    assert batcher.due(10.2)


def test_a_batch_holds_at_most_its_weight_and_the_rest_waits_for_the_next() -> None:
    batcher: Batcher[str] = Batcher(max_weight=10, max_wait=1.0, max_items=100)
    for name, when in (("a", 0.0), ("b", 0.1), ("c", 0.5), ("d", 0.6)):
        batcher.add(name, 4, now=when)
    assert batcher.take() == ["a", "b"]  # a third would make 12
    assert batcher.deadline() == 1.5  # the oldest left, c, arrived at 0.5
    assert not batcher.due(1.4)  # 8 of 10 held
    assert batcher.due(1.5)
    assert batcher.take() == ["c", "d"]


def test_one_message_heavier_than_a_batch_is_still_written() -> None:
    batcher: Batcher[str] = Batcher(max_weight=10, max_wait=1.0, max_items=100)
    batcher.add("huge", 50, now=0.0)
    batcher.add("small", 1, now=0.0)
    assert batcher.take() == ["huge"]
    assert batcher.take() == ["small"]


def test_a_batch_is_due_when_it_holds_half_the_brokers_window() -> None:
    batcher: Batcher[int] = Batcher(max_weight=1000, max_wait=9.0, max_items=3)
    for i in range(3):
        batcher.add(i, 1, now=0.0)
    assert batcher.due(0.0)


# --- planning -----------------------------------------------------------------------------


def test_events_become_rows_sorted_by_origin_and_bump_last_seen() -> None:
    items = [read_message(events_topic(), batch(seqs=range(5, 2, -1)))]
    plan = plan_batch(items, {"r1"}, NOW)
    assert [row["seq"] for row in plan.events] == [3, 4, 5]
    assert plan.events[0]["device_id"] == DEVICE and plan.events[0]["kind"] == "device_seen"
    assert plan.heard == {"r1"}
    assert not plan.dead_letters
    assert not {"mac", "mac_address"} & set(plan.events[0])


def test_messages_from_an_unknown_router_are_dead_lettered() -> None:
    items = [read_message(events_topic("ghost"), batch("ghost"))]
    plan = plan_batch(items, {"r1"}, NOW)
    assert plan.events == []
    assert plan.dead_letters[0]["reason"] == "router_id: 'ghost' is not enrolled"
    assert plan.dead_letters[0]["topic"] == events_topic("ghost")


def test_a_dead_letter_keeps_at_most_64_kib_of_payload() -> None:
    plan = plan_batch([Refused("t", b"x" * 200_000, "payload: bad")], set(), NOW)
    assert len(plan.dead_letters[0]["payload"]) == DEAD_LETTER_PAYLOAD_MAX


def test_an_event_too_long_for_its_column_is_dead_lettered_not_truncated() -> None:
    items = [read_message(events_topic(), batch(reason="x" * 100))]
    plan = plan_batch(items, {"r1"}, NOW)
    assert plan.events == []
    assert plan.dead_letters[0]["reason"].startswith("events[0].reason: is longer than the 64")


def test_a_misfit_event_is_refused_alone_and_its_batch_mates_are_stored() -> None:
    events = [
        wire.Event(
            router_id="r1",
            boot_id="boot-a",
            seq=seq,
            at=1_800_000_000.0,
            kind=wire.EventKind.SESSION_ENDED,
            device_id=DEVICE,
            reason="x" * 100 if seq == 5 else "idle",
        )
        for seq in (4, 5, 6)
    ]
    payload = wire.EventBatch(router_id="r1", events=tuple(events)).encode()
    plan = plan_batch([read_message(events_topic(), payload)], {"r1"}, NOW)
    (dead,) = plan.dead_letters
    assert dead["payload"] == events[1].encode()  # the one event, not its whole batch
    assert dead["reason"].startswith("events[1].reason: is longer than the 64")
    assert plan.refused == [(("r1", "boot-a", 5), dead["reason"])]
    assert plan.origins() == (("r1", "boot-a", 4), ("r1", "boot-a", 6))
    assert plan.heard == {"r1"}


def test_no_events_are_named_as_refused_for_an_unknown_router_or_an_unreadable_payload() -> None:
    items = [
        read_message(events_topic("ghost"), batch("ghost", reason="x" * 100)),
        read_message(events_topic(), b"{not json"),
        read_message(events_topic("r1"), batch("r2")),  # another router's events
        read_message(status_topic(), status(agent_version="v" * 40)),  # not events
    ]
    plan = plan_batch(items, {"r1", "r2"}, NOW)
    assert len(plan.dead_letters) == 4
    assert plan.refused == []


def test_an_ack_whose_error_holds_a_nul_character_is_dead_lettered() -> None:
    body = wire.Ack(router_id="r1", ref="config", id="4", error="bad\x00").encode()
    plan = plan_batch([read_message(ack_topic(), body)], {"r1"}, NOW)
    assert plan.config_acks == []
    assert plan.dead_letters[0]["reason"].startswith("ack_error: contains a NUL")


def test_misfit_names_text_too_long_and_numbers_too_big() -> None:
    assert misfit(EVENTS, {"kind": "k" * 33}) is not None
    assert misfit(EVENTS, {"seq": 2**62, "kind": "device_seen"}) is None
    assert misfit(ROUTERS, {"clients": 2**31}) == (
        "clients: is larger than 2147483647, the most routers keeps"
    )


def test_the_newest_status_in_a_batch_wins() -> None:
    items = [
        read_message(status_topic(), status(at=200.0, clients=7)),
        read_message(status_topic(), status(at=100.0, clients=3)),
    ]
    plan = plan_batch(items, {"r1"}, NOW)
    assert plan.statuses["r1"]["status_at"] == 200.0
    assert plan.statuses["r1"]["clients"] == 7
    assert plan.statuses["r1"]["last_seen"] == NOW


def test_an_offline_status_is_not_the_router_being_seen() -> None:
    items = [read_message(status_topic(), status(state=wire.RouterState.OFFLINE))]
    plan = plan_batch(items, {"r1"}, NOW)
    assert plan.statuses["r1"]["state"] == "offline"
    assert plan.statuses["r1"]["last_seen"] is None
    assert plan.statuses["r1"]["boot_id"] is None  # an empty field keeps what is stored


def test_a_last_will_without_a_time_is_planned_apart_from_timed_statuses() -> None:
    items = [
        read_message(status_topic(), status(at=100.0)),
        read_message(status_topic(), status(at=0.0, state=wire.RouterState.OFFLINE, boot_id="b")),
    ]
    plan = plan_batch(items, {"r1"}, NOW)
    assert plan.wills == {"r1": Will("b", None)}  # an agent that does not say its connection
    assert plan.statuses["r1"]["status_at"] == 100.0


def test_a_last_will_names_the_connection_it_was_set_on() -> None:
    will = status(at=0.0, state=wire.RouterState.OFFLINE, boot_id="b", connected_at=50.0)
    plan = plan_batch([read_message(status_topic(), will)], {"r1"}, NOW)
    assert plan.wills == {"r1": Will("b", 50.0)}


def test_a_status_after_its_routers_will_in_one_batch_cancels_the_will() -> None:
    items = [
        read_message(status_topic(), status(at=0.0, state=wire.RouterState.OFFLINE)),
        read_message(status_topic(), status(at=100.0)),
    ]
    plan = plan_batch(items, {"r1"}, NOW)
    assert plan.wills == {}
    assert plan.statuses["r1"]["state"] == "online"


def test_acks_for_configs_and_commands_are_planned() -> None:
    items = [
        read_message(ack_topic(), wire.Ack(router_id="r1", ref="config", id="4", ok=True).encode()),
        read_message(
            ack_topic(),
            wire.Ack(router_id="r1", ref="cmd", id="c-1", error="no such device").encode(),
        ),
        read_message(ack_topic(), wire.Ack(router_id="r1", ref="config", id="four").encode()),
        read_message(ack_topic(), wire.Ack(router_id="r1", ref="shell", id="1").encode()),
    ]
    plan = plan_batch(items, {"r1"}, NOW)
    assert plan.config_acks == [{"rid": "r1", "version": 4, "error": None}]
    assert plan.command_acks == [
        {"rid": "r1", "cid": "c-1", "ok": False, "error": "no such device"}
    ]
    assert [d["reason"].split(":")[0] for d in plan.dead_letters] == ["id", "ref"]


# --- receipts -----------------------------------------------------------------------------


def covered(made: list[wire.Receipt]) -> set[Origin]:
    return {
        (receipt.router_id, r.boot_id, seq)
        for receipt in made
        for r in receipt.ranges
        for seq in range(r.first, r.last + 1)
    }


def test_each_router_gets_one_receipt_with_its_seqs_as_ranges_per_boot() -> None:
    stored = [("r1", "b", s) for s in (3, 1, 2, 5)] + [("r1", "a", 9), ("r2", "b", 1)]
    assert receipts(stored) == [
        wire.Receipt(
            "r1", (wire.SeqRange("a", 9, 9), wire.SeqRange("b", 1, 3), wire.SeqRange("b", 5, 5))
        ),
        wire.Receipt("r2", (wire.SeqRange("b", 1, 1),)),
    ]


def test_a_batch_lost_in_the_middle_stays_a_gap_in_the_receipt() -> None:
    stored = [("r1", "b", s) for s in [*range(1, 101), *range(201, 301)]]
    (receipt,) = receipts(stored)
    assert [(r.first, r.last) for r in receipt.ranges] == [(1, 100), (201, 300)]


def test_nothing_stored_means_no_receipt() -> None:
    assert receipts([]) == []


def test_a_router_with_very_many_ranges_gets_several_receipts_it_can_decode() -> None:
    stored = [("r1", "b", 2 * n) for n in range(RECEIPT_MAX_RANGES + 5)]
    made = receipts(stored)
    assert [len(r.ranges) for r in made] == [RECEIPT_MAX_RANGES, 5]
    for receipt in made:
        assert wire.decode(receipt.encode(), wire.Receipt) == receipt
    assert covered(made) == set(stored)


@given(
    st.lists(
        st.tuples(st.sampled_from(["r1", "r2"]), st.sampled_from(["a", "b"]), st.integers(0, 60)),
        max_size=200,
    )
)
def test_receipts_cover_exactly_the_stored_events(stored: list[Origin]) -> None:
    made = receipts(stored)
    assert covered(made) == set(stored)
    assert len({r.router_id for r in made}) == len(made)  # one per router
    for receipt in made:
        assert all(r.first <= r.last for r in receipt.ranges)


def refused_in(made: list[wire.Receipt]) -> set[tuple[str, str, int, str]]:
    return {
        (receipt.router_id, r.boot_id, seq, receipt.reason)
        for receipt in made
        for r in receipt.refused
        for seq in range(r.first, r.last + 1)
    }


def test_dead_lettered_events_get_receipts_naming_them_as_refused_with_the_reason() -> None:
    stored = [("r1", "b", 1), ("r1", "b", 2)]
    refused = [(("r1", "b", s), "events[0].reason: too long") for s in (3, 4, 5)] + [
        (("r2", "b", 9), "events[0].reason: too long"),
        (("r1", "b", 8), "events[1].kind: too long"),
    ]
    assert receipts(stored, refused) == [
        wire.Receipt("r1", (wire.SeqRange("b", 1, 2),)),
        wire.Receipt(
            "r1", refused=(wire.SeqRange("b", 3, 5),), reason="events[0].reason: too long"
        ),
        wire.Receipt(
            "r2", refused=(wire.SeqRange("b", 9, 9),), reason="events[0].reason: too long"
        ),
        wire.Receipt("r1", refused=(wire.SeqRange("b", 8, 8),), reason="events[1].kind: too long"),
    ]


def test_refusals_with_very_many_ranges_or_a_long_reason_still_decode_at_the_router() -> None:
    reason = "events[0].reason: " + "x" * 1000
    refused = [(("r1", "b", 2 * n), reason) for n in range(RECEIPT_MAX_RANGES + 5)]
    made = receipts([], refused)
    assert [len(r.refused) for r in made] == [RECEIPT_MAX_RANGES, 5]
    assert all(not r.ranges and r.reason == reason[:RECEIPT_REASON_MAX] for r in made)
    for receipt in made:
        assert wire.decode(receipt.encode(), wire.Receipt) == receipt
    assert refused_in(made) == {(*origin, reason[:RECEIPT_REASON_MAX]) for origin, _ in refused}


def test_runs_join_neighbours_and_count_repeats_once() -> None:
    assert runs([5, 1, 2, 2, 3, 9, 8]) == [(1, 3), (5, 5), (8, 9)]


def test_a_plan_stores_and_receipts_only_the_events_not_dead_lettered() -> None:
    items = [
        read_message(events_topic(), batch(seqs=range(1, 4))),
        read_message(events_topic(), batch(seqs=range(4, 6), reason="x" * 100)),
        read_message(events_topic("ghost"), batch("ghost", seqs=range(1, 3))),
        read_message(events_topic(), batch(seqs=range(6, 8))),
    ]
    plan = plan_batch(items, {"r1"}, NOW)
    assert plan.origins() == tuple(("r1", "boot-a", s) for s in (1, 2, 3, 6, 7))
    assert len(plan.dead_letters) == 3  # each misfit event alone, and the unknown router
    assert [origin for origin, _ in plan.refused] == [("r1", "boot-a", 4), ("r1", "boot-a", 5)]
