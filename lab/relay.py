"""A loopback port on the host that reaches the portal as if from a phone in the lab.

A browser on the demo machine opens http://127.0.0.1:PORT/ and the router sees the phone's
MAC and IP, so the portal, the accept button and the "online" page behave as on a phone.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from lab import netns


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()


async def serve_relay(phone_ns: str, target: tuple[str, int], port: int) -> asyncio.Server:
    """Listen on 127.0.0.1:`port`; connect each client to `target` from `phone_ns`."""

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = netns.socket_in(phone_ns, socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, target)
            up_reader, up_writer = await asyncio.open_connection(sock=sock)
        except OSError:
            sock.close()
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    return await asyncio.start_server(on_connection, "127.0.0.1", port)
