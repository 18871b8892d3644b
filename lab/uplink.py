"""The cloud as routers in the lab reach it: ports on the wan that lead to loopback services.

The broker, the database and the cloud's web server run on the host's loopback, where
tests and benchmarks reach them directly. This relay listens on the wan namespace's
address and forwards each connection to loopback, so a router reaches "the cloud" only
through its uplink: cutting the router's wan link really cuts it off.

    python -m lab.uplink --ns <wan> --forward 198.51.100.2:8883=127.0.0.1:41234 ...
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence

from lab import netns
from lab.relay import _pipe


async def _forward_from(ns: str, listen: tuple[str, int], target: tuple[str, int]) -> None:
    sock = netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(listen)

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except asyncio.CancelledError:
            # The relay is stopping. Ending quietly: Python 3.11's streams log a handler
            # that ends cancelled as an error, with a traceback, in every bench's output.
            writer.close()
            up_writer.close()

    server = await asyncio.start_server(on_connection, sock=sock, backlog=1024)
    async with server:
        await server.serve_forever()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _main(ns: str, forwards: Sequence[tuple[tuple[str, int], tuple[str, int]]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    tasks = [
        asyncio.create_task(_forward_from(ns, a, b), name=f"uplink-{a[1]}") for a, b in forwards
    ]
    await stop.wait()
    for task in tasks:
        task.cancel()


def main(argv: list[str] | None = None) -> int:
    """Run the relay until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m lab.uplink")
    parser.add_argument("--ns", required=True, help="the namespace to listen in (the wan)")
    parser.add_argument(
        "--forward",
        action="append",
        required=True,
        help="LISTEN_IP:PORT=TARGET_IP:PORT (repeatable)",
    )
    args = parser.parse_args(argv)
    forwards = []
    for item in args.forward:
        listen, _, target = item.partition("=")
        forwards.append((_address(listen), _address(target)))
    asyncio.run(_main(args.ns, forwards))
    return 0


def start_uplink(ns: str, forwards: dict[int, int], listen_ip: str) -> subprocess.Popen[bytes]:
    """Start the relay: wan `listen_ip`:key -> 127.0.0.1:value for each item of `forwards`."""
    argv = [sys.executable, "-m", "lab.uplink", "--ns", ns]
    for public, local in forwards.items():
        argv += ["--forward", f"{listen_ip}:{public}=127.0.0.1:{local}"]
    return subprocess.Popen(argv)


if __name__ == "__main__":
    sys.exit(main())
