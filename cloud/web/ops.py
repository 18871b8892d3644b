"""Operations: /healthz (the database answers), /metrics (Prometheus), JSON log lines."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy import Engine, func, select, text

from cloud.db import sessions
from cloud.models import DeadLetter, Router
from cloud.web import auth
from cloud.web.app import in_thread
from cloud.web.dashboard import OBSERVE

REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
LATENCY = web.AppKey("http_latency", Histogram)
GAUGES = web.AppKey("gauges", dict)


@auth.public
async def healthz(request: web.Request) -> web.Response:
    def ping(engine: Engine) -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    try:
        await in_thread(request, ping)
    except Exception as error:  # any failure to reach the database is "unhealthy"
        return web.json_response(
            {"database": "unreachable", "error": type(error).__name__}, status=503
        )
    return web.json_response({"database": "ok"})


def _counts(engine: Engine) -> dict[str, float]:
    with sessions(engine)() as session:
        by_state = dict(
            session.execute(select(Router.state, func.count()).group_by(Router.state)).all()
        )
        dead = session.scalar(select(func.count()).select_from(DeadLetter)) or 0
    return {
        "online": by_state.get("online", 0),
        "offline": by_state.get("offline", 0),
        "dead_letters": dead,
    }


@auth.public
async def metrics(request: web.Request) -> web.Response:
    counts = await in_thread(request, _counts)
    gauges = request.app[GAUGES]
    gauges["online"].labels(state="online").set(counts["online"])
    gauges["online"].labels(state="offline").set(counts["offline"])
    gauges["dead_letters"].set(counts["dead_letters"])
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    """Health and metrics, and the latency histogram every request is timed into."""
    registry = CollectorRegistry()
    app[REGISTRY] = registry
    latency = Histogram(
        "loopspot_http_request_seconds",
        "HTTP request latency by route",
        ["method", "route", "status"],
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    )
    app[LATENCY] = latency
    app[GAUGES] = {
        "online": Gauge("loopspot_routers", "routers by state", ["state"], registry=registry),
        "dead_letters": Gauge(
            "loopspot_dead_letters", "messages ingest refused", registry=registry
        ),
    }

    def observe(request: web.Request, status: int, seconds: float) -> None:
        info = request.match_info.route.resource
        route = info.canonical if info is not None else "unmatched"
        latency.labels(request.method, route, str(status)).observe(seconds)

    app[OBSERVE] = observe
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)


class JsonLines(logging.Formatter):
    """One JSON object per log line: time, level, logger, message, and any exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def json_logging(level: int = logging.INFO) -> None:
    """Send every log record of this process to stderr as JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
