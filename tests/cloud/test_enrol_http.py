"""Enrolment end to end: agent.enrol on one side, the cloud's HTTPS app on the other."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agent.enrol import EnrolError, EnrolledIdentity, enrol, load_identity
from agent.portal.ratelimit import RateLimiter
from cloud.ca import CertificateAuthority, fingerprint
from cloud.db import sessions
from cloud.enrol import REFUSAL, build_enrol_app, server_ssl_context
from cloud.enrol_claims import create_claim
from cloud.enrol_fleet import create_merchant, create_site
from cloud.models import Router
from cloud.settings import CloudSettings
from tests.cloud.test_broker_acl import CloudBroker, Peer, cloud_broker  # noqa: F401

NOW = datetime.now(UTC)


@dataclass
class Clock:
    """The enrolment service's time: the real time, moved on by `ahead` when a test says so."""

    ahead: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead


@dataclass
class Desk:
    """A running enrolment service, its CA and clock, and a site to make claims for."""

    url: str
    ca: CertificateAuthority
    engine: Engine
    site_id: int
    clock: Clock

    def claim(self, now: datetime = NOW, ttl: timedelta = timedelta(hours=1)) -> str:
        with Session(self.engine) as session:
            _, code = create_claim(session, self.site_id, now, ttl)
            session.commit()
        return code

    async def enrol(
        self, code: str, folder: Path, ca_file: Path | None = None, replace: bool = False
    ) -> EnrolledIdentity:
        trusted = ca_file or self.ca.certificate_path
        return await asyncio.to_thread(enrol, self.url, code, trusted, folder, replace=replace)


@asynccontextmanager
async def running_desk(
    engine: Engine,
    ca: CertificateAuthority,
    folder: Path,
    broker: tuple[str, int],
    burst: int,
    settings: CloudSettings | None = None,
) -> AsyncIterator[Desk]:
    """The enrolment app on 127.0.0.1 (a free port) over HTTPS with a certificate from `ca`.

    It takes client certificates from `ca`, as serve_enrol does, for /v1/renew.
    """
    with Session(engine) as session:
        create_merchant(session, "Spa Sud")
        site_id = create_site(session, "Spa Sud", "Harbour").id
        session.commit()
    credentials = ca.ensure_server_credentials(["localhost", "127.0.0.1"], folder, NOW)
    settings = replace(
        settings or CloudSettings(), public_broker_host=broker[0], public_broker_port=broker[1]
    )
    limiter = RateLimiter(rate=0.001, burst=burst)
    clock = Clock()
    app = build_enrol_app(settings, sessions(engine), ca, limiter=limiter, clock=clock)
    runner = web.AppRunner(app)
    await runner.setup()
    tls = server_ssl_context(credentials, client_ca=ca.certificate_path)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Desk(f"https://127.0.0.1:{port}", ca, engine, site_id, clock)
    finally:
        await runner.cleanup()


@pytest.fixture
async def desk(engine: Engine, tmp_path: Path) -> AsyncIterator[Desk]:
    ca = CertificateAuthority.create(tmp_path / "ca", NOW)
    async with running_desk(engine, ca, tmp_path / "enrol", ("mqtt.example.net", 8883), 20) as d:
        yield d


async def test_router_enrols_over_https_and_stores_its_identity(desk: Desk, tmp_path: Path) -> None:
    folder = tmp_path / "credentials"

    identity = await desk.enrol(desk.claim(), folder)

    assert identity == load_identity(folder)
    assert (identity.broker_host, identity.broker_port) == ("mqtt.example.net", 8883)
    assert len(identity.alliance_key) == 32
    assert sorted(p.name for p in folder.iterdir()) == [
        "ca.crt",
        "identity.json",
        "router.crt",
        "router.key",
    ]
    assert (folder / "router.key").stat().st_mode & 0o777 == 0o600
    assert set(json.loads((folder / "identity.json").read_text())) == {
        "router_id",
        "broker_host",
        "broker_port",
        "alliance_key",
        "enrol_url",
    }
    assert identity.enrol_url == f"{desk.url}/v1/enrol"
    certificate = x509.load_pem_x509_certificate((folder / "router.crt").read_bytes())
    with Session(desk.engine) as session:
        router = session.get_one(Router, identity.router_id)
    assert router.cert_fingerprint == fingerprint(certificate)
    assert (folder / "ca.crt").read_text() == desk.ca.certificate_pem


