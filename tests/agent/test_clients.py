"""MAC addresses are validated and randomized ones are recognised."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.clients import BadMac, Client, is_randomized, normalize_mac


def test_mac_is_normalized_to_lower_case_colons() -> None:
    assert normalize_mac("02-AB-CD-EF-00-11") == "02:ab:cd:ef:00:11"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "02:ab",
        "zz:zz:zz:zz:zz:zz",
        "01:00:5e:00:00:01",
        "00:00:00:00:00:00",
        "02:ab:cd:ef:00:11:22",
    ],
)
def test_bad_or_non_unicast_mac_is_refused_with_its_text(text: str) -> None:
    with pytest.raises(BadMac, match="MAC"):
        normalize_mac(text)


def test_locally_administered_mac_is_flagged_as_randomized() -> None:
    assert is_randomized("da:a1:19:00:00:01")
    assert not is_randomized("a4:83:e7:00:00:01")


@given(st.text(max_size=40))
def test_any_text_is_either_refused_with_badmac_or_a_canonical_unicast_mac(text: str) -> None:
    try:
        mac = normalize_mac(text)
    except BadMac as exc:
        assert "MAC" in str(exc)
        return
    assert re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", mac)
    assert normalize_mac(mac) == mac


def test_client_of_parses_both_parts() -> None:
    client = Client.of("02:00:00:00:00:0A", "10.0.0.2")
    assert (client.mac, str(client.ip)) == ("02:00:00:00:00:0a", "10.0.0.2")
