"""Certificate renewal: an enrolled router presents its current certificate over mutual TLS
and gets one for a new key; only the current certificate renews, once."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import urllib.parse
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from agent.enrol import EnrolledIdentity, certificate_request, new_key
from cloud.ca import CertificateAuthority, certificate_pem, fingerprint
from cloud.enrol import CERTIFICATE_REQUIRED, RENEWAL_REFUSAL, server_ssl_context
from cloud.enrol_renew import Renewal, RenewalRefused, renew
from cloud.models import Router
from tests.cloud import test_enrol_http
from tests.cloud.conftest import Enrol, race
from tests.cloud.test_enrol_http import NOW, Desk, running_desk

desk = test_enrol_http.desk  # the enrolment service over HTTPS, with a fresh CA

YEAR_LESS_A_MONTH = timedelta(days=335)


class ClientCertificate:
    """A certificate and key a caller presents over TLS, both PEM files."""

    def __init__(self, certificate: Path, key: Path) -> None:
        self.certificate = certificate
        self.key = key

    @classmethod
    def of(cls, identity: EnrolledIdentity) -> ClientCertificate:
        return cls(identity.certificate_file, identity.key_file)

    @classmethod
    def write(
        cls, folder: Path, certificate: x509.Certificate, key_pem: bytes
    ) -> ClientCertificate:
        """Store a certificate and its key (PEM) in `folder`, for presenting over TLS."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "router.crt").write_text(certificate_pem(certificate))
        (folder / "router.key").write_bytes(key_pem)
        return cls(folder / "router.crt", folder / "router.key")

    @property
    def x509(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.certificate.read_bytes())


def client_context(
    ca: CertificateAuthority,
    router: ClientCertificate | None,
    version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
) -> ssl.SSLContext:
    """A client context trusting `ca`, presenting `router` if given, TLS `version` at most."""
    tls = ssl.create_default_context(cafile=str(ca.certificate_path))
    tls.maximum_version = version
    if router is not None:
        tls.load_cert_chain(router.certificate, router.key)
    return tls


async def post_renew(desk: Desk, body: bytes, router: ClientCertificate | None) -> tuple[int, Any]:
    """POST `body` to /v1/renew, presenting `router`'s certificate if given; (status, JSON)."""
    tls = client_context(desk.ca, router)
    async with (
        aiohttp.ClientSession() as client,
        client.post(f"{desk.url}/v1/renew", data=body, ssl=tls) as answer,
    ):
        return answer.status, await answer.json()


def csr_body(pem: bytes) -> bytes:
    """The renewal body for a request for the PEM key `pem`, or for the PEM request `pem`."""
    csr = pem if b"CERTIFICATE REQUEST" in pem else certificate_request(pem)
    return json.dumps({"csr": csr.decode()}).encode()


def stored_fingerprint(engine: Engine, router_id: str) -> str | None:
    with Session(engine) as session:
        return session.get_one(Router, router_id).cert_fingerprint


def server_sees(server: ssl.SSLContext, client: ssl.SSLContext) -> bytes | None:
    """Run a handshake in memory; the client certificate (DER) the server accepted, if any.

    The server's refusal is raised as it is (ssl.SSLCertVerificationError).
    """
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_end = client.wrap_bio(to_client, to_server, server_hostname="127.0.0.1")
    server_end = server.wrap_bio(to_server, to_client, server_side=True)
    done = {client_end: False, server_end: False}
    for _ in range(10):
        for end in (client_end, server_end):
            if not done[end]:
                try:
                    end.do_handshake()
                    done[end] = True
                except ssl.SSLWantReadError:
                    pass
        if all(done.values()):
            return server_end.getpeercert(binary_form=True)
    raise AssertionError("the handshake did not finish")


def first_read(desk: Desk, client: ssl.SSLContext) -> bytes:
    """Connect to the desk over TLS and read one byte; a server that hangs up raises."""
    url = urllib.parse.urlsplit(desk.url)
    with (
        socket.create_connection((url.hostname or "", url.port or 443), timeout=10) as raw,
        client.wrap_socket(
            raw, server_hostname=url.hostname, suppress_ragged_eofs=False
        ) as connection,
    ):
        return connection.recv(1)


def other_routers_request() -> bytes:
    other = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "r-someoneelse")])
    request = x509.CertificateSigningRequestBuilder().subject_name(other)
    key = ec.generate_private_key(ec.SECP256R1())
    return request.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.fixture
async def enrolled(desk: Desk, tmp_path: Path) -> EnrolledIdentity:
    """A router enrolled through /v1/enrol with a claim code."""
    return await desk.enrol(desk.claim(), tmp_path / "credentials")


