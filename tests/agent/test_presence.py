"""Who is in the shop: sightings become arrivals and departures; netlink junk is survived."""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.gate.netlink import (
    NDA_CACHEINFO,
    NDA_DST,
    NDA_LLADDR,
    NLMSG_DONE,
    RTM_NEWNEIGH,
    parse_neighbour_dump,
)
from agent.presence import (
    Arrived,
    Left,
    Presence,
    Visit,
    latest,
    load_visits,
    visits_from_json,
    visits_json,
)

A, B = "02:00:00:00:00:0a", "a4:5e:60:00:00:0b"
NUD_REACHABLE, NUD_STALE, NUD_FAILED = 0x02, 0x04, 0x20


def test_a_device_arrives_when_first_seen_and_leaves_after_left_after_unseen() -> None:
    presence = Presence(left_after=300)
    assert presence.observe({A: 1000.0}, now=1000.0) == [Arrived(A, 1000.0)]
    assert presence.observe({A: 1200.0}, now=1210.0) == []
    assert presence.observe({}, now=1499.0) == []
    assert presence.observe({}, now=1500.0) == [Left(A, 1200.0, dwell=200.0)]
    assert presence.observe({}, now=2000.0) == []


def test_a_device_seen_again_within_left_after_is_one_visit() -> None:
    presence = Presence(left_after=300)
    presence.observe({A: 0.0}, now=0.0)
    for now in range(100, 2000, 100):
        assert presence.observe({A: float(now)}, now=float(now)) == []
    assert presence.visits[A] == Visit(0.0, 1900.0)


def test_an_old_sign_of_life_does_not_start_a_visit() -> None:
    presence = Presence(left_after=300)
    assert presence.observe({A: 100.0}, now=1000.0) == []  # a stale neighbour entry
    assert presence.observe({A: 900.0}, now=1000.0) == [Arrived(A, 900.0)]


def test_a_sign_from_the_future_counts_as_now() -> None:
    presence = Presence(left_after=300)
    assert presence.observe({A: 5000.0}, now=1000.0) == [Arrived(A, 1000.0)]


def test_a_restart_can_resume_visits() -> None:
    presence = Presence(left_after=300, visits={A: Visit(0.0, 100.0)})
    assert presence.observe({A: 200.0, B: 200.0}, now=200.0) == [Arrived(B, 200.0)]


def test_visits_kept_by_one_run_are_resumed_by_the_next(tmp_path: Path) -> None:
    before = Presence(left_after=300)
    before.observe({A: 100.0, B: 150.0}, now=150.0)
    kept = tmp_path / "presence.json"
    kept.write_text(visits_json(before.visits))
    after = Presence(left_after=300, visits=load_visits(kept))
    # A never left: no second arrival; B went quiet while the agent was down: it left
    assert after.observe({A: 500.0}, now=500.0) == [Left(B, 150.0, 0.0)]


def test_a_missing_or_damaged_visits_file_starts_afresh(tmp_path: Path) -> None:
    assert load_visits(tmp_path / "none.json") == {}
    (tmp_path / "bad.json").write_bytes(b"\xff{not json")
    assert load_visits(tmp_path / "bad.json") == {}
    mixed = json.dumps({A: [1, 2], B: ["x", 2], "c": [1], "d": [True, 2]})
    assert visits_from_json(mixed) == {A: Visit(1.0, 2.0)}
    assert visits_from_json("[1, 2]") == {}


def test_the_latest_sign_wins_across_sources() -> None:
    assert latest({A: 5.0}, {A: 9.0, B: 1.0}, {B: 0.5}) == {A: 9.0, B: 1.0}


# --- netlink --------------------------------------------------------------------------------


def attr(kind: int, data: bytes) -> bytes:
    body = struct.pack("=HH", 4 + len(data), kind) + data
    return body + b"\0" * (-len(body) % 4)


def neighbour_message(
    mac: str, ip: str, state: int = NUD_REACHABLE, ifindex: int = 3, confirmed: int = 250
) -> bytes:
    ndmsg = struct.pack("=BBHiHBB", socket.AF_INET, 0, 0, ifindex, state, 0, 1)
    attrs = attr(NDA_DST, socket.inet_aton(ip)) + attr(
        NDA_LLADDR, bytes.fromhex(mac.replace(":", ""))
    )
    attrs += attr(NDA_CACHEINFO, struct.pack("=IIII", confirmed, 0, 900, 1))
    body = ndmsg + attrs
    return struct.pack("=IHHII", 16 + len(body), RTM_NEWNEIGH, 2, 1, 0) + body


DONE = struct.pack("=IHHII", 20, NLMSG_DONE, 2, 1, 0) + b"\0\0\0\0"


def test_a_neighbour_dump_gives_mac_ip_interface_and_age() -> None:
    data = neighbour_message(A, "192.168.1.10") + neighbour_message(B, "192.168.1.11", ifindex=4)
    found, done = parse_neighbour_dump(data + DONE)
    assert done
    assert [(n.mac, str(n.ip), n.ifindex) for n in found] == [
        (A, "192.168.1.10", 3), (B, "192.168.1.11", 4),
    ]  # fmt: skip
    assert found[0].seconds_ago == 2.5  # 250 clock ticks of 1/100 s


def test_failed_entries_and_multicast_addresses_are_no_sign_of_life() -> None:
    data = neighbour_message(A, "192.168.1.10", state=NUD_FAILED)
    data += neighbour_message("01:00:5e:00:00:01", "224.0.0.1")
    assert parse_neighbour_dump(data) == ([], False)


def test_a_truncated_dump_keeps_the_whole_messages() -> None:
    data = neighbour_message(A, "192.168.1.10") + neighbour_message(B, "192.168.1.11")
    found, done = parse_neighbour_dump(data[:-7])
    assert [n.mac for n in found] == [A] and not done


@settings(max_examples=500)
@given(st.binary(max_size=512))
def test_any_bytes_from_the_kernel_never_crash_the_parser(data: bytes) -> None:
    found, _ = parse_neighbour_dump(data)
    assert all(len(n.mac) == 17 for n in found)


@given(st.binary(max_size=64), st.integers(0, 600))
def test_garbage_after_a_good_message_does_not_hide_it(junk: bytes, cut: int) -> None:
    found, _ = parse_neighbour_dump(neighbour_message(A, "10.0.0.1") + junk[:cut])
    assert found[0].mac == A
