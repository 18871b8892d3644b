"""The daemon's process set-up: one malloc arena, and aiohttp imported without the public roots."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from agent.process import one_malloc_arena, without_public_roots

COUNT_AIOHTTP_ROOTS = """
import os, sys
from agent.process import without_public_roots
before = os.environ.get("SSL_CERT_FILE")
if sys.argv[1] == "inside":
    with without_public_roots():
        import aiohttp.connector
else:
    import aiohttp.connector
assert os.environ.get("SSL_CERT_FILE") == before, "the environment was not restored"
print(aiohttp.connector._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509_ca"])
"""


def roots_aiohttp_loads(where: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", COUNT_AIOHTTP_ROOTS, where],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(done.stdout)


def test_aiohttp_imported_inside_loads_no_root_certificate() -> None:
    assert roots_aiohttp_loads("inside") == 0


def test_outside_the_block_the_system_roots_are_loaded_as_usual() -> None:
    if not Path(ssl.get_default_verify_paths().openssl_cafile).exists():
        pytest.skip("this system has no default CA file to load")
    assert roots_aiohttp_loads("outside") > 0


def test_an_ssl_cert_file_set_before_is_put_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", "/etc/loopspot/cloud-ca.pem")
    with without_public_roots():
        assert os.environ["SSL_CERT_FILE"] == os.devnull
    assert os.environ["SSL_CERT_FILE"] == "/etc/loopspot/cloud-ca.pem"


@pytest.mark.skipif(not hasattr(os, "confstr"), reason="no confstr")
def test_glibc_takes_the_one_arena_setting() -> None:
    libc = os.confstr("CS_GNU_LIBC_VERSION") if "CS_GNU_LIBC_VERSION" in os.confstr_names else None
    assert one_malloc_arena() is bool(libc)