async def test_router_renews_its_certificate_for_a_new_key_before_it_expires(
    desk: Desk,
    enrolled: EnrolledIdentity,
) -> None:
    old = ClientCertificate.of(enrolled).x509
    desk.clock.ahead = YEAR_LESS_A_MONTH
    key = new_key()

    status, answer = await post_renew(desk, csr_body(key), ClientCertificate.of(enrolled))

    assert status == 200
    assert set(answer) == {"router_id", "certificate", "not_after"}
    assert answer["router_id"] == enrolled.router_id
    renewed = x509.load_pem_x509_certificate(answer["certificate"].encode())
    assert renewed.public_key() == serialization.load_pem_private_key(key, None).public_key()
    cn = renewed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [name.value for name in cn] == [enrolled.router_id]
    renewed.verify_directly_issued_by(desk.ca.certificate)
    assert renewed.not_valid_after_utc > old.not_valid_after_utc + timedelta(days=300)
    assert answer["not_after"] == renewed.not_valid_after_utc.isoformat()
    assert stored_fingerprint(desk.engine, enrolled.router_id) == fingerprint(renewed)


async def test_after_a_renewal_only_the_new_certificate_may_renew(
    desk: Desk,
    enrolled: EnrolledIdentity,
    tmp_path: Path,
) -> None:
    old = ClientCertificate.of(enrolled)
    key = new_key()
    status, answer = await post_renew(desk, csr_body(key), old)
    assert status == 200
    new = ClientCertificate.write(
        tmp_path / "renewed", x509.load_pem_x509_certificate(answer["certificate"].encode()), key
    )

    assert await post_renew(desk, csr_body(new_key()), old) == (403, {"error": RENEWAL_REFUSAL})
    assert (await post_renew(desk, csr_body(new_key()), new))[0] == 200


async def test_a_retired_router_may_not_renew(desk: Desk, enrolled: EnrolledIdentity) -> None:
    from cloud.enrol_fleet import retire_router

    with Session(desk.engine) as session:
        retire_router(session, enrolled.router_id)
        session.commit()
    refused = await post_renew(desk, csr_body(new_key()), ClientCertificate.of(enrolled))
    assert refused == (403, {"error": RENEWAL_REFUSAL})


async def test_cloud_certificate_of_no_enrolled_router_may_not_renew(
    desk: Desk,
    tmp_path: Path,
) -> None:
    key = new_key()
    stray = desk.ca.sign_router_request(certificate_request(key), "r-nosuchrouter", NOW)
    router = ClientCertificate.write(tmp_path / "stray", stray, key)

    assert await post_renew(desk, csr_body(new_key()), router) == (403, {"error": RENEWAL_REFUSAL})


async def test_renewal_without_a_client_certificate_is_unauthorised(
    desk: Desk,
) -> None:
    answer = await post_renew(desk, csr_body(new_key()), None)

    assert answer == (401, {"error": CERTIFICATE_REQUIRED})


def test_enrol_server_takes_no_certificate_or_one_from_its_ca_and_refuses_a_strangers(
    tmp_path: Path,
) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca", NOW)
    stranger = CertificateAuthority.create(tmp_path / "stranger", NOW)
    credentials = ca.ensure_server_credentials(["127.0.0.1"], tmp_path / "enrol", NOW)
    server = server_ssl_context(credentials, client_ca=ca.certificate_path)
    key = new_key()
    ours = ca.sign_router_request(certificate_request(key), "r-ours", NOW)
    theirs = stranger.sign_router_request(certificate_request(key), "r-ours", NOW)

    assert server_sees(server, client_context(ca, None)) is None
    genuine = ClientCertificate.write(tmp_path / "ours", ours, key)
    assert server_sees(server, client_context(ca, genuine)) == ours.public_bytes(
        serialization.Encoding.DER
    )
    forged = ClientCertificate.write(tmp_path / "theirs", theirs, key)
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        server_sees(server, client_context(ca, forged))


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_certificate_from_another_ca_fails_the_handshake(
    desk: Desk,
    enrolled: EnrolledIdentity,
    tmp_path: Path,
    version: ssl.TLSVersion,
) -> None:
    stranger = CertificateAuthority.create(tmp_path / "stranger", NOW)
    key = new_key()
    forged = stranger.sign_router_request(certificate_request(key), enrolled.router_id, NOW)
    impostor = ClientCertificate.write(tmp_path / "impostor", forged, key)
    before = stored_fingerprint(desk.engine, enrolled.router_id)

    # asyncio closes the connection without sending the TLS alert: with TLS 1.2 the client's
    # handshake fails, with 1.3 it completes and the first read meets an EOF.
    with pytest.raises(ssl.SSLError):
        await asyncio.to_thread(first_read, desk, client_context(desk.ca, impostor, version))
    with pytest.raises(aiohttp.ClientError):
        await post_renew(desk, csr_body(new_key()), impostor)

    assert stored_fingerprint(desk.engine, enrolled.router_id) == before


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", "must be a JSON object"),
        (b"[1, 2]", "must be a JSON object"),
        (b"{}", "csr: a non-empty string is required"),
        (b'{"csr": 7}', "csr: a non-empty string is required"),
        (b'{"csr": "garbage"}', "csr: not a PEM certificate request"),
        (
            csr_body(other_routers_request()),
            "csr: subject CN ['r-someoneelse'] differs",
        ),
    ],
)
async def test_malformed_renewals_are_refused_naming_the_field_and_change_nothing(
    desk: Desk,
    enrolled: EnrolledIdentity,
    body: bytes,
    error: str,
) -> None:
    before = stored_fingerprint(desk.engine, enrolled.router_id)

    status, answer = await post_renew(desk, body, ClientCertificate.of(enrolled))

    assert status == 400
    assert error in answer["error"]
    assert stored_fingerprint(desk.engine, enrolled.router_id) == before
    assert (await post_renew(desk, csr_body(new_key()), ClientCertificate.of(enrolled)))[0] == 200


