"""The MQTT edge: aiomqtt (paho underneath) configured for one router; no paho type leaks out."""

from __future__ import annotations

import math
import ssl
from dataclasses import dataclass

import aiomqtt

from agent.link.identity import Identity
from agent.wire import Channel, Message, Topic

MqttError = aiomqtt.MqttError
QOS = 1  # at least once: the spool and the cloud's unique (router_id, boot_id, seq) dedupe
CONNECT_TIMEOUT = 10.0  # seconds for the TCP/TLS handshake and CONNACK
ACK_TIMEOUT = 10.0  # seconds for the PUBACK of a status or an ack
SUBSCRIBED = (Channel.CONFIG, Channel.COMMAND, Channel.RECEIPT, Channel.REPLY)


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message from the broker, as plain data."""

    topic: str
    payload: bytes
    retained: bool


def incoming(message: aiomqtt.Message) -> Incoming:
    """The broker's message converted at the boundary."""
    payload = message.payload
    if isinstance(payload, bytes | bytearray):
        data = bytes(payload)
    else:
        data = b"" if payload is None else str(payload).encode()
    return Incoming(str(message.topic), data, bool(message.retain))


def make_client(
    identity: Identity, will: Message, keepalive: int, tls: ssl.SSLContext | None
) -> aiomqtt.Client:
    """A fresh client: id = router id, persistent session, retained Last Will, QoS 1.

    A new client per connection: messages paho still held from the last one die with it,
    and the spool sends them again, so nothing is sent twice by two owners.
    """
    return aiomqtt.Client(
        identity.broker_host,
        identity.broker_port,
        username=identity.username or None,
        password=identity.password or None,
        identifier=identity.router_id,
        clean_session=False,
        keepalive=keepalive,
        will=aiomqtt.Will(
            str(Topic(identity.router_id, Channel.STATUS)), will.encode(), qos=QOS, retain=True
        ),
        tls_context=tls,
        timeout=CONNECT_TIMEOUT,
        protocol=aiomqtt.ProtocolVersion.V311,
        max_inflight_messages=20,
    )


async def subscribe(client: aiomqtt.Client, router_id: str) -> None:
    """Subscribe to the router's config, command, receipt and reply topics."""
    await client.subscribe([(str(Topic(router_id, channel)), QOS) for channel in SUBSCRIBED])


async def publish(
    client: aiomqtt.Client,
    router_id: str,
    channel: Channel,
    payload: bytes,
    *,
    retain: bool = False,
    wait_forever: bool = False,
) -> None:
    """Publish on the router's `channel`; returns once the broker acknowledged it (PUBACK).

    `wait_forever` is for event batches: a dead connection is noticed by the keepalive and
    cancels the wait, so a slow broker is never mistaken for a lost batch.
    """
    await client.publish(
        str(Topic(router_id, channel)),
        payload,
        qos=QOS,
        retain=retain,
        timeout=math.inf if wait_forever else ACK_TIMEOUT,
    )
