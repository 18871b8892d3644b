"""Every OS's connectivity check is recognised, and each gets its exact success answer."""

from __future__ import annotations

import pytest

from agent.probes import ProbeOS, classify


@pytest.mark.parametrize(
    ("host", "path", "os", "status", "body"),
    [
        (
            "captive.apple.com",
            "/hotspot-detect.html",
            ProbeOS.APPLE,
            200,
            b"<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>",
        ),
        ("connectivitycheck.gstatic.com", "/generate_204", ProbeOS.ANDROID, 204, b""),
        (
            "www.msftconnecttest.com",
            "/connecttest.txt",
            ProbeOS.WINDOWS,
            200,
            b"Microsoft Connect Test",
        ),
        ("detectportal.firefox.com", "/success.txt", ProbeOS.FIREFOX, 200, b"success\n"),
    ],
)
def test_probe_is_recognised_with_its_success_answer(
    host: str, path: str, os: ProbeOS, status: int, body: bytes
) -> None:
    probe = classify(host, path)
    assert probe is not None and probe.os is os
    assert (probe.success.status, probe.success.body) == (status, body)


def test_host_is_matched_without_port_case_or_trailing_dot() -> None:
    assert classify("Captive.Apple.COM.:80", "/hotspot-detect.html") is not None


def test_apple_random_paths_are_probes_too() -> None:
    probe = classify("captive.apple.com", "/abc123/def.html")
    assert probe is not None and probe.os is ProbeOS.APPLE


def test_query_strings_do_not_hide_a_probe() -> None:
    assert classify("connectivitycheck.gstatic.com", "/generate_204?x=1") is not None


@pytest.mark.parametrize(
    ("host", "path"),
    [("example.com", "/"), (None, "/generate_204"), ("connectivitycheck.gstatic.com", "/other")],
)
def test_ordinary_traffic_is_not_a_probe(host: str | None, path: str) -> None:
    assert classify(host, path) is None
