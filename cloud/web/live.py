"""The live fleet: one poller per process watches the routers table and pushes changed rows
to every open /fleet/events stream (server-sent events) the caller may see.

Several serve processes share only the database, so each polls it (every POLL_INTERVAL);
a change reaches the browser within about POLL_INTERVAL plus one query.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import Engine

from cloud.db import sessions
from cloud.web import auth
from cloud.web.app import ENGINE, POOL, in_thread
from cloud.web.fleet_view import FleetFilter, FleetRow, fingerprints, fleet_rows
from cloud.web.pages import FLEET_ROLES
from cloud.web.tenancy import OPERATOR_SCOPE, Scope

log = logging.getLogger(__name__)
POLL_INTERVAL = 0.5
KEEPALIVE = 15.0
QUEUE_SIZE = 1000


def changed(before: dict[str, tuple[Any, ...]], after: dict[str, tuple[Any, ...]]) -> list[str]:
    """The routers whose columns differ between two polls (new ones included)."""
    return sorted(rid for rid, values in after.items() if before.get(rid) != values)


@dataclass
class FleetWatch:
    """The process's poller and its subscribers; polls only while someone listens."""

    engine: Engine
    pool: Any
    listeners: dict[asyncio.Queue[FleetRow], Scope] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    def subscribe(self, scope: Scope) -> asyncio.Queue[FleetRow]:
        """A queue of the changed rows `scope` may see; starts the poller if needed."""
        queue: asyncio.Queue[FleetRow] = asyncio.Queue(QUEUE_SIZE)
        self.listeners[queue] = scope
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._poll(), name="fleet-watch")
        return queue

    def unsubscribe(self, queue: asyncio.Queue[FleetRow]) -> None:
        """Stop sending to `queue`."""
        self.listeners.pop(queue, None)

    def _read(self, ids: list[str] | None) -> Any:
        with sessions(self.engine)() as session:
            if ids is None:
                return fingerprints(session)
            return fleet_rows(session, OPERATOR_SCOPE, FleetFilter(), ids)

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        before: dict[str, tuple[Any, ...]] = await loop.run_in_executor(self.pool, self._read, None)
        while self.listeners:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                after = await loop.run_in_executor(self.pool, self._read, None)
                ids = changed(before, after)
                rows: list[FleetRow] = (
                    await loop.run_in_executor(self.pool, self._read, ids) if ids else []
                )
            except Exception:  # a database hiccup must not end the stream; try again
                log.exception("fleet poll failed")
                continue
            before = after
            for row in rows:
                for queue, scope in list(self.listeners.items()):
                    if scope.whole_fleet or row.merchant_id in (scope.merchant_ids or ()):
                        with contextlib.suppress(asyncio.QueueFull):
                            queue.put_nowait(row)

    async def close(self) -> None:
        """Stop the poller."""
        self.listeners.clear()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


WATCH = web.AppKey("fleet_watch", FleetWatch)


async def _still_logged_in(request: web.Request) -> bool:
    """Whether the stream's session is still live (logging out ends the stream too)."""
    token = request[auth.SESSION_TOKEN]
    found = await in_thread(request, lambda engine: auth.resolve_session(engine, token))
    return found is not None


@auth.allow(*FLEET_ROLES)
async def fleet_events(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    watch = request.app[WATCH]
    keepalive = KEEPALIVE  # read per stream, so a test can shorten it
    queue = watch.subscribe(request[auth.SCOPE])
    try:
        await response.write(b": connected\n\n")
        while True:
            try:
                row = await asyncio.wait_for(queue.get(), keepalive)
            except TimeoutError:
                if not await _still_logged_in(request):
                    break
                await response.write(b": keepalive\n\n")
                continue
            data = json.dumps(row.as_dict(), separators=(",", ":"))
            await response.write(f"event: router\ndata: {data}\n\n".encode())
    except ConnectionResetError:
        pass  # the browser went away
    finally:
        watch.unsubscribe(queue)
    return response


@auth.public
async def fleet_script(_request: web.Request) -> web.StreamResponse:
    return web.FileResponse(
        Path(__file__).parent / "static" / "fleet.js",
        headers={"Content-Type": "application/javascript"},
    )


def add_routes(app: web.Application) -> None:
    """The live stream and its script; the poller stops with the app."""
    app[WATCH] = FleetWatch(app[ENGINE], app[POOL])

    async def stop(app: web.Application) -> None:
        await app[WATCH].close()

    app.on_shutdown.append(stop)
    app.router.add_get("/fleet/events", fleet_events)
    app.router.add_get("/static/fleet.js", fleet_script)
