"""Claim codes on SQLite and PostgreSQL: made once, redeemed once, refused with a reason."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from agent.enrol import certificate_request, new_key
from cloud.ca import CertificateAuthority, CertificateRequestError, fingerprint
from cloud.enrol_claims import (
    CODE_ALPHABET,
    ClaimRefused,
    Enrolment,
    create_claim,
    hash_code,
    new_code,
    normalise_code,
    redeem,
)
from cloud.enrol_fleet import FleetError, create_merchant, create_site, list_routers
from cloud.models import Alliance, ClaimCode, Merchant, Router
from tests.cloud.conftest import race

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path / "ca", NOW - DAY)


@pytest.fixture
def site_id(engine: Engine) -> int:
    with Session(engine) as session:
        create_merchant(session, "Bistro Nord")
        site = create_site(session, "Bistro Nord", "Main Street")
        session.commit()
        return site.id


def claim(engine: Engine, site_id: int, now: datetime = NOW, ttl: timedelta = DAY) -> str:
    with Session(engine) as session:
        _, code = create_claim(session, site_id, now, ttl)
        session.commit()
    return code


def use(engine: Engine, ca: CertificateAuthority, code: str, csr: bytes | None = None) -> Enrolment:
    with Session(engine) as session:
        return redeem(
            session,
            code,
            csr or certificate_request(new_key()),
            NOW,
            ca,
            broker_host="mqtt.example.net",
            broker_port=8883,
        )


def test_claim_makes_a_router_and_stores_only_the_codes_hash(engine: Engine, site_id: int) -> None:
    with Session(engine) as session:
        router_id, code = create_claim(session, site_id, NOW, DAY)
        session.commit()
        stored = session.scalars(select(ClaimCode)).one()
        router = session.get_one(Router, router_id)

    assert re.fullmatch(r"r-[0-9a-z]{10}", router_id)
    assert re.fullmatch(r"[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}", code)
    assert stored.code_hash == hash_code(code.replace("-", ""))
    assert code.replace("-", "") not in stored.code_hash
    assert stored.router_id == router_id and router.site_id == site_id
    assert router.enrolled_at is None


def test_router_gets_its_certificate_and_its_alliances_key(
    engine: Engine, site_id: int, ca: CertificateAuthority
) -> None:
    code = claim(engine, site_id)

    enrolment = use(engine, ca, code)

    certificate = x509.load_pem_x509_certificate(enrolment.certificate_pem.encode())
    cn = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == enrolment.router_id
    assert enrolment.ca_pem == ca.certificate_pem
    assert (enrolment.broker_host, enrolment.broker_port) == ("mqtt.example.net", 8883)
    with Session(engine) as session:
        router = session.get_one(Router, enrolment.router_id)
        merchant = session.scalars(select(Merchant)).one()
        alliance = session.get_one(Alliance, merchant.alliance_id)
    assert enrolment.alliance_key == alliance.device_key.hex()
    assert len(alliance.device_key) == 32
    assert router.cert_fingerprint == fingerprint(certificate)
    assert router.enrolled_at is not None


def test_a_used_code_is_refused(engine: Engine, site_id: int, ca: CertificateAuthority) -> None:
    code = claim(engine, site_id)
    use(engine, ca, code)

    with pytest.raises(ClaimRefused) as refused:
        use(engine, ca, code)

    assert refused.value.reason == "used"


def test_an_expired_code_is_refused(engine: Engine, site_id: int, ca: CertificateAuthority) -> None:
    code = claim(engine, site_id, now=NOW - 2 * DAY, ttl=DAY)

    with pytest.raises(ClaimRefused) as refused:
        use(engine, ca, code)

    assert refused.value.reason == "expired"


@pytest.mark.parametrize(
    ("code", "reason"), [("ABCD-EFGH-JKMN", "unknown"), ("hello", "malformed")]
)
def test_unknown_and_malformed_codes_are_refused(
    engine: Engine, site_id: int, ca: CertificateAuthority, code: str, reason: str
) -> None:
    claim(engine, site_id)

    with pytest.raises(ClaimRefused) as refused:
        use(engine, ca, code)

    assert refused.value.reason == reason


def test_code_typed_sloppily_still_works(
    engine: Engine, site_id: int, ca: CertificateAuthority
) -> None:
    code = claim(engine, site_id)
    sloppy = " " + code.lower().replace("-", " ").replace("0", "o").replace("1", "l") + " "

    assert use(engine, ca, sloppy).router_id


def test_a_bad_request_leaves_the_code_usable(
    engine: Engine, site_id: int, ca: CertificateAuthority
) -> None:
    code = claim(engine, site_id)
    other = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "r-someoneelse")])
    builder = x509.CertificateSigningRequestBuilder().subject_name(other)
    key = ec.generate_private_key(ec.SECP256R1())
    wrong_cn = builder.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM)

    with pytest.raises(CertificateRequestError, match="differs"):
        use(engine, ca, code, wrong_cn)
    with pytest.raises(CertificateRequestError, match="not a PEM"):
        use(engine, ca, code, b"garbage")

    assert use(engine, ca, code).router_id


def test_two_concurrent_redeems_of_one_code_give_one_router(
    engine: Engine, site_id: int, ca: CertificateAuthority
) -> None:
    code = claim(engine, site_id)
    outcomes = race(lambda: use(engine, ca, code, certificate_request(new_key())), ClaimRefused)

    assert sorted(type(o).__name__ for o in outcomes) == ["Enrolment", "str"]
    assert "used" in outcomes
    with Session(engine) as session:
        enrolled = session.scalars(select(Router).where(Router.enrolled_at.is_not(None))).all()
    assert len(enrolled) == 1


def test_claim_for_an_unknown_site_is_refused(engine: Engine, site_id: int) -> None:
    with Session(engine) as session, pytest.raises(FleetError, match="no site with id"):
        create_claim(session, site_id + 1000, NOW, DAY)


def test_router_listing_shows_who_waits_and_who_is_enrolled(
    engine: Engine, site_id: int, ca: CertificateAuthority
) -> None:
    waiting = claim(engine, site_id)
    claim(engine, site_id, now=NOW - 2 * DAY)
    enrolled = use(engine, ca, claim(engine, site_id)).router_id

    with Session(engine) as session:
        rows = {r.router_id: r for r in list_routers(session, NOW)}

    assert sorted(r.state for r in rows.values()) == [
        "awaiting-enrolment",
        "claim-expired",
        "unknown",
    ]
    assert rows[enrolled].state == "unknown" and rows[enrolled].enrolled_at is not None
    assert all(r.merchant == "Bistro Nord" and r.site == "Main Street" for r in rows.values())
    assert waiting  # the code itself is never listed


@given(st.text(max_size=40))
def test_normalising_any_text_gives_a_canonical_code_or_none(text: str) -> None:
    normalised = normalise_code(text)

    assert normalised is None or (
        len(normalised) == 12 and all(c in CODE_ALPHABET for c in normalised)
    )


@given(st.integers(min_value=0, max_value=2**60 - 1), st.sampled_from(["-", " ", "", "  - "]))
def test_every_code_survives_retyping(value: int, separator: str) -> None:
    chars = "".join(CODE_ALPHABET[(value >> (5 * i)) & 31] for i in range(12))
    typed = separator.join([chars[:4], chars[4:8], chars[8:]]).lower()

    assert normalise_code(typed) == chars


def test_new_codes_are_well_formed_and_distinct() -> None:
    codes = {new_code() for _ in range(1000)}

    assert len(codes) == 1000
    assert all(normalise_code(c) == c.replace("-", "") for c in codes)
