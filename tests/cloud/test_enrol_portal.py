"""A router gets its portal's certificate from the enrolment server, for a key it keeps.

The real path without namespaces: agent.portal.certify on one side, over mutual TLS, the
cloud's enrolment app on the other, and Debian's pebble behind it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Engine

from agent.certificate import read_certificate
from agent.enrol import EnrolError
from agent.portal.certify import CHAIN, KEY, certify, fresh_until, names_of
from cloud.ca import CertificateAuthority
from cloud.settings import CloudSettings
from lab.acme import PebbleStack
from tests.cloud.test_enrol_http import NOW, Desk, running_desk

ZONE = "portal.example.test"


@pytest.fixture
def pebble(tmp_path: Path) -> Iterator[PebbleStack]:
    stack = PebbleStack(tmp_path / "pebble").start()
    try:
        yield stack
    finally:
        stack.close()


async def _desk(engine: Engine, tmp_path: Path, settings: CloudSettings) -> AsyncIterator[Desk]:
    ca = CertificateAuthority.create(tmp_path / "ca", NOW)
    broker = ("mqtt.example.net", 8883)
    async with running_desk(engine, ca, tmp_path / "enrol", broker, 20, settings) as desk:
        yield desk


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_enrolled_router_gets_a_certificate_for_its_own_name_and_key(
    engine: Engine, tmp_path: Path, pebble: PebbleStack
) -> None:
    settings = CloudSettings(
        data_dir=tmp_path / "cloud",
        portal_domain=ZONE,
        acme_directory=pebble.directory,
        acme_ca_file=str(pebble.tls_ca),
        acme_dns=pebble.dns_api,
    )
    async for desk in _desk(engine, tmp_path, settings):
        identity = await desk.enrol(desk.claim(), tmp_path / "router")
        name = f"{identity.router_id}.{ZONE}"
        tls_dir = tmp_path / "router" / "portal-tls"
        ends = await asyncio.to_thread(certify, tls_dir, tmp_path / "router", name)
        assert fresh_until(tls_dir, name, datetime.now(UTC)) == ends
        leaf = x509.load_pem_x509_certificate((tls_dir / CHAIN).read_bytes())
        key = serialization.load_pem_private_key((tls_dir / KEY).read_bytes(), None)
        assert leaf.public_key() == key.public_key()
        assert names_of(read_certificate((tls_dir / CHAIN).read_bytes())) == [name]
        assert (tls_dir / KEY).stat().st_mode & 0o077 == 0
        other = f"someone-else.{ZONE}"
        with pytest.raises(EnrolError, match="may name"):
            await asyncio.to_thread(certify, tls_dir, tmp_path / "router", other)
        assert fresh_until(tls_dir, name, datetime.now(UTC)) == ends, "the refusal kept the pair"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_portal_endpoint_wants_a_router_and_a_configured_cloud(
    engine: Engine, tmp_path: Path
) -> None:
    async for desk in _desk(engine, tmp_path, CloudSettings()):
        identity = await desk.enrol(desk.claim(), tmp_path / "router")
        with pytest.raises(EnrolError, match="no portal certificates"):
            await asyncio.to_thread(
                certify, tmp_path / "tls", tmp_path / "router", f"{identity.router_id}.{ZONE}"
            )
        trust = ssl.create_default_context(cafile=str(desk.ca.certificate_path))
        async with (
            aiohttp.ClientSession() as client,
            client.post(f"{desk.url}/v1/portal-cert", json={"csr": "x"}, ssl=trust) as answer,
        ):
            assert answer.status in (401, 503)
