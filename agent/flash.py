"""Flash writes done safely: a sqlite database copied whole, then renamed into place."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

# The databases live on tmpfs, which is RAM already: sqlite's default 2 MiB page cache
# would hold them a second time, in the agent's own memory. 128 KiB keeps hot pages only.
SMALL_CACHE = "PRAGMA cache_size=-128"


def snapshot_to_flash(db: sqlite3.Connection, target: Path) -> None:
    """Copy `db` to `target` atomically: a power cut leaves the old copy or the new one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(".tmp")
    temporary.unlink(missing_ok=True)
    copy = sqlite3.connect(temporary)
    copy.execute(SMALL_CACHE)
    try:
        with copy:
            db.backup(copy)
    finally:
        copy.close()
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, target)


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `path` whole or not at all: a synced temporary file with `mode`, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(temporary, mode)  # os.open's mode is cut by the umask
    os.replace(temporary, path)


def replace_file(path: Path, text: str | None) -> bool:
    """Make `path` hold `text` (None: no file), atomically; True when that changed it.

    A file with that text already is left alone: flash is not written for nothing.
    """
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except FileNotFoundError:
        if text is None:
            return False
    if text is None:
        path.unlink()
    else:
        write_atomically(path, text.encode())
    return True


def restore_from_flash(snapshot: Path, target: Path) -> None:
    """Copy a flash snapshot back to tmpfs, as after a reboot emptied it."""
    source = sqlite3.connect(snapshot)
    try:
        copy = sqlite3.connect(target)
        with copy:
            source.backup(copy)
        copy.close()
    finally:
        source.close()


def open_on_tmpfs(path: Path, snapshot: Path, schema: str) -> sqlite3.Connection:
    """The database at `path` (tmpfs), restored from its flash `snapshot` after a reboot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() and snapshot.exists():
        restore_from_flash(snapshot, path)  # the router rebooted: tmpfs is empty
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(SMALL_CACHE)
    db.executescript(schema)
    return db
