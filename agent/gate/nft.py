"""Two ways to run nft scripts: libnftables in process, or an `nft -f -` process.

Grants may skip both and go over netlink (agent.gate.netlink_grants); reading the sets
back always does (agent.gate.nfnetlink).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import shutil
import subprocess
from typing import Protocol

from agent.errors import GateError


class Nft(Protocol):
    """Runs nft scripts atomically."""

    name: str

    def run(self, script: str) -> None:
        """Apply `script` as one transaction; raise GateError with nft's message if refused."""


class LibNftables:
    """The nftables project's own library through ctypes: no process per change."""

    name = "libnftables"

    def __init__(self, library: str | None = None) -> None:
        path = library or ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            raise GateError(f"cannot load {path}: {exc}; install the nftables package") from exc
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        self._lib = lib
        self._ctx = lib.nft_ctx_new(0)
        lib.nft_ctx_buffer_output(self._ctx)
        lib.nft_ctx_buffer_error(self._ctx)

    def run(self, script: str) -> None:
        """Apply `script` as one transaction."""
        rc = self._lib.nft_run_cmd_from_buffer(self._ctx, script.encode())
        self._lib.nft_ctx_get_output_buffer(self._ctx)  # rewinds it: it never grows
        err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode()
        if rc != 0:
            raise GateError(f"nftables refused the change: {err.strip() or 'no reason given'}")

    def close(self) -> None:
        """Free the library context."""
        if self._ctx:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None


class NftProcess:
    """The `nft` command: a process per change (about 4 ms each), the fallback."""

    name = "nft"

    def __init__(self, binary: str | None = None) -> None:
        found = binary or shutil.which("nft") or "/usr/sbin/nft"
        self._binary = found

    def run(self, script: str) -> None:
        """Apply `script` as one transaction."""
        try:
            done = subprocess.run(
                [self._binary, "-f", "-"], input=script, capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise GateError(f"cannot run {self._binary}: {exc}") from exc
        if done.returncode != 0:
            raise GateError(f"nftables refused the change: {done.stderr.strip()}")


def open_nft(backend: str) -> Nft:
    """The backend that runs nft scripts: whole-table installs, walled garden, and, for
    `libnftables` and `nft`, the grants too.

    With `auto` and `netlink` the grants go over netlink (agent.gate.netlink_grants) and
    the few scripts through an `nft` process, so libnftables and its 2 MiB never load;
    libnftables serves only where there is no `nft` binary.
    """
    if backend == "nft":
        return NftProcess()
    if backend == "libnftables" or not shutil.which("nft"):
        return LibNftables()
    return NftProcess()
