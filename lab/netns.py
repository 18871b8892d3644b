"""Run commands and open sockets inside the lab's network namespaces, never on the host's."""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from lab.errors import CommandError, NamespaceError

NETNS_DIR = Path("/run/netns")
# iproute2 bind-mounts /etc/netns/NAME/* over /etc/* for `ip netns exec NAME`.
NETNS_ETC_DIR = Path("/etc/netns")
DEFAULT_TIMEOUT = 30.0
# How many `ip -n NS -b -` processes run at once when configuring many namespaces.
PARALLEL_IP = 32

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_HOST_BATCH_VERBS = ("netns add ", "netns del ", "netns delete ")

Stream = int | IO[bytes] | None


def ns_path(ns: str) -> Path:
    """The bind mount that keeps namespace `ns` alive."""
    if not ns or "/" in ns or ns in {".", ".."}:
        raise NamespaceError(f"{ns!r} is not a network namespace name")
    return NETNS_DIR / ns


def exists(ns: str) -> bool:
    """True when namespace `ns` is mounted under /run/netns."""
    return ns_path(ns).exists()


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NamespaceError(f"setns into {what} failed: {os.strerror(err)}")


@contextmanager
def entered(ns: str) -> Iterator[None]:
    """Run the body with the current thread inside namespace `ns`, then switch back."""
    try:
        target = os.open(ns_path(ns), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NamespaceError(f"network namespace {ns!r} does not exist") from None
    try:
        original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target, f"namespace {ns!r}")
            try:
                yield
            finally:
                _setns(original, "the thread's original namespace")
        finally:
            os.close(original)
    finally:
        os.close(target)


def socket_in(
    ns: str,
    family: socket.AddressFamily = socket.AF_INET,
    type: socket.SocketKind = socket.SOCK_STREAM,
    proto: int = 0,
) -> socket.socket:
    """A socket that lives in namespace `ns`; the calling thread's namespace is unchanged."""
    with entered(ns):
        return socket.socket(family, type, proto)


def sysctl_set(ns: str, key: str, value: str | int) -> None:
    """Set sysctl `key` (dotted, e.g. net.ipv4.ip_forward) inside `ns` without a process."""
    path = Path("/proc/sys", *key.split("."))
    with entered(ns):
        path.write_text(f"{value}\n")


def sysctl_get(ns: str, key: str) -> str:
    """Read sysctl `key` (dotted) inside `ns`."""
    path = Path("/proc/sys", *key.split("."))
    with entered(ns):
        return path.read_text().strip()


def exec_argv(ns: str, *argv: str) -> list[str]:
    """The argv that runs `argv` inside `ns` via `ip netns exec`."""
    ns_path(ns)
    if not argv:
        raise ValueError("no command given")
    return ["ip", "netns", "exec", ns, *argv]


def run(
    ns: str,
    *argv: str,
    check: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` inside `ns`, capturing text output; raise CommandError on failure if `check`."""
    cmd = exec_argv(ns, *argv)
    done = subprocess.run(
        cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if check and done.returncode != 0:
        raise CommandError(cmd, done.returncode, done.stderr)
    return done


def popen(
    ns: str,
    *argv: str,
    stdin: Stream = subprocess.DEVNULL,
    stdout: Stream = None,
    stderr: Stream = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` inside `ns` and return at once; the caller owns (and must end) it."""
    return subprocess.Popen(
        exec_argv(ns, *argv), stdin=stdin, stdout=stdout, stderr=stderr, env=env, cwd=cwd
    )


def ip(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one `ip -n NS ...` command (use ip_batch for many)."""
    cmd = ["ip", "-n", ns, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=DEFAULT_TIMEOUT)
    if check and done.returncode != 0:
        raise CommandError(cmd, done.returncode, done.stderr)
    return done


def _batch_argv(ns: str | None, lines: Sequence[str]) -> list[str]:
    if ns is None:
        # Safety: on the host, a batch may only add or delete namespaces.
        for line in lines:
            if not line.startswith(_HOST_BATCH_VERBS):
                raise ValueError(f"refusing to run {line!r} in the host namespace")
        return ["ip", "-b", "-"]
    ns_path(ns)
    return ["ip", "-n", ns, "-b", "-"]


def _start_batch(ns: str | None, lines: Sequence[str]) -> tuple[list[str], subprocess.Popen[str]]:
    shown = _batch_argv(ns, lines)
    # Forked by a thread that is inside `ns`, `ip -b -` starts there. `ip -n NS` would
    # instead copy the mount namespace, whose cost grows with every namespace mounted.
    with entered(ns) if ns is not None else contextlib.nullcontext():
        proc = subprocess.Popen(
            ["ip", "-b", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    assert proc.stdin is not None
    proc.stdin.write("\n".join(lines) + "\n")
    proc.stdin.close()
    return shown, proc


def _finish_batch(shown: list[str], proc: subprocess.Popen[str]) -> CommandError | None:
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.stderr.close()
    proc.wait(DEFAULT_TIMEOUT)
    return CommandError(shown, proc.returncode, err) if proc.returncode != 0 else None


def ip_batch(lines: Sequence[str], ns: str | None = None) -> None:
    """Run many `ip` commands through one `ip -b -` process, inside `ns`.

    With `ns` None the batch runs on the host and may only contain `netns add/del`.
    """
    if lines and (failure := _finish_batch(*_start_batch(ns, lines))):
        raise failure


def ip_batches(batches: Mapping[str, Sequence[str]], parallel: int = PARALLEL_IP) -> None:
    """Run one `ip -b -` per namespace, `parallel` at a time; raise the first failure."""
    pending = [(ns, lines) for ns, lines in batches.items() if lines]
    failures: list[CommandError] = []
    while pending:
        window, pending = pending[:parallel], pending[parallel:]
        started = [_start_batch(ns, lines) for ns, lines in window]
        failures += filter(None, (_finish_batch(shown, proc) for shown, proc in started))
    if failures:
        raise failures[0]


def list_namespaces() -> list[str]:
    """Names of every namespace mounted under /run/netns."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def pids_in(namespaces: Iterable[str]) -> dict[str, list[int]]:
    """Processes whose network namespace is one of `namespaces`, found by scanning /proc."""
    wanted: dict[tuple[int, int], str] = {}
    for ns in namespaces:
        try:
            st = ns_path(ns).stat()
        except FileNotFoundError:
            continue
        wanted[(st.st_dev, st.st_ino)] = ns
    found: dict[str, list[int]] = {ns: [] for ns in wanted.values()}
    if not wanted:
        return found
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry.name}/ns/net")
        except OSError:
            continue  # the process ended, or is a kernel thread we may not inspect
        owner = wanted.get((st.st_dev, st.st_ino))
        if owner is not None:
            found[owner].append(int(entry.name))
    return found
