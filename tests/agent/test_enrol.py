"""The router's side of enrolment: its request, its checks of the answer, its stored identity.

A fake cloud over real HTTPS answers what a broken or hostile cloud might; the router must
refuse each answer and write nothing. Each test runs with each key backend (cryptography,
the openssl tool).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.enrol import (
    EnrolError,
    certificate_request,
    enrol,
    enrol_main,
    load_identity,
    new_key,
)
from agent.key_backend import ENVIRONMENT
from cloud.ca import CertificateAuthority, certificate_pem
from cloud.enrol import server_ssl_context
from lab.freeport import free_port

NOW = datetime.now(UTC)
Answer = Callable[[CertificateAuthority, bytes], tuple[int, Any]]


def good(ca: CertificateAuthority, csr: bytes) -> dict[str, Any]:
    return {
        "router_id": "r-fake000000",
        "certificate": certificate_pem(ca.sign_router_request(csr, "r-fake000000", NOW)),
        "ca": ca.certificate_pem,
        "broker_host": "mqtt.example.net",
        "broker_port": 8883,
        "alliance_key": "ab" * 32,
    }


def with_changes(**changes: Any) -> Answer:
    return lambda ca, csr: (200, {**good(ca, csr), **changes})


def other_key(ca: CertificateAuthority, csr: bytes) -> tuple[int, Any]:
    stolen = ca.sign_router_request(certificate_request(new_key()), "r-fake000000", NOW)
    return 200, {**good(ca, csr), "certificate": certificate_pem(stolen)}


def other_name(ca: CertificateAuthority, csr: bytes) -> tuple[int, Any]:
    return 200, {**good(ca, csr), "router_id": "r-other00000"}


def other_issuer(ca: CertificateAuthority, csr: bytes) -> tuple[int, Any]:
    stranger = CertificateAuthority.create(ca.directory.parent / "stranger", NOW)
    return 200, {**good(ca, csr), "ca": stranger.certificate_pem}


@pytest.fixture(autouse=True, params=["cryptography", "openssl"])
def key_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The key backend enrolment uses, picked as an installer could (the environment)."""
    monkeypatch.setenv(ENVIRONMENT, request.param)
    return str(request.param)


class FakeCloud:
    """An HTTPS server on 127.0.0.1 whose /v1/enrol answers whatever `answer` says."""

    def __init__(self, ca: CertificateAuthority, folder: Path) -> None:
        self.ca = ca
        self.credentials = ca.ensure_server_credentials(["127.0.0.1"], folder, NOW)
        self.answer: Answer = lambda ca, csr: (200, good(ca, csr))
        self.requests: list[dict[str, Any]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        status, answer = self.answer(self.ca, body["csr"].encode())
        if isinstance(answer, str):
            return web.Response(status=status, text=answer)
        return web.json_response(answer, status=status)


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[FakeCloud]:
    fake = FakeCloud(CertificateAuthority.create(tmp_path / "ca", NOW), tmp_path / "tls")
    app = web.Application()
    app.router.add_post("/v1/enrol", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(fake.credentials))
    await site.start()
    fake.url = f"https://127.0.0.1:{runner.addresses[0][1]}"
    yield fake
    await runner.cleanup()


async def enrol_with(cloud: FakeCloud, folder: Path, replace: bool = False) -> Any:
    trusted = cloud.ca.certificate_path
    return await asyncio.to_thread(
        enrol, cloud.url, "AAAA-BBBB-CCCC", trusted, folder, replace=replace
    )


def test_request_carries_only_a_key_and_an_empty_subject() -> None:
    key = new_key()

    request = x509.load_pem_x509_csr(certificate_request(key))

    assert request.is_signature_valid
    assert request.subject == x509.Name([])
    assert request.public_key() == serialization.load_pem_private_key(key, None).public_key()


async def test_router_sends_the_code_and_its_request_and_keeps_the_key(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    identity = await enrol_with(cloud, tmp_path / "credentials")

    sent = cloud.requests[0]
    assert sent["claim_code"] == "AAAA-BBBB-CCCC"
    assert "PRIVATE" not in json.dumps(sent)
    key = serialization.load_pem_private_key(identity.key_file.read_bytes(), None)
    assert x509.load_pem_x509_csr(sent["csr"].encode()).public_key() == key.public_key()
    assert identity.alliance_key == bytes.fromhex("ab" * 32)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (other_key, "not for this router's key"),
        (other_name, "names ['r-fake000000'], not 'r-other00000'"),
        (other_issuer, "not issued by the CA"),
        (with_changes(router_id="R/#"), "router_id"),
        (with_changes(broker_port="8883"), "broker_port is missing or not a int"),
        (with_changes(alliance_key="zz"), "unusable"),
        (with_changes(certificate="junk"), "unusable"),
        (lambda ca, csr: (200, "<html>portal</html>"), "no usable answer"),
        (lambda ca, csr: (500, "oops"), "refused enrolment (500)"),
        (lambda ca, csr: (403, {"error": "invalid or expired claim code"}), "invalid or expired"),
    ],
)
async def test_router_refuses_an_unusable_answer_and_writes_nothing(
    cloud: FakeCloud, tmp_path: Path, answer: Answer, error: str
) -> None:
    cloud.answer = answer

    with pytest.raises(EnrolError) as refused:
        await enrol_with(cloud, tmp_path / "credentials")

    assert error in str(refused.value)
    assert not (tmp_path / "credentials").exists()


