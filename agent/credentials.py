"""The router's credentials on disk: the file names, in one place, and a renewal's last step.

Light on purpose (no crypto library): the daemon's link reads these names, and enrolment
and renewal (agent.enrol, agent.renewal) write the files.
"""

from __future__ import annotations

import os
from pathlib import Path

KEY_FILE, CERT_FILE, CA_FILE, IDENTITY_FILE = "router.key", "router.crt", "ca.crt", "identity.json"
NEXT = ".next"  # a renewed key or certificate, written whole before it replaces the old one


def finish_renewal(credentials_dir: Path) -> None:
    """Complete a renewal a crash interrupted, or drop one that never finished writing.

    The key goes in before the certificate, and router.crt.next is written last: if it is
    there, the new pair is whole, and whatever part is still pending is moved in.
    """
    key_next = credentials_dir / (KEY_FILE + NEXT)
    cert_next = credentials_dir / (CERT_FILE + NEXT)
    if not cert_next.exists():
        key_next.unlink(missing_ok=True)
        return
    if key_next.exists():
        os.replace(key_next, credentials_dir / KEY_FILE)
    os.replace(cert_next, credentials_dir / CERT_FILE)