async def test_renewals_are_rate_limited_per_router(engine: Engine, tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca", NOW)
    async with running_desk(engine, ca, tmp_path / "enrol", ("localhost", 8883), 3) as desk:
        busy = ClientCertificate.of(await desk.enrol(desk.claim(), tmp_path / "busy"))
        quiet = ClientCertificate.of(await desk.enrol(desk.claim(), tmp_path / "quiet"))
        for _ in range(3):
            assert (await post_renew(desk, b'{"csr": "x"}', busy))[0] == 400

        assert (await post_renew(desk, csr_body(new_key()), busy))[0] == 429
        assert (await post_renew(desk, csr_body(new_key()), quiet))[0] == 200


def test_two_concurrent_renewals_with_one_certificate_give_one_new_certificate(
    engine: Engine, enrol: Enrol, tmp_path: Path
) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca", NOW)
    (router_id,) = enrol("r-racer")
    current = ca.sign_router_request(certificate_request(new_key()), router_id, NOW)
    with Session(engine) as session:
        session.get_one(Router, router_id).cert_fingerprint = fingerprint(current)
        session.commit()

    def attempt() -> Renewal:
        csr = certificate_request(new_key())
        with Session(engine) as session:
            return renew(session, router_id, fingerprint(current), csr, NOW, ca)

    outcomes = race(attempt, RenewalRefused)

    assert sorted(type(o).__name__ for o in outcomes) == ["Renewal", "str"]
    assert "replaced" in outcomes
    (winner,) = (o for o in outcomes if isinstance(o, Renewal))
    won = x509.load_pem_x509_certificate(winner.certificate_pem.encode())
    assert stored_fingerprint(engine, router_id) == fingerprint(won)


async def test_renewal_is_unavailable_while_the_database_is(
    desk: Desk,
    enrolled: EnrolledIdentity,
) -> None:
    with desk.engine.begin() as connection:
        connection.execute(text("ALTER TABLE routers RENAME TO routers_away"))

    answer = await post_renew(desk, csr_body(new_key()), ClientCertificate.of(enrolled))

    assert answer == (503, {"error": "renewal is unavailable; try again later"})


async def test_the_routers_own_renew_command_swaps_in_a_new_pair_the_cloud_knows(
    desk: Desk, tmp_path: Path
) -> None:
    from agent.enrol import load_identity
    from agent.renewal import renewal_main

    folder = tmp_path / "credentials"
    enrolled = await desk.enrol(desk.claim(), folder)
    old_key = enrolled.key_file.read_bytes()

    not_due = await asyncio.to_thread(renewal_main, folder, only_if_due=True, as_json=False)
    assert not_due == 0 and enrolled.key_file.read_bytes() == old_key  # a year left: nothing

    forced = await asyncio.to_thread(renewal_main, folder, only_if_due=False, as_json=False)
    assert forced == 0
    renewed = load_identity(folder)  # checks the new pair: key, CN, issuer
    assert renewed.key_file.read_bytes() != old_key
    assert sorted(p.name for p in folder.iterdir()) == [
        "ca.crt",
        "identity.json",
        "router.crt",
        "router.key",
    ]
    presented = x509.load_pem_x509_certificate(renewed.certificate_file.read_bytes())
    with Session(desk.engine) as session:
        router = session.get_one(Router, renewed.router_id)
        assert router.cert_fingerprint == fingerprint(presented)
