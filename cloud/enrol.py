"""Enrolment over HTTPS: POST /v1/enrol {"claim_code", "csr"} answers the router's identity.

Unknown, used, expired and malformed codes all get one answer, 403 "invalid or expired
claim code", so guessing learns nothing; the log keeps the real reason. Each client address
has a token bucket. The database work runs in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from agent.portal.ratelimit import RateLimiter
from cloud.ca import (
    CertificateAuthority,
    CertificateRequestError,
    ServerCredentials,
    ca_directory,
    server_names,
)
from cloud.db import make_engine, sessions
from cloud.enrol_claims import ClaimRefused, Enrolment, create_claim, normalise_code, redeem
from cloud.settings import CloudSettings

__all__ = [
    "ClaimRefused",
    "Enrolment",
    "build_enrol_app",
    "create_claim",
    "normalise_code",
    "redeem",
    "serve_enrol",
    "server_ssl_context",
]

log = logging.getLogger(__name__)

REFUSAL = "invalid or expired claim code"
MAX_BODY = 64 * 1024
ATTEMPT_RATE = 1 / 6  # attempts per second per client address, after the burst
ATTEMPT_BURST = 10


@dataclass(frozen=True, slots=True)
class _Desk:
    """What the handler needs: the limiter, a blocking redeem, and a monotonic clock."""

    limiter: RateLimiter
    redeem: Callable[[str, str], Enrolment]
    monotonic: Callable[[], float]


_DESK = web.AppKey("enrol_desk", _Desk)


def _answer(status: int, error: str, **headers: str) -> web.Response:
    return web.json_response({"error": error}, status=status, headers=headers or None)


async def _enrol(request: web.Request) -> web.Response:
    desk = request.app[_DESK]
    client = request.remote or "unknown"
    limiter = desk.limiter
    if not limiter.allow(client, desk.monotonic()):
        log.warning("enrolment from %s: rate limited", client)
        retry = str(limiter.retry_after(client))
        return _answer(429, "too many attempts; try again later", **{"Retry-After": retry})
    try:
        body = await request.json()
    except ValueError:
        return _answer(400, "the body must be a JSON object")
    if not isinstance(body, dict):
        return _answer(400, "the body must be a JSON object")
    for field in ("claim_code", "csr"):
        if not isinstance(body.get(field), str) or not body[field]:
            return _answer(400, f"{field}: a non-empty string is required")
    try:
        enrolment = await asyncio.to_thread(desk.redeem, body["claim_code"], body["csr"])
    except ClaimRefused as exc:
        log.warning("enrolment from %s refused: %s", client, exc)
        return _answer(403, REFUSAL)
    except CertificateRequestError as exc:
        log.warning("enrolment from %s: bad request: %s", client, exc)
        return _answer(400, str(exc))
    except SQLAlchemyError:
        log.exception("enrolment from %s: database error", client)
        return _answer(503, "enrolment is unavailable; try again later")
    log.info("router %s enrolled from %s", enrolment.router_id, client)
    return web.json_response(enrolment.to_json())


def build_enrol_app(
    settings: CloudSettings,
    session_factory: sessionmaker[Session],
    ca: CertificateAuthority,
    *,
    limiter: RateLimiter | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    monotonic: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The enrolment app; answers carry settings.public_broker_host/port."""

    def redeem_now(code: str, csr: str) -> Enrolment:
        with session_factory() as session:
            return redeem(
                session,
                code,
                csr,
                clock(),
                ca,
                broker_host=settings.public_broker_host,
                broker_port=settings.public_broker_port,
            )

    app = web.Application(client_max_size=MAX_BODY)
    app[_DESK] = _Desk(limiter or RateLimiter(ATTEMPT_RATE, ATTEMPT_BURST), redeem_now, monotonic)
    app.router.add_post("/v1/enrol", _enrol)
    return app


def server_ssl_context(credentials: ServerCredentials) -> ssl.SSLContext:
    """A TLS 1.2+ server context presenting `credentials`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(credentials.certificate, credentials.key)
    return context


def serve_enrol(settings: CloudSettings) -> None:
    """Serve enrolment on settings.enrol_host:enrol_port over HTTPS until interrupted."""
    ca = CertificateAuthority.load(ca_directory(settings.data_dir))
    credentials = ca.ensure_server_credentials(
        server_names(settings.enrol_host, settings.public_broker_host),
        settings.data_dir / "enrol",
        datetime.now(UTC),
    )
    engine = make_engine(settings.database_url)
    app = build_enrol_app(settings, sessions(engine), ca)
    try:
        web.run_app(
            app,
            host=settings.enrol_host,
            port=settings.enrol_port,
            ssl_context=server_ssl_context(credentials),
            print=log.info,
        )
    finally:
        engine.dispose()
