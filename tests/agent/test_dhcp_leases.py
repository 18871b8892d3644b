"""dnsmasq's lease file: IPv4 leases only, no host names kept, hostile lines skipped."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.dhcp_leases import Lease, LeaseWatch, parse_lease, parse_leases, read_leases

FILE = """\
1764000000 a4:5e:60:11:22:33 192.168.1.23 Annas-iPhone 01:a4:5e:60:11:22:33
0 02:00:00:00:00:0a 192.168.1.24 * *
duid 00:01:00:01:2c:11:22:33:44:55:66:77:88:99
1764000000 1234567 fd00::23 phone 00:04:aa:bb
1764000000 ff:ff:ff:ff:ff:ff 192.168.1.25 broadcast *
garbage
"""


def test_only_ipv4_leases_of_devices_are_read_and_names_are_not_kept() -> None:
    leases = parse_leases(FILE)
    assert leases == [
        Lease("a4:5e:60:11:22:33", IPv4Address("192.168.1.23"), 1764000000),
        Lease("02:00:00:00:00:0a", IPv4Address("192.168.1.24"), 0),
    ]
    assert "Annas" not in repr(leases)


def test_a_missing_lease_file_means_no_leases(tmp_path: Path) -> None:
    assert read_leases(tmp_path / "dhcp.leases") == []


def test_a_renewed_or_new_lease_is_a_sign_of_life_but_the_first_look_is_a_baseline() -> None:
    watch = LeaseWatch()
    first = parse_leases(FILE)
    assert watch.renewed(first) == set()
    renewed = [Lease("a4:5e:60:11:22:33", IPv4Address("192.168.1.23"), 1764003600)]
    assert watch.renewed(first[1:] + renewed) == {"a4:5e:60:11:22:33"}
    newcomer = Lease("02:00:00:00:00:0c", IPv4Address("192.168.1.26"), 1764000000)
    assert watch.renewed([*first[1:], *renewed, newcomer]) == {"02:00:00:00:00:0c"}


@settings(max_examples=1000)
@given(st.text(max_size=200))
def test_any_line_is_a_lease_or_skipped(line: str) -> None:
    lease = parse_lease(line)
    if lease is not None:
        assert lease.expires >= 0 and len(lease.mac) == 17


WORDS = st.sampled_from(
    ["1764000000", "0", "-1", "99999999999999999999999", "a4:5e:60:11:22:33", "A4-5E-60-11-22-33",
     "01:00:5e:00:00:01", "192.168.1.1", "256.1.1.1", "fd00::1", "*", "name", "\x00", "é", "١٢٣"]
)  # fmt: skip


@settings(max_examples=1000)
@given(st.lists(st.lists(WORDS, max_size=7).map(" ".join), max_size=20).map("\n".join))
def test_lease_shaped_noise_gives_only_valid_leases(text: str) -> None:
    for lease in parse_leases(text):
        assert lease.ip.version == 4 and not int(lease.mac[:2], 16) & 1
