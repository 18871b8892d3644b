"""Enrolment over HTTPS: POST /v1/enrol {"claim_code", "csr"} answers the router's identity.

Unknown, used, expired and malformed codes all get one answer, 403 "invalid or expired
claim code", so guessing learns nothing; the log keeps the real reason. Each client address
has a token bucket. The database work runs in a thread, off the event loop.

POST /v1/renew {"csr"} answers a new certificate to a router that presents its current one
as the TLS client certificate (cloud.enrol_renew). TLS asks for a client certificate but
does not require one, so enrolment works without; one that is presented must be from the
cloud CA, or the handshake fails. Each router id has a token bucket in the same limiter.

POST /v1/portal-cert {"csr"} answers the certificate of the presenting router's HTTPS
portal, ordered over ACME for the router's own key (cloud.portal_cert); served only when
the cloud has a portal_domain and acme_dns. Orders are few: 3 at once, then one an hour.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

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
from cloud.enrol_renew import Presented, Renewal, RenewalRefused, renew
from cloud.settings import CloudSettings

__all__ = [
    "ClaimRefused",
    "Enrolment",
    "Renewal",
    "RenewalRefused",
    "build_enrol_app",
    "create_claim",
    "normalise_code",
    "redeem",
    "serve_enrol",
    "server_ssl_context",
]

log = logging.getLogger(__name__)

REFUSAL = "invalid or expired claim code"
CERTIFICATE_REQUIRED = "a router certificate is required"
RENEWAL_REFUSAL = "this certificate may not renew"
MAX_BODY = 64 * 1024
ATTEMPT_RATE = 1 / 6  # attempts per second per client address, after the burst
ATTEMPT_BURST = 10
PORTAL_ORDER_RATE, PORTAL_ORDER_BURST = 1 / 3600, 3  # the CA limits duplicate certificates


@dataclass(frozen=True, slots=True)
class _Desk:
    """What the handlers need: the limiter, a blocking redeem and renew, a monotonic clock."""

    limiter: RateLimiter
    redeem: Callable[[str, str], Enrolment]
    renew: Callable[[Presented, str], Renewal]
    monotonic: Callable[[], float]
    # The portal's certificate (chain, not_after) for a request; None: not configured.
    portal: Callable[[Presented, str], dict[str, str]] | None = None
    portal_limiter: RateLimiter | None = None


_DESK = web.AppKey("enrol_desk", _Desk)


def _answer(status: int, error: str, **headers: str) -> web.Response:
    return web.json_response({"error": error}, status=status, headers=headers or None)


def _rate_limited(desk: _Desk, key: str) -> web.Response | None:
    """The 429 answer when `key` has no token left; None when it may go on."""
    if desk.limiter.allow(key, desk.monotonic()):
        return None
    retry = str(desk.limiter.retry_after(key))
    return _answer(429, "too many attempts; try again later", **{"Retry-After": retry})


async def _string_fields(request: web.Request, *fields: str) -> dict[str, str] | web.Response:
    """The JSON object body with each of `fields` a non-empty string, or the 400 answer."""
    try:
        body = await request.json()
    except ValueError:
        return _answer(400, "the body must be a JSON object")
    if not isinstance(body, dict):
        return _answer(400, "the body must be a JSON object")
    for field in fields:
        if not isinstance(body.get(field), str) or not body[field]:
            return _answer(400, f"{field}: a non-empty string is required")
    return {field: body[field] for field in fields}


def _presented(request: web.Request) -> Presented | None:
    """The client certificate TLS verified against the cloud CA, or None if there was none."""
    tls = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = tls.getpeercert(binary_form=True) if isinstance(tls, ssl.SSLObject) else None
    if not der:
        return None
    try:
        return Presented.from_der(der)
    except ValueError:  # TLS parsed and verified it, so practically never
        log.exception("renewal from %s: unreadable client certificate", request.remote)
        return None


async def _enrol(request: web.Request) -> web.Response:
    desk = request.app[_DESK]
    client = request.remote or "unknown"
    limited = _rate_limited(desk, client)
    if limited is not None:
        log.warning("enrolment from %s: rate limited", client)
        return limited
    body = await _string_fields(request, "claim_code", "csr")
    if isinstance(body, web.Response):
        return body
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


async def _renew(request: web.Request) -> web.Response:
    desk = request.app[_DESK]
    client = request.remote or "unknown"
    presented = _presented(request)
    if presented is None:
        log.warning("renewal from %s: no client certificate", client)
        return _answer(401, CERTIFICATE_REQUIRED)
    router = presented.router_id
    limited = _rate_limited(desk, router)
    if limited is not None:
        log.warning("renewal for %r from %s: rate limited", router, client)
        return limited
    body = await _string_fields(request, "csr")
    if isinstance(body, web.Response):
        return body
    try:
        renewal = await asyncio.to_thread(desk.renew, presented, body["csr"])
    except RenewalRefused as exc:
        log.warning("renewal for %r from %s refused: %s", router, client, exc)
        return _answer(403, RENEWAL_REFUSAL)
    except CertificateRequestError as exc:
        log.warning("renewal for %r from %s: bad request: %s", router, client, exc)
        return _answer(400, str(exc))
    except SQLAlchemyError:
        log.exception("renewal for %r from %s: database error", router, client)
        return _answer(503, "renewal is unavailable; try again later")
    log.info("router %s renewed from %s until %s", router, client, renewal.not_after.isoformat())
    return web.json_response(renewal.to_json())


async def _portal_cert(request: web.Request) -> web.Response:
    from cloud.acme_dns import PortalCertError
    from cloud.portal_cert import PortalRequestRefused

    desk = request.app[_DESK]
    if desk.portal is None or desk.portal_limiter is None:
        return _answer(503, "this cloud gives no portal certificates (no portal_domain)")
    presented = _presented(request)
    if presented is None:
        return _answer(401, CERTIFICATE_REQUIRED)
    router = presented.router_id
    if not desk.portal_limiter.allow(router, desk.monotonic()):
        retry = str(desk.portal_limiter.retry_after(router))
        return _answer(
            429, "too many certificate orders; try again later", **{"Retry-After": retry}
        )
    body = await _string_fields(request, "csr")
    if isinstance(body, web.Response):
        return body
    try:
        answer = await asyncio.to_thread(desk.portal, presented, body["csr"])
    except RenewalRefused as exc:
        log.warning("portal certificate for %r refused: %s", router, exc)
        return _answer(403, RENEWAL_REFUSAL)
    except PortalRequestRefused as exc:
        log.warning("portal certificate for %r: bad request: %s", router, exc)
        return _answer(400, str(exc))
    except PortalCertError as exc:
        log.error("portal certificate for %r failed: %s", router, exc)
        return _answer(502, "the certificate authority or DNS failed; try again later")
    except SQLAlchemyError:
        log.exception("portal certificate for %r: database error", router)
        return _answer(503, "portal certificates are unavailable; try again later")
    log.info("router %s got its portal certificate until %s", router, answer["not_after"])
    return web.json_response(answer)


def _portal_desk(
    settings: CloudSettings, session_factory: sessionmaker[Session]
) -> Callable[[Presented, str], dict[str, str]] | None:
    """The blocking portal-certificate order, if the settings name a domain and DNS."""
    if not settings.portal_domain:
        return None
    from cloud.acme_dns import txt_publisher
    from cloud.portal_cert import certify_router

    dns = txt_publisher(settings.acme_dns, settings.acme_dns_tsig_file)

    def portal_now(presented: Presented, csr: str) -> dict[str, str]:
        with session_factory() as session:
            return certify_router(session, settings, presented, csr, dns).to_json()

    return portal_now


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

    def renew_now(presented: Presented, csr: str) -> Renewal:
        with session_factory() as session:
            return renew(session, presented.router_id, presented.fingerprint, csr, clock(), ca)

    app = web.Application(client_max_size=MAX_BODY)
    limiter = limiter or RateLimiter(ATTEMPT_RATE, ATTEMPT_BURST)
    portal = _portal_desk(settings, session_factory)
    orders = RateLimiter(PORTAL_ORDER_RATE, PORTAL_ORDER_BURST)
    app[_DESK] = _Desk(limiter, redeem_now, renew_now, monotonic, portal, orders)
    app.router.add_post("/v1/enrol", _enrol)
    app.router.add_post("/v1/renew", _renew)
    app.router.add_post("/v1/portal-cert", _portal_cert)
    return app


def server_ssl_context(
    credentials: ServerCredentials, *, client_ca: Path | None = None
) -> ssl.SSLContext:
    """A TLS 1.2+ server context presenting `credentials`.

    With `client_ca` (a PEM file), it asks for an optional client certificate, which must
    then be issued by that CA; without, it asks for none, and /v1/renew always answers 401.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(credentials.certificate, credentials.key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(cafile=client_ca)
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
            ssl_context=server_ssl_context(credentials, client_ca=ca.certificate_path),
            print=log.info,
        )
    finally:
        engine.dispose()