async def test_stored_identity_loads_back_and_names_its_files(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    folder = tmp_path / "credentials"
    identity = await enrol_with(cloud, folder)

    loaded = load_identity(folder)

    assert loaded == identity
    assert loaded.router_id == "r-fake000000"
    assert (loaded.key_file, loaded.certificate_file, loaded.ca_file) == (
        folder / "router.key",
        folder / "router.crt",
        folder / "ca.crt",
    )
    assert folder.stat().st_mode & 0o777 == 0o700
    assert loaded.key_file.stat().st_mode & 0o777 == 0o600


async def test_identity_whose_key_was_swapped_is_refused(cloud: FakeCloud, tmp_path: Path) -> None:
    folder = tmp_path / "credentials"
    await enrol_with(cloud, folder)
    (folder / "router.key").write_bytes(new_key())

    with pytest.raises(EnrolError, match=r"broken credentials.*not for this router's key"):
        load_identity(folder)


def test_missing_identity_says_to_enrol(tmp_path: Path) -> None:
    with pytest.raises(EnrolError, match=r"not enrolled.*loopspot-agent enrol"):
        load_identity(tmp_path)


@pytest.mark.parametrize("url", ["http://cloud.example/v1/enrol", "cloud.example", "https://"])
def test_only_https_urls_are_accepted(tmp_path: Path, url: str) -> None:
    with pytest.raises(EnrolError, match="must be https"):
        enrol(url, "AAAA-BBBB-CCCC", tmp_path / "ca.crt", tmp_path / "credentials")


def test_unreadable_ca_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(EnrolError, match=r"ca\.crt: unreadable"):
        enrol("https://127.0.0.1:1", "AAAA", tmp_path / "ca.crt", tmp_path / "credentials")


def test_main_exits_2_without_the_cloud_ca_and_1_when_the_cloud_is_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.crt"
    ca = CertificateAuthority.create(tmp_path / "ca", NOW)
    url = f"https://127.0.0.1:{free_port()}"
    folder = str(tmp_path / "credentials")

    assert enrol_main(["AAAA", "--url", url, "--ca", str(missing), "--dir", folder]) == 2
    assert "missing.crt is missing" in capsys.readouterr().err
    code = enrol_main(["AAAA", "--url", url, "--ca", str(ca.certificate_path), "--dir", folder])
    assert code == 1
    assert "cannot reach the cloud" in capsys.readouterr().err


async def test_main_prints_the_router_id_and_the_key_backend(
    cloud: FakeCloud, tmp_path: Path, capsys: pytest.CaptureFixture[str], key_backend: str
) -> None:
    argv = ["AAAA-BBBB-CCCC", "--url", cloud.url, "--ca", str(cloud.ca.certificate_path)]
    argv += ["--dir", str(tmp_path / "credentials"), "--json"]

    assert await asyncio.to_thread(enrol_main, argv) == 0

    said = json.loads(capsys.readouterr().out)
    assert said["router_id"] == "r-fake000000"
    assert said["key_backend"] == key_backend
