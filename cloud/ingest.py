"""Cloud ingest: workers on the shared subscription store what routers report, once in effect.

A worker holds each QoS 1 message unacknowledged until the transaction that stores it has
committed; the broker redelivers whatever a worker did not acknowledge, and the unique key
(router_id, boot_id, seq) turns a redelivery into a no-op. After the commit it sends each
router a Receipt naming the events stored: only then does the router forget them, so an
event the broker acknowledged but lost on the way is sent again. Events it dead-lettered
(they do not fit the events table) are named as refused, with the reason, so the router
forgets them too instead of sending them again forever.

A router's wallet request (up/request) is not batched: a worker thread answers it from
the database at once on the router's down/reply, then acknowledges it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import aiomqtt
from sqlalchemy import Engine, make_url

from agent.wire import INGEST_SHARE, Channel, Topic, WalletRequest
from cloud.broker_config import MAX_INFLIGHT
from cloud.db import make_engine
from cloud.errors import CloudError
from cloud.ingest_core import Accepted, Batcher, Inbound, read_message, receipts, weight
from cloud.ingest_store import IngestStore, Written, is_outage
from cloud.settings import CloudSettings
from cloud.wallets import wallet_reply

log = logging.getLogger(__name__)

RECONNECT_FIRST = 0.5  # seconds before the first reconnect attempt
RECONNECT_MAX = 30.0  # reconnect backoff stops doubling here
RETRY_FIRST = 0.2  # seconds before writing again after a database outage
RETRY_MAX = 10.0
BROKER_IN_FLIGHT = MAX_INFLIGHT  # the broker's max_inflight_messages, as cloud.broker_config sets
KEEPALIVE = 30
RECEIPT_QOS = 1  # queued for a router that is away; a lost one only costs a harmless resend
RECEIPTS_PENDING_WARN = 1000  # receipts (and other publishes) awaiting PUBACK before a warning


class IngestError(CloudError):
    """The ingest worker could not start or stopped on an error it cannot recover from."""


@dataclass(slots=True)
class IngestStats:
    """Counters since the worker started."""

    messages: int = 0
    events: int = 0  # events written, redelivered duplicates included
    dead_letters: int = 0
    refused: int = 0  # events in dead letters, which their routers are told to forget
    batches: int = 0
    receipts: int = 0


@dataclass(frozen=True, slots=True)
class _Held:
    item: Inbound
    mid: int
    qos: int


def default_worker_name() -> str:
    """`ingest-<host name>`: stable across restarts, so the broker keeps this worker's session."""
    return f"ingest-{socket.gethostname()}"[:64]


def _enable_manual_acks(client: aiomqtt.Client) -> None:
    # aiomqtt 2.5 does not expose paho's manual acks yet (aiomqtt issue #345, PR #346);
    # this is the workaround given there, kept to these two functions.
    client._client.manual_ack_set(True)


def _ack(client: aiomqtt.Client, held: _Held) -> None:
    client._client.ack(held.mid, held.qos)


