"""Which key backend this router has (cryptography or the openssl tool), found, not loaded.

Light on purpose: the daemon reports the backend at start and in its status, and must not
import `cryptography` (megabytes) nor the backends themselves (agent.keys) to do so.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

from agent.errors import LoopspotError

ENVIRONMENT = "LOOPSPOT_KEY_BACKEND"
CHOICES = ("auto", "cryptography", "openssl")
INSTALL_OPENSSL = (
    "opkg install openssl-util (apk add openssl-util on OpenWrt 25.12; "
    "apt-get install openssl on Debian)"
)
NONE_FIX = f"neither cryptography nor the openssl tool is available: {INSTALL_OPENSSL}"


class KeyBackendError(LoopspotError):
    """No backend can run here, or one failed; the message names the problem and the fix."""


def cryptography_installed() -> bool:
    """True when `cryptography` can be found, found without importing it."""
    try:
        return importlib.util.find_spec("cryptography") is not None
    except (ImportError, ValueError):
        return False


def openssl_tool() -> str | None:
    """The path of the `openssl` tool on PATH, or None."""
    return shutil.which("openssl")


def preference(asked: str | None = None) -> str:
    """`asked`, else $LOOPSPOT_KEY_BACKEND, else "auto"; KeyBackendError if not a choice."""
    chosen = (asked or os.environ.get(ENVIRONMENT, "") or "auto").strip().lower()
    if chosen not in CHOICES:
        raise KeyBackendError(f"{ENVIRONMENT}={chosen!r}: use one of {', '.join(CHOICES)}")
    return chosen


def detect_backend(asked: str | None = None) -> str:
    """The backend's name agent.keys.choose_backend would use; KeyBackendError says why none.

    cryptography first when it is installed, then the openssl tool.
    """
    chosen = preference(asked)
    if chosen in ("auto", "cryptography") and cryptography_installed():
        return "cryptography"
    if chosen in ("auto", "openssl") and openssl_tool() is not None:
        return "openssl"
    if chosen == "cryptography":
        raise KeyBackendError(
            f"{ENVIRONMENT}=cryptography but cryptography is not installed: "
            f"opkg install python3-cryptography, or set {ENVIRONMENT}=openssl"
        )
    if chosen == "openssl":
        raise KeyBackendError(
            f"{ENVIRONMENT}=openssl but there is no openssl tool on PATH: {INSTALL_OPENSSL}"
        )
    raise KeyBackendError(NONE_FIX)


def backend_report(asked: str | None = None) -> tuple[str, str]:
    """(name, or "none"; one line for the log) on the backend enrolment and renewal use here."""
    try:
        name = detect_backend(asked)
    except KeyBackendError as error:
        return "none", f"no key backend, so enrolment and certificate renewal fail: {error}"
    if name == "openssl":
        return name, f"router keys through the openssl tool ({openssl_tool()})"
    return name, "router keys through cryptography"
