"""The lab's internet: a web site, a walled-garden site and the real OS probe answers.

Run inside the wan namespace: `python -m lab.wan --port 80 --tls-port 443`.
The probe answers come from `agent.probes.PROBES`, so the lab's internet and the
agent agree on what "online" looks like by construction.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from agent.probes import PROBES, Probe, classify
from lab.addresses import GARDEN_IP

# The probe answers the wan serves; one place for them is agent/probes.py.
PROBE_ANSWERS: tuple[Probe, ...] = PROBES

WEB_PAGE = "WAN OK"
GARDEN_PAGE = "GARDEN OK"
STREAM_CHUNK = 1024
STREAM_INTERVAL = 0.05
MAX_BYTES = 1 << 32
_BYTES_BLOCK = 64 * 1024

log = logging.getLogger("lab.wan")


def site_page(local_ip: str) -> str:
    """The home page text of the site at `local_ip`: the garden or the ordinary web."""
    return GARDEN_PAGE if local_ip == GARDEN_IP else WEB_PAGE


def _html(text: str) -> str:
    return f"<!doctype html><html><head><title>{text}</title></head><body>{text}</body></html>\n"


def _local_ip(request: web.Request) -> str:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return str(sockname[0]) if sockname else ""


def _probe_response(probe: Probe) -> web.Response:
    answer = probe.success
    if answer.status == 204:
        return web.Response(status=204)
    return web.Response(status=answer.status, body=answer.body, content_type=answer.content_type)


async def _stream(request: web.Request) -> web.StreamResponse:
    """Send `chunk` bytes every `interval` seconds until the client goes away."""
    chunk = b"s" * int(request.query.get("chunk", STREAM_CHUNK))
    interval = float(request.query.get("interval", STREAM_INTERVAL))
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    with contextlib.suppress(ConnectionError):
        while True:
            await resp.write(chunk)
            await asyncio.sleep(interval)
    return resp


async def _bytes(request: web.Request) -> web.StreamResponse:
    """Exactly `n` bytes, for quota tests."""
    try:
        n = int(request.query.get("n", "0"))
    except ValueError:
        return web.Response(status=400, text="n must be an integer\n")
    if not 0 <= n <= MAX_BYTES:
        return web.Response(status=400, text=f"n must be within 0..{MAX_BYTES}\n")
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    resp.content_length = n
    await resp.prepare(request)
    block = b"b" * _BYTES_BLOCK
    sent = 0
    while sent < n:
        part = block[: min(_BYTES_BLOCK, n - sent)]
        await resp.write(part)
        sent += len(part)
    await resp.write_eof()
    return resp


async def handle(request: web.Request) -> web.StreamResponse:
    """Answer like the real internet: probe hosts by Host header, else the site by address."""
    probe = classify(request.host, request.path)
    if probe is not None:
        return _probe_response(probe)
    if request.path == "/":
        return web.Response(text=_html(site_page(_local_ip(request))), content_type="text/html")
    if request.path == "/stream":
        return await _stream(request)
    if request.path == "/bytes":
        return await _bytes(request)
    if request.path == "/whoami":
        return web.Response(text=f"{request.remote}\n")
    return web.Response(status=404, text="not found\n")


async def _close_at_once(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The 443 listener: accept the TCP connection, then close it (no TLS)."""
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def serve(host: str | None, port: int, tls_port: int) -> None:
    """Serve HTTP on `port` and the accept-and-close listener on `tls_port` until SIGTERM."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=log, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host=host, port=port).start()
    tls = await asyncio.start_server(_close_at_once, host=host, port=tls_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("wan listening on %s port %d (http) and %d (tcp)", host or "*", port, tls_port)
    try:
        await stop.wait()
    finally:
        tls.close()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Command line: python -m lab.wan [--bind ADDR ...] [--port 80] [--tls-port 443]."""
    parser = argparse.ArgumentParser(prog="python -m lab.wan", description=__doc__)
    parser.add_argument("--bind", help="address to listen on (default: all, IPv4 and IPv6)")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--tls-port", type=int, default=443)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(args.bind, args.port, args.tls_port))


if __name__ == "__main__":
    main()
