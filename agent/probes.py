"""Captive-portal detection: which OS probe a request is, and the answer that OS expects."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ProbeOS(enum.Enum):
    """The operating system family whose connectivity check a request is."""

    APPLE = "apple"
    ANDROID = "android"
    WINDOWS = "windows"
    FIREFOX = "firefox"


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    """The exact response an OS takes as 'the internet works'."""

    status: int
    body: bytes
    content_type: str = "text/plain"


APPLE_SUCCESS = ProbeAnswer(
    200, b"<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>", "text/html"
)
ANDROID_SUCCESS = ProbeAnswer(204, b"")
WINDOWS_SUCCESS = ProbeAnswer(200, b"Microsoft Connect Test")
WINDOWS_NCSI_SUCCESS = ProbeAnswer(200, b"Microsoft NCSI")
FIREFOX_CANONICAL = ProbeAnswer(
    200,
    b'<meta http-equiv="refresh" content="0;url=https://support.mozilla.org/kb/captive-portal"/>',
    "text/html",
)
FIREFOX_SUCCESS = ProbeAnswer(200, b"success\n")


@dataclass(frozen=True, slots=True)
class Probe:
    """A known connectivity-check URL."""

    os: ProbeOS
    host: str
    path: str
    success: ProbeAnswer

    @property
    def url(self) -> str:
        """The probe as the OS fetches it."""
        return f"http://{self.host}{self.path}"


PROBES: tuple[Probe, ...] = (
    Probe(ProbeOS.APPLE, "captive.apple.com", "/hotspot-detect.html", APPLE_SUCCESS),
    Probe(ProbeOS.APPLE, "www.apple.com", "/library/test/success.html", APPLE_SUCCESS),
    Probe(ProbeOS.ANDROID, "connectivitycheck.gstatic.com", "/generate_204", ANDROID_SUCCESS),
    Probe(ProbeOS.ANDROID, "connectivitycheck.android.com", "/generate_204", ANDROID_SUCCESS),
    Probe(ProbeOS.ANDROID, "clients3.google.com", "/generate_204", ANDROID_SUCCESS),
    Probe(ProbeOS.ANDROID, "www.google.com", "/gen_204", ANDROID_SUCCESS),
    Probe(ProbeOS.WINDOWS, "www.msftconnecttest.com", "/connecttest.txt", WINDOWS_SUCCESS),
    Probe(ProbeOS.WINDOWS, "www.msftncsi.com", "/ncsi.txt", WINDOWS_NCSI_SUCCESS),
    Probe(ProbeOS.FIREFOX, "detectportal.firefox.com", "/canonical.html", FIREFOX_CANONICAL),
    Probe(ProbeOS.FIREFOX, "detectportal.firefox.com", "/success.txt", FIREFOX_SUCCESS),
)

_BY_URL: dict[tuple[str, str], Probe] = {(p.host, p.path): p for p in PROBES}
# Apple also probes captive.apple.com with random paths; any path there is a probe.
_ANY_PATH_HOSTS: dict[str, Probe] = {"captive.apple.com": PROBES[0]}


def classify(host: str | None, path: str) -> Probe | None:
    """The probe a request for `host` + `path` is, or None when it is ordinary traffic."""
    if not host:
        return None
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip().lower().rstrip(".")
    path = path.split("?", 1)[0] or "/"
    return _BY_URL.get((name, path)) or _ANY_PATH_HOSTS.get(name)
