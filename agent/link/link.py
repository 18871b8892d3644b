"""The link: keeps one MQTT connection up, drains the spool, answers config and commands.

One task runs the connection loop. While connected, a task group holds the spool pump,
one task per batch in flight, the status reporter and the receiver; when the connection
drops they all end, the spool takes its batches back, and the Reconnect machine says how
long to wait. Events leave the spool when the cloud's Receipt names them, not on the
broker's PUBACK; the pump sends again what no receipt came for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import ssl
import time
from collections.abc import Callable
from typing import Protocol

import aiomqtt

from agent import __version__
from agent.link import mqtt
from agent.link.backoff import LinkState, Reconnect
from agent.link.commands import (
    UNKNOWN_ACTION,
    RecentCommands,
    Verdict,
    command_ack,
    config_ack,
    judge,
)
from agent.link.errors import IdentityError
from agent.link.identity import Identity
from agent.link.spooler import Spooler
from agent.wire import (
    Ack,
    Channel,
    Command,
    CommandAction,
    Receipt,
    RouterConfig,
    RouterState,
    Status,
    WalletReply,
    WalletRequest,
    WireError,
    decode_from,
)

log = logging.getLogger("loopspot.link")
STOP_TIMEOUT = 3.0  # seconds to say "offline" and disconnect cleanly on shutdown
WALLET_TIMEOUT = 1.0  # seconds the portal waits for the cloud's wallet before using its cache


class LocalRouter(Protocol):
    """What the link may ask of this router; each call returns an error text, "" for done."""

    @property
    def config_version(self) -> int:
        """The version of the cloud config applied now (0: none)."""

    def clients(self) -> int:
        """Authorized clients now."""

    async def apply_config(self, config: RouterConfig) -> str:
        """Check and apply a pushed config live, and keep it on flash; all or nothing."""

    async def revoke_device(self, device_id: str) -> str:
        """End the session of the device with this device_id."""

    async def reload_config(self) -> str:
        """Read the UCI file again and apply what can change live."""

    async def coupons_spent(self, coupon_ids: tuple[str, ...]) -> str:
        """Refuse these coupons from now on: they were redeemed at another router."""


class Link:
    """The router's MQTT link to the cloud: run() until stop()."""

    def __init__(
        self,
        identity: Identity,
        spooler: Spooler,
        local: LocalRouter,
        *,
        keepalive: int,
        status_interval: float,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        draw: Callable[[], float] = random.random,
        issuer_key: str = "",
    ) -> None:
        self.identity = identity
        self.issuer_key = issuer_key
        self.router_id = identity.router_id
        self.spooler = spooler
        self.local = local
        self.keepalive = keepalive
        self.status_interval = status_interval
        self.clock = clock
        self.monotonic = monotonic
        self.draw = draw
        self.reconnect = Reconnect()
        self.started_at = monotonic()
        self.connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._tls: ssl.SSLContext | None = None
        self._connected_at = 0.0  # when the current connection began
        self._recent = RecentCommands()
        self._stopped = asyncio.Event()
        self._wallets: dict[str, asyncio.Future[WalletReply]] = {}  # by request id

    def status(self, state: RouterState) -> Status:
        """The router's status message now."""
        stats = self.spooler.stats
        return Status(
            router_id=self.router_id,
            state=state,
            at=round(self.clock(), 3),
            boot_id=self.spooler.boot_id,
            agent_version=__version__,
            clients=self.local.clients(),
            config_version=self.local.config_version,
            uptime=round(self.monotonic() - self.started_at, 1),
            spool_depth=stats.depth,
            spool_dropped=stats.dropped_total,
            connected_at=self._connected_at,
            issuer_key=self.issuer_key,
        )

    def _will(self) -> Status:
        return Status(
            router_id=self.router_id,
            state=RouterState.OFFLINE,
            boot_id=self.spooler.boot_id,
            agent_version=__version__,
            connected_at=self._connected_at,
        )

    async def run(self) -> None:
        """Connect and stay connected, backing off between attempts, until stop()."""
        if self.identity.tls is not None:
            try:
                self._tls = await asyncio.to_thread(self.identity.tls.context)
            except IdentityError as error:
                log.error("cloud link off: %s", error)
                return
        while not self._stopped.is_set():
            self.reconnect.attempt()
            try:
                await self._connection()
            except* (aiomqtt.MqttError, OSError) as group:
                log.info("link: %s", "; ".join(str(e) for e in group.exceptions))
            except* Exception:
                log.exception("link: the connection ended on an unexpected error")
            finally:
                self.connected.clear()
                self._client = None
                await self.spooler.requeue()
            if self._stopped.is_set():
                break
            if self.reconnect.state is LinkState.CONNECTED:
                delay = self.reconnect.lost(self.monotonic(), self.draw())
            else:
                delay = self.reconnect.failed(self.draw())
            log.info("link: next attempt in %.1fs", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), delay)
        self.reconnect.stop()

    async def _connection(self) -> None:
        self._connected_at = round(self.clock(), 3)  # this connection's, in its will too
        if self.identity.tls is not None:  # read again: the certificate may have been renewed
            try:
                self._tls = await asyncio.to_thread(self.identity.tls.context)
            except IdentityError as error:
                log.warning("link: keeping the TLS files read before: %s", error)
        client = mqtt.make_client(self.identity, self._will(), self.keepalive, self._tls)
        async with client:
            self.reconnect.connected(self.monotonic())
            self._client = client
            await mqtt.subscribe(client, self.router_id)
            await self.publish_status()
            self.connected.set()
            log.info("link: connected to %s", self.identity.broker_host)
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(client, group), name="link-pump")
                group.create_task(self._report(), name="link-status")
                group.create_task(self._receive(client), name="link-receive")

    async def publish_status(self) -> None:
        """Publish the retained 'online' status now (a no-op while disconnected)."""
        client = self._client
        if client is not None:
            payload = self.status(RouterState.ONLINE).encode()
            await mqtt.publish(client, self.router_id, Channel.STATUS, payload, retain=True)

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.status_interval)
            await self.publish_status()

    async def _pump(self, client: aiomqtt.Client, group: asyncio.TaskGroup) -> None:
        while True:
            self.spooler.waiting.clear()
            taken = await self.spooler.take()
            if taken is None:
                with contextlib.suppress(TimeoutError):  # then unconfirmed batches go again
                    await asyncio.wait_for(self.spooler.waiting.wait(), self.spooler.resend_in)
                continue
            batch, payload = taken
            group.create_task(
                self._send(client, batch.number, payload), name=f"link-batch-{batch.number}"
            )

    async def _send(self, client: aiomqtt.Client, number: int, payload: bytes) -> None:
        await mqtt.publish(client, self.router_id, Channel.EVENTS, payload, wait_forever=True)
        await self.spooler.acked(number)

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            answer = await self.answer(mqtt.incoming(message))
            if answer is not None:
                await mqtt.publish(client, self.router_id, Channel.ACK, answer.encode())

    async def answer(self, message: mqtt.Incoming) -> Ack | None:
        """Handle one message from the cloud; the Ack to publish, if any."""
        if not message.payload:
            return None  # a retained message being cleared
        try:
            topic, decoded = decode_from(message.topic, message.payload)
        except WireError as error:
            log.warning("link: refused a message on %s: %s", message.topic, error)
            if message.topic.endswith(Channel.CONFIG.value):
                return config_ack(self.router_id, 0, str(error), self.clock())
            return None
        if topic.router_id != self.router_id:
            return None
        if isinstance(decoded, RouterConfig):
            return await self._on_config(decoded)
        if isinstance(decoded, Command):
            return await self._on_command(decoded)
        if isinstance(decoded, Receipt):
            await self.spooler.receipted(decoded)
        if isinstance(decoded, WalletReply):
            waiting = self._wallets.get(decoded.id)
            if waiting is not None and not waiting.done():
                waiting.set_result(decoded)
        return None

    async def wallet(self, device_id: str, within: float = WALLET_TIMEOUT) -> WalletReply | None:
        """The cloud's wallet of `device_id`, or None when offline or slower than `within` s."""
        client = self._client
        if client is None:
            return None
        request = WalletRequest(
            router_id=self.router_id, id=secrets.token_hex(16), device_id=device_id
        )
        answer: asyncio.Future[WalletReply] = asyncio.get_running_loop().create_future()
        self._wallets[request.id] = answer
        try:
            async with asyncio.timeout(within):
                await mqtt.publish(client, self.router_id, Channel.REQUEST, request.encode())
                return await answer
        except (TimeoutError, aiomqtt.MqttError) as error:
            log.info("link: no wallet from the cloud within %.1fs: %s", within, error or "timeout")
            return None
        finally:
            self._wallets.pop(request.id, None)

    async def _on_config(self, config: RouterConfig) -> Ack | None:
        verdict = judge(self.local.config_version, config)
        if verdict is Verdict.STALE:
            log.info(
                "link: ignored config %d (applied: %d)", config.version, self.local.config_version
            )
            return None
        error = await self.local.apply_config(config) if verdict is Verdict.APPLY else ""
        if verdict is Verdict.APPLY and not error:
            await self.publish_status()  # the new config_version, at once
        return config_ack(self.router_id, config.version, error, self.clock())

    async def _on_command(self, command: Command) -> Ack:
        earlier = self._recent.answer(command.id)
        if earlier is not None:
            return earlier
        if command.action is CommandAction.REVOKE_DEVICE:
            error = await self.local.revoke_device(command.device_id)
        elif command.action is CommandAction.RELOAD_CONFIG:
            error = await self.local.reload_config()
        elif command.action is CommandAction.SEND_STATUS:
            await self.publish_status()
            error = ""
        elif command.action is CommandAction.COUPONS_SPENT:
            error = await self.local.coupons_spent(command.coupons)
        else:
            error = UNKNOWN_ACTION
        log.info("link: command %s %s: %s", command.id, command.action.value, error or "done")
        ack = command_ack(self.router_id, command.id, error, self.clock())
        self._recent.remember(ack)
        return ack

    async def stop(self, task: asyncio.Task[None]) -> None:
        """Say 'offline' (retained), disconnect cleanly and end `task`, the one running run()."""
        self._stopped.set()
        client = self._client
        if client is not None:
            offline = self.status(RouterState.OFFLINE).encode()
            try:
                await asyncio.wait_for(
                    mqtt.publish(client, self.router_id, Channel.STATUS, offline, retain=True),
                    STOP_TIMEOUT,
                )
            except (aiomqtt.MqttError, TimeoutError) as error:
                log.info("link: could not say offline: %s", error)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, STOP_TIMEOUT)