class IngestWorker:
    """One ingest worker: start() it, stop() it; its broker session outlives it by name.

    `in_flight` is the broker's max_inflight_messages: a batch is written once it holds
    half of that, so the broker keeps delivering while the worker writes.
    """

    def __init__(
        self,
        settings: CloudSettings,
        worker_name: str | None = None,
        *,
        engine: Engine | None = None,
        in_flight: int = BROKER_IN_FLIGHT,
    ) -> None:
        self.settings = settings
        self.worker_name = worker_name or default_worker_name()
        self.stats = IngestStats()
        self._own_engine = engine is None
        self._engine = engine or make_engine(settings.database_url)
        self._store = IngestStore(self._engine)
        self._in_flight = max(1, in_flight)
        self._db = ThreadPoolExecutor(1, thread_name_prefix=f"{self.worker_name}-db")
        self._stopping = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._released = False
        self._reader: asyncio.Task[None] | None = None
        self._receipts: set[asyncio.Task[None]] = set()  # published, PUBACK not yet in
        # Wallet requests are answered at once, beside the batch writer, not behind it.
        self._wallets = ThreadPoolExecutor(2, thread_name_prefix=f"{self.worker_name}-wallet")
        self._replies: set[asyncio.Task[None]] = set()

    @property
    def subscribed(self) -> bool:
        """True while connected and subscribed to the shared subscription."""
        return self._subscribed.is_set()

    async def start(self, ready_timeout: float | None = 10.0) -> None:
        """Run the worker; wait up to `ready_timeout` s for it to subscribe (None: don't wait)."""
        if self._task is not None:
            raise IngestError(f"ingest worker {self.worker_name!r} is already started")
        self._task = asyncio.create_task(self._run(), name=f"ingest:{self.worker_name}")
        if ready_timeout is None:
            return
        ready = asyncio.create_task(self._subscribed.wait(), name=f"{self._task.get_name()}:ready")
        try:
            await asyncio.wait(
                {ready, self._task}, timeout=ready_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ready.cancel()
        if self._task.done():
            await self._task  # raises what stopped it
        if not self._subscribed.is_set():
            raise IngestError(
                f"ingest worker {self.worker_name!r} did not subscribe within {ready_timeout} s"
            )

    async def stop(self) -> None:
        """Write and acknowledge what is held, disconnect, and release the database."""
        self._stopping.set()
        self._wake.set()
        if self._reader is not None:
            self._reader.cancel()
        try:
            if self._task is not None:
                await self._task
        finally:
            if not self._released:
                self._released = True
                await asyncio.get_running_loop().run_in_executor(self._db, self._release)
                self._db.shutdown(wait=False)
                self._wallets.shutdown(wait=False)

    async def wait(self) -> None:
        """Return when the worker has stopped; raise what stopped it, if anything did."""
        if self._task is not None:
            await self._task

    def _release(self) -> None:
        if self._own_engine:
            self._engine.dispose()

    def _client(self) -> aiomqtt.Client:
        anonymous = not self.settings.broker_password
        client = aiomqtt.Client(
            self.settings.broker_host,
            self.settings.broker_port,
            username=None if anonymous else self.settings.broker_username,
            password=None if anonymous else self.settings.broker_password,
            identifier=self.worker_name,
            clean_session=False,  # the broker queues our share while we are away
            keepalive=KEEPALIVE,
        )
        client.pending_calls_threshold = RECEIPTS_PENDING_WARN
        _enable_manual_acks(client)  # before connecting: queued messages arrive at once
        return client

    async def _run(self) -> None:
        """Connect, serve and reconnect with backoff until stopped."""
        delay = RECONNECT_FIRST
        while not self._stopping.is_set():
            try:
                async with self._client() as client:
                    delay = RECONNECT_FIRST
                    await self._serve(client)
            except aiomqtt.MqttError as error:
                log.warning("%s: broker connection lost (%s)", self.worker_name, error)
            finally:
                self._subscribed.clear()
            if self._stopping.is_set():
                break
            log.info("%s: reconnecting in %.1f s", self.worker_name, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Read and write until the connection drops (raises MqttError) or the worker stops."""
        batcher: Batcher[_Held] = Batcher(
            max_weight=self.settings.ingest_batch,
            max_wait=self.settings.ingest_flush_interval,
            max_items=max(1, self._in_flight // 2),
        )
        name = f"ingest:{self.worker_name}"
        reader = asyncio.create_task(self._read(client, batcher), name=f"{name}:read")
        flusher = asyncio.create_task(self._flush_loop(client, batcher), name=f"{name}:flush")
        self._reader = reader
        if self._stopping.is_set():
            reader.cancel()
        try:
            await client.subscribe(INGEST_SHARE, qos=1)
            self._subscribed.set()
            log.info("%s: subscribed to %s", self.worker_name, INGEST_SHARE)
            await self._resend_spent(client)
            await asyncio.wait({reader, flusher}, return_when=asyncio.FIRST_COMPLETED)
            if reader.done() and not reader.cancelled():
                reader.result()  # the connection dropped: MqttError
            await flusher  # stopping: it writes what is held, then returns
        finally:
            self._reader = None
            receipts_left = list(self._receipts)  # lost with the connection: routers resend
            receipts_left += self._replies  # a router whose reply is late uses its cache
            for task in (reader, flusher, *receipts_left):
                task.cancel()
            await asyncio.gather(reader, flusher, *receipts_left, return_exceptions=True)

    async def _read(self, client: aiomqtt.Client, batcher: Batcher[_Held]) -> None:
        loop = asyncio.get_running_loop()
        async for message in client.messages:
            payload = message.payload
            if isinstance(payload, str):
                payload = payload.encode()
            elif not isinstance(payload, bytes | bytearray):
                payload = b""
            item = read_message(message.topic.value, bytes(payload))
            self.stats.messages += 1
            if isinstance(item, Accepted) and isinstance(item.message, WalletRequest):
                self._answer(client, _Held(item, message.mid, message.qos))
                continue
            now = loop.time()
            batcher.add(_Held(item, message.mid, message.qos), weight(item), now)
            if len(batcher) == 1 or batcher.due(now):
                self._wake.set()  # the flusher learns the new deadline, or writes now

    async def _flush_loop(self, client: aiomqtt.Client, batcher: Batcher[_Held]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            stopping = self._stopping.is_set()
            if batcher.due(loop.time()) or (stopping and len(batcher)):
                held = batcher.take()
                written = await self._write(held)
                if written is not None:
                    self._send_receipts(client, written)
                    self._send_outbox(client, written)
                    for one in held:
                        _ack(client, one)
                continue
            if stopping:
                await asyncio.gather(*self._receipts, return_exceptions=True)
                return
            deadline = batcher.deadline()
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _send_receipts(self, client: aiomqtt.Client, written: Written) -> None:
        """Tell each router which of its events are committed or refused, without waiting
        for PUBACKs.

        Only the commit must come first: a receipt lost on the way (or a batch acknowledged
        before its receipts are out) costs nothing but the router sending those events again.
        """
        for receipt in receipts(written.stored, written.refused):
            topic = str(Topic(receipt.router_id, Channel.RECEIPT))
            task = asyncio.create_task(
                client.publish(topic, receipt.encode(), qos=RECEIPT_QOS),
                name=f"ingest:{self.worker_name}:receipt:{receipt.router_id}",
            )
            self._receipts.add(task)
            task.add_done_callback(self._receipt_sent)

    def _send_outbox(self, client: aiomqtt.Client, written: Written) -> None:
        """Publish what the commit made due: spent-coupon commands and coupon plans (QoS 1)."""
        for topic, payload, retain in written.outbox:
            task = asyncio.create_task(
                client.publish(topic, payload, qos=1, retain=retain),
                name=f"ingest:{self.worker_name}:outbox:{topic}",
            )
            self._receipts.add(task)
            task.add_done_callback(self._outbox_sent)

    def _outbox_sent(self, task: asyncio.Task[None]) -> None:
        self._receipts.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A plan stays stored (the next change or `coupons push` sends it); a spent
            # coupon is on the router's list at its next coupons_spent or wallet sync.
            log.warning(
                "%s: %s not published (%s)", self.worker_name, task.get_name(), task.exception()
            )

    async def _resend_spent(self, client: aiomqtt.Client) -> None:
        """At each connect, send again the spent-coupon commands no router has answered."""
        loop = asyncio.get_running_loop()
        try:
            due = await loop.run_in_executor(self._db, self._store.unanswered_spent)
        except Exception as error:
            if not is_outage(error):
                raise
            log.warning("%s: spent coupons not resent (%s)", self.worker_name, error)
            return
        outbox = tuple(
            (str(Topic(router_id, Channel.COMMAND)), command.encode(), False)
            for router_id, command in due
        )
        if outbox:
            log.info("%s: sending %d spent-coupon commands again", self.worker_name, len(outbox))
            self._send_outbox(client, Written(outbox=outbox))

    def _answer(self, client: aiomqtt.Client, held: _Held) -> None:
        task = asyncio.create_task(
            self._reply(client, held), name=f"ingest:{self.worker_name}:wallet:{held.mid}"
        )
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)

    async def _reply(self, client: aiomqtt.Client, held: _Held) -> None:
        """Answer a wallet request from the database on its own thread, then acknowledge it."""
        item = held.item
        assert isinstance(item, Accepted) and isinstance(item.message, WalletRequest)
        loop = asyncio.get_running_loop()
        try:
            reply = await loop.run_in_executor(
                self._wallets, wallet_reply, self._engine, item.router_id, item.message, time.time()
            )
            topic = str(Topic(item.router_id, Channel.REPLY))
            await client.publish(topic, reply.encode(), qos=1)
        except Exception as error:  # the router waits a second, then shows its own cache
            log.warning("%s: wallet request not answered (%s)", self.worker_name, error)
        finally:
            _ack(client, held)

    def _receipt_sent(self, task: asyncio.Task[None]) -> None:
        self._receipts.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            self.stats.receipts += 1
        else:
            log.info(
                "%s: a receipt was not sent (%s); its router sends again", self.worker_name, error
            )

    async def _write(self, held: list[_Held]) -> Written | None:
        """Commit `held` (retrying outages with backoff); None if stopped before it could."""
        loop = asyncio.get_running_loop()
        items = [one.item for one in held]
        delay = RETRY_FIRST
        while True:
            now = datetime.now(UTC)
            try:
                written: Written = await loop.run_in_executor(
                    self._db, self._store.write, items, now
                )
            except Exception as error:
                if not is_outage(error):
                    raise
                log.warning("%s: database unavailable (%s)", self.worker_name, error)
                if self._stopping.is_set():
                    return None  # unacknowledged: the broker delivers them again later
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            self.stats.batches += 1
            self.stats.events += written.events
            self.stats.dead_letters += written.dead_letters
            self.stats.refused += len(written.refused)
            return written


async def _serve_until_signalled(settings: CloudSettings, worker_name: str | None) -> None:
    worker = IngestWorker(settings, worker_name)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    await worker.start(ready_timeout=None)
    database = make_url(settings.database_url).render_as_string(hide_password=True)
    log.info("%s: ingesting %s into %s", worker.worker_name, INGEST_SHARE, database)
    stopped = asyncio.create_task(stop.wait(), name="ingest:signal")
    ended = asyncio.create_task(worker.wait(), name="ingest:ended")
    await asyncio.wait({stopped, ended}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    try:
        await worker.stop()  # raises what ended the worker, if something did
    finally:
        await asyncio.gather(stopped, ended, return_exceptions=True)


def run_ingest(settings: CloudSettings, worker_name: str | None = None) -> None:
    """Run one ingest worker until SIGTERM or SIGINT; `worker_name` must be unique and stable."""
    asyncio.run(_serve_until_signalled(settings, worker_name))
