"""The spool for the event loop: `put` never blocks; sqlite runs on one worker thread."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from agent.link.errors import StateError
from agent.link.spool import Batch
from agent.link.spool_db import SpoolDB, SpoolStats
from agent.wire import Event, Receipt

log = logging.getLogger("loopspot.link")
T = TypeVar("T")

MAX_PENDING = 10_000  # events not yet handed to sqlite (it stalls only if tmpfs does)
FLUSH_CHECK_INTERVAL = 5.0  # seconds between looks at the flush policy


class Spooler:
    """Events in, batches out; every call to sqlite goes through one worker thread, in order."""

    def __init__(self, open_db: Callable[[], SpoolDB]) -> None:
        self._open_db = open_db
        self._db: SpoolDB | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="spool")
        self._pending: list[Event] = []
        self._lost_pending = 0
        self._has_pending = asyncio.Event()
        self.waiting = asyncio.Event()  # set whenever events were stored or a batch was acked
        self.stats = SpoolStats(0, 0, 0)
        self.resend_in: float | None = None  # seconds, as of the last take()
        self.boot_id = ""

    async def _on(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    @property
    def db(self) -> SpoolDB:
        """The open database; StateError before open()."""
        if self._db is None:
            raise StateError("the spool is not open")
        return self._db

    async def open(self) -> None:
        """Open (or restore from flash) the spool and start a new boot."""
        self._db = await self._on(self._open_db)
        self.boot_id = self._db.boot_id
        self.stats = await self._on(self._db.stats)
        self.waiting.set()

    def put(self, event: Event) -> None:
        """Queue one event for storing; returns at once (the writer task stores it)."""
        if len(self._pending) >= MAX_PENDING:
            self._lost_pending += 1
            return
        self._pending.append(event)
        self._has_pending.set()

    async def _store_pending(self) -> None:
        events, self._pending = self._pending, []
        lost, self._lost_pending = self._lost_pending, 0
        self._has_pending.clear()
        if lost:
            log.error("spool: %d events lost before storing (sqlite stalled)", lost)
        if events or lost:
            await self._on(self.db.append, events, lost)
            self.stats = await self._on(self.db.stats)
            self.waiting.set()

    async def run_writer(self) -> None:
        """Store queued events as they come, many per transaction; runs until cancelled."""
        while True:
            await self._has_pending.wait()
            await self._store_pending()

    async def run_flusher(self, interval: float = FLUSH_CHECK_INTERVAL) -> None:
        """Snapshot to flash when the flush policy says so; runs until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self._on(self.db.maybe_snapshot)
            except OSError as error:  # flash full or read-only: tmpfs still holds everything
                log.error("spool: snapshot to flash failed: %s", error)

    async def take(self) -> tuple[Batch, bytes] | None:
        """The next batch to publish and its payload, or None (then see `resend_in`)."""
        taken = await self._on(self.db.take)
        self.stats = await self._on(self.db.stats)
        self.resend_in = await self._on(self.db.resend_in)
        return taken

    async def acked(self, number: int) -> None:
        """Batch `number` reached the broker: its events wait for the cloud's receipt."""
        await self._on(self.db.acked, number)
        self.stats = await self._on(self.db.stats)
        self.waiting.set()

    async def receipted(self, receipt: Receipt) -> int:
        """The cloud stored or refused what `receipt` names: forget those events; how many were."""
        gone = await self._on(self.db.receipted, receipt)
        self.stats = await self._on(self.db.stats)
        return gone

    async def requeue(self) -> None:
        """The connection dropped: batches in flight wait again."""
        await self._on(self.db.requeue)
        self.stats = await self._on(self.db.stats)

    async def close(self) -> None:
        """Store what is queued, snapshot to flash and stop the worker."""
        if self._db is not None:
            await self._store_pending()
            await self._on(self._db.close)
            self._db = None
        self._pool.shutdown(wait=True)