async def test_reused_code_gets_the_same_answer_as_an_unknown_one(
    desk: Desk, tmp_path: Path
) -> None:
    code = desk.claim()
    await desk.enrol(code, tmp_path / "first")

    with pytest.raises(EnrolError) as reused:
        await desk.enrol(code, tmp_path / "second")
    with pytest.raises(EnrolError) as unknown:
        await desk.enrol("AAAA-BBBB-CCCC", tmp_path / "third")

    assert f"(403): {REFUSAL}" in str(reused.value)
    assert str(reused.value) == str(unknown.value)
    assert not (tmp_path / "second").exists()


async def test_two_routers_racing_with_one_code_enrol_exactly_one(
    desk: Desk, tmp_path: Path
) -> None:
    code = desk.claim()

    outcomes = await asyncio.gather(
        desk.enrol(code, tmp_path / "a"), desk.enrol(code, tmp_path / "b"), return_exceptions=True
    )

    assert sorted(type(o).__name__ for o in outcomes) == ["EnrolError", "EnrolledIdentity"]
    refused = next(o for o in outcomes if isinstance(o, EnrolError))
    assert REFUSAL in str(refused)


async def test_expired_code_is_refused(desk: Desk, tmp_path: Path) -> None:
    code = desk.claim(now=NOW - timedelta(days=2), ttl=timedelta(days=1))

    with pytest.raises(EnrolError, match=REFUSAL):
        await desk.enrol(code, tmp_path / "credentials")


async def test_router_refuses_a_cloud_its_ca_does_not_vouch_for(desk: Desk, tmp_path: Path) -> None:
    stranger = CertificateAuthority.create(tmp_path / "stranger", NOW)
    code = desk.claim()

    with pytest.raises(EnrolError, match="not from the cloud CA"):
        await desk.enrol(code, tmp_path / "credentials", stranger.certificate_path)

    assert not (tmp_path / "credentials").exists()
    assert (await desk.enrol(code, tmp_path / "credentials")).router_id  # the code is unspent


async def test_enrolled_router_does_not_enrol_again_by_accident(desk: Desk, tmp_path: Path) -> None:
    folder = tmp_path / "credentials"
    first = await desk.enrol(desk.claim(), folder)

    with pytest.raises(EnrolError, match="is enrolled"):
        await desk.enrol(desk.claim(), folder)
    assert load_identity(folder) == first

    second = await desk.enrol(desk.claim(), folder, replace=True)
    assert load_identity(folder) == second != first


async def test_guessing_codes_is_rate_limited_per_address(engine: Engine, tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca", NOW)
    async with running_desk(engine, ca, tmp_path / "enrol", ("localhost", 8883), 3) as desk:
        for guess in ("AAAA-AAAA-AAAA", "BBBB-BBBB-BBBB", "CCCC-CCCC-CCCC"):
            with pytest.raises(EnrolError, match="403"):
                await desk.enrol(guess, tmp_path / "credentials")

        with pytest.raises(EnrolError, match="429"):
            await desk.enrol(desk.claim(), tmp_path / "credentials")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", "must be a JSON object"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"claim_code": "AAAA-AAAA-AAAA"}', "csr: a non-empty string"),
        (b'{"claim_code": 7, "csr": "x"}', "claim_code: a non-empty string"),
        (b'{"claim_code": "AAAA-AAAA-AAAA", "csr": "x"}', "csr: not a PEM certificate request"),
    ],
)
async def test_malformed_requests_are_refused_naming_the_field(
    desk: Desk, body: bytes, error: str
) -> None:
    trust = ssl.create_default_context(cafile=str(desk.ca.certificate_path))
    async with (
        aiohttp.ClientSession() as client,
        client.post(f"{desk.url}/v1/enrol", data=body, ssl=trust) as answer,
    ):
        assert answer.status == 400
        assert error in (await answer.json())["error"]


async def test_enrolled_router_publishes_to_the_broker_with_its_new_identity(
    cloud_broker: CloudBroker,  # noqa: F811
    engine: Engine,
    tmp_path: Path,
) -> None:
    public = ("localhost", cloud_broker.settings.public_broker_port)
    async with running_desk(engine, cloud_broker.ca, tmp_path / "enrol", public, 20) as desk:
        identity = await desk.enrol(desk.claim(), tmp_path / "credentials")
    service = Peer().as_service(cloud_broker)
    router = Peer(identity.router_id)
    router.client.tls_set(
        ca_certs=str(identity.ca_file),
        certfile=str(identity.certificate_file),
        keyfile=str(identity.key_file),
    )
    try:
        service.subscribe("$share/ingest/loopspot/v1/+/up/#")
        router._connect(identity.broker_host, identity.broker_port)
        topic = f"loopspot/v1/{identity.router_id}/up/status"
        router.publish(topic, b"online")

        assert service.until(topic, b"online") == [(topic, b"online")]
    finally:
        router.close()
        service.close()
