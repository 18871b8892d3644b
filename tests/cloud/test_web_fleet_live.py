"""Event to screen: a router's status and its Last Will go through a real Mosquitto and the
real ingest worker, and the fleet page's event stream carries each change within 2 s."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as paho
from aiohttp.test_utils import TestClient
from paho.mqtt.enums import CallbackAPIVersion

from agent import wire
from lab.broker import Broker
from tests.cloud.conftest import WorkerFactory
from tests.cloud.dashboard_world import log_in

SCREEN_WITHIN = 2.0


def _status(state: wire.RouterState, at: float, **fields: Any) -> tuple[str, bytes]:
    body = wire.Status(router_id="ra-1", state=state, at=at, boot_id="boot-a", **fields).encode()
    return str(wire.Topic("ra-1", wire.Channel.STATUS)), body


async def _row_where(stream: Any, wanted: dict[str, Any], within: float) -> dict[str, Any]:
    """The first streamed row of ra-1 with the `wanted` values."""
    deadline = time.monotonic() + within
    buffer = b""
    while (left := deadline - time.monotonic()) > 0:
        buffer += await asyncio.wait_for(stream.content.readany(), left)
        while b"\n\n" in buffer:
            message, buffer = buffer.split(b"\n\n", 1)
            for line in message.decode().splitlines():
                if line.startswith("data: "):
                    row: dict[str, Any] = json.loads(line[6:])
                    if row["router_id"] == "ra-1" and wanted.items() <= row.items():
                        return row
    raise TimeoutError(f"no row with {wanted} within {within} s")


async def test_a_vanished_router_shows_offline_on_the_fleet_stream_within_two_seconds(
    client: TestClient[Any, Any], broker: Broker, make_worker: WorkerFactory
) -> None:
    await make_worker()
    assert await log_in(client, "operator") == 302
    stream = await client.get("/fleet/events")
    await stream.content.readline()
    await asyncio.sleep(0.7)  # the poller has its first snapshot
    topic, will = _status(wire.RouterState.OFFLINE, 0.0)  # no time, as agent.link does
    link = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"ra-1-{uuid.uuid4().hex[:6]}")
    link.will_set(topic, will, qos=1, retain=True)
    connected = threading.Event()
    link.on_connect = lambda *_: connected.set()
    link.connect(broker.host, broker.port)
    link.loop_start()
    assert await asyncio.to_thread(connected.wait, 10)
    sent = time.monotonic()
    info = link.publish(*_status(wire.RouterState.ONLINE, 3000.0, clients=7), qos=1, retain=True)
    await asyncio.to_thread(info.wait_for_publish, 10)
    await _row_where(stream, {"state": "online", "clients": 7}, SCREEN_WITHIN)
    online_after = time.monotonic() - sent
    sock = link.socket()
    assert isinstance(sock, socket.socket)
    vanished = time.monotonic()
    sock.shutdown(socket.SHUT_RDWR)  # the router vanishes without saying goodbye
    link.loop_stop()
    await _row_where(stream, {"state": "offline"}, SCREEN_WITHIN)
    offline_after = time.monotonic() - vanished
    print(f"event to stream: online {online_after:.3f} s, last will {offline_after:.3f} s")
    stream.close()
