"""How the daemon's process is set up on a small router: once, before its heavy imports."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


def one_malloc_arena() -> bool:
    """Make every thread allocate from one malloc arena; True when that was done.

    glibc gives each thread that calls malloc its own arena, and memory freed in one
    is not reused by another: the agent's few threads cost it megabytes. musl, the C
    library of OpenWrt, has no arenas; elsewhere this does nothing.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 -- present in glibc only
    except (OSError, AttributeError):
        return False
    return bool(libc.mallopt(M_ARENA_MAX, 1))


@contextmanager
def without_public_roots() -> Iterator[None]:
    """Imports made inside see an empty default CA file.

    aiohttp builds two TLS client contexts as it is imported, each parsing every public
    root certificate of the system (1.8 MiB together on Debian). The agent never uses
    aiohttp's client, and its own TLS contexts are made later, with the default restored.
    """
    saved = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = os.devnull
    try:
        yield
    finally:
        if saved is None:
            del os.environ["SSL_CERT_FILE"]
        else:
            os.environ["SSL_CERT_FILE"] = saved
