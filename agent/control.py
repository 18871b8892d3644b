"""The local control socket: one JSON request per connection, one JSON answer."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from agent.clients import BadMac, normalize_mac
from agent.errors import ClientUnknown, ControlError, LoopspotError
from agent.service import AgentService

MAX_REQUEST = 4096
COMMANDS = ("status", "clients", "grant", "revoke")


async def answer(service: AgentService, request: dict[str, Any]) -> dict[str, Any]:
    """The answer to one control request."""
    command = request.get("command")
    try:
        if command == "status":
            return {"ok": True, "status": service.status()}
        if command == "clients":
            return {"ok": True, "clients": [service.describe(s) for s in service.book.all()]}
        if command == "grant":
            mac = normalize_mac(str(request.get("mac", "")))
            ip = IPv4Address(request["ip"]) if request.get("ip") else None
            session = await service.grant_mac(mac, ip)
            return {"ok": True, "session": service.describe(session)}
        if command == "revoke":
            mac = normalize_mac(str(request.get("mac", "")))
            ended = await service.revoke(mac)
            if ended is None:
                return {"ok": False, "error": f"{mac} has no session"}
            return {"ok": True, "ended": service.describe(ended.session)}
    except (BadMac, ClientUnknown, ValueError) as exc:
        return {"ok": False, "error": str(exc)}
    except LoopspotError as exc:
        return {"ok": False, "error": f"the agent could not do it: {exc}"}
    return {"ok": False, "error": f"unknown command {command!r}; use one of {', '.join(COMMANDS)}"}


async def serve_control(service: AgentService, path: Path) -> asyncio.Server:
    """Listen on a Unix socket only root can use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # noqa: ASYNC240

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                request = json.loads(line[:MAX_REQUEST] or b"{}")
                if not isinstance(request, dict):
                    raise ValueError("not an object")
            except ValueError:
                result: dict[str, Any] = {"ok": False, "error": "the request is not a JSON object"}
            else:
                result = await answer(service, request)
            writer.write(json.dumps(result).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_unix_server(on_connection, path=str(path), limit=MAX_REQUEST)
    os.chmod(path, 0o600)
    return server


def call(path: Path, request: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one request to a running agent (blocking; for the CLI)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        raise ControlError(
            f"no agent answers on {path} ({exc.strerror or exc}); is it running?"
        ) from exc
    result: dict[str, Any] = json.loads(data or b"{}")
    return result
