"""Config pushes and commands from the cloud to one router: stored, then published (QoS 1)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.publish as mqtt_publish
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from agent import wire
from cloud.broker_config import service_password
from cloud.errors import CloudError
from cloud.models import Command, Router, RouterConfig
from cloud.settings import CloudSettings

Publish = Callable[[str, bytes, bool], None]  # topic, payload, retain


class PushError(CloudError):
    """A config or command was refused before anything was sent; names the problem."""


def broker_publisher(settings: CloudSettings) -> Publish:
    """Publish through the broker's service listener, waiting for the PUBACK (QoS 1)."""
    password = service_password(settings)

    def publish(topic: str, payload: bytes, retain: bool) -> None:
        mqtt_publish.single(
            topic,
            payload,
            qos=1,
            retain=retain,
            hostname=settings.broker_host,
            port=settings.broker_port,
            auth={"username": settings.broker_username, "password": password},
        )

    return publish


def _router(session: Session, router_id: str) -> Router:
    router = session.get(Router, router_id)
    if router is None:
        raise PushError(f"no router {router_id!r}; see `loopspot-cloud routers`")
    return router


def latest_config(factory: sessionmaker[Session], router_id: str) -> dict[str, Any]:
    """The fields of the router's latest config version ({} before the first one)."""
    with factory() as session:
        _router(session, router_id)
        body = session.scalar(
            select(RouterConfig.body)
            .where(RouterConfig.router_id == router_id)
            .order_by(RouterConfig.version.desc())
            .limit(1)
        )
    fields: dict[str, Any] = json.loads(body) if body else {}
    return {k: v for k, v in fields.items() if k not in ("v", "type", "version")}


def push_config(
    factory: sessionmaker[Session], publish: Publish, router_id: str, changes: dict[str, Any]
) -> wire.RouterConfig:
    """Store the router's next config version and publish it retained on its down/config."""
    known = {f for f in wire.RouterConfig.__dataclass_fields__ if f != "version"}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise PushError(f"unknown config field {unknown[0]!r}; known: {', '.join(sorted(known))}")
    with factory() as session, session.begin():
        _router(session, router_id)
        latest = session.scalar(
            select(func.max(RouterConfig.version)).where(RouterConfig.router_id == router_id)
        )
        body = {
            "v": wire.SCHEMA_VERSION,
            "type": wire.RouterConfig.TYPE,
            "version": (latest or 0) + 1,
            **changes,
        }
        try:
            config = wire.decode(json.dumps(body).encode(), wire.RouterConfig)
        except wire.WireError as exc:
            raise PushError(f"config {exc}") from None
        session.add(
            RouterConfig(router_id=router_id, version=config.version, body=config.encode().decode())
        )
    publish(str(wire.Topic(router_id, wire.Channel.CONFIG)), config.encode(), True)
    return config


def send_command(
    factory: sessionmaker[Session],
    publish: Publish,
    router_id: str,
    action: wire.CommandAction,
    device_id: str = "",
    issued_at: float = 0.0,
) -> wire.Command:
    """Store a command from the allow-list and publish it on the router's down/cmd."""
    if action is wire.CommandAction.UNKNOWN:
        raise PushError("unknown action; use revoke_device, reload_config or send_status")
    if action is wire.CommandAction.REVOKE_DEVICE and not device_id:
        raise PushError("revoke_device needs --device DEVICE_ID")
    command = wire.Command(
        id=str(uuid.uuid4()), action=action, device_id=device_id, issued_at=issued_at
    )
    with factory() as session, session.begin():
        _router(session, router_id)
        session.add(
            Command(id=command.id, router_id=router_id, action=action.value, device_id=device_id)
        )
    publish(str(wire.Topic(router_id, wire.Channel.COMMAND)), command.encode(), False)
    return command
