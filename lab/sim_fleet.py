"""The simulator's fleet: merchants and sites of one alliance, and routers enrolled for real.

Each router gets a one-time claim code (cloud.enrol_claims.create_claim) and redeems it
with its own key and certificate request through cloud.enrol_claims.redeem, the function
the HTTPS enrolment service calls; its credentials are written as `loopspot-agent enrol`
writes them, and read back with the agent's own checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.credentials import CA_FILE, CERT_FILE, IDENTITY_FILE, KEY_FILE
from agent.enrol import certificate_request, load_identity, new_key
from agent.flash import write_atomically
from cloud.ca import CertificateAuthority, ca_directory
from cloud.db import make_engine, sessions
from cloud.enrol_claims import create_claim, redeem
from cloud.enrol_fleet import FleetError, create_merchant, create_site, merchant_named
from cloud.models import Site
from cloud.settings import CloudSettings

ALLIANCE = "Riverside Alliance"
MERCHANTS = ("Bistro Nord", "Lotus Spa", "Iron Gym", "Cafe Mimi", "Book Nook")
STREETS = ("Main Street", "Station Road", "Market Square", "Harbour Lane", "Park Avenue")
CLAIM_TTL = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class SimRouter:
    """One enrolled router of the simulation: where its credentials are, whose shop it is."""

    router_id: str
    merchant: str
    site: str
    credentials: Path
    alliance_key: bytes


def _site(session: Session, merchant: str, name: str) -> Site:
    owner = merchant_named(session, merchant)
    found = session.scalars(
        select(Site).where(Site.merchant_id == owner.id, Site.name == name)
    ).first()
    return found or create_site(session, merchant, name)


def _write_credentials(folder: Path, key_pem: bytes, answer: dict[str, object]) -> None:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomically(folder / KEY_FILE, key_pem, 0o600)
    write_atomically(folder / CERT_FILE, str(answer["certificate"]).encode(), 0o644)
    write_atomically(folder / CA_FILE, str(answer["ca"]).encode(), 0o644)
    identity = {k: answer[k] for k in ("router_id", "broker_host", "broker_port", "alliance_key")}
    write_atomically(folder / IDENTITY_FILE, (json.dumps(identity) + "\n").encode(), 0o600)


def enrol_fleet(
    settings: CloudSettings, workdir: Path, routers: int, now: datetime
) -> list[SimRouter]:
    """`routers` routers, one per site, over MERCHANTS (all in ALLIANCE), enrolled by code."""
    ca = CertificateAuthority.load(ca_directory(settings.data_dir))
    engine = make_engine(settings.database_url)
    enrolled: list[SimRouter] = []
    try:
        factory = sessions(engine)
        for number in range(routers):
            merchant = MERCHANTS[number % len(MERCHANTS)]
            site_name = f"{STREETS[(number // len(MERCHANTS)) % len(STREETS)]} {number + 1}"
            with factory() as session:
                try:
                    create_merchant(session, merchant, ALLIANCE)
                except FleetError:  # there from an earlier run: add to it
                    session.rollback()
                site = _site(session, merchant, site_name)
                router_id, code = create_claim(session, site.id, now, CLAIM_TTL)
                session.commit()
                key_pem = new_key()  # PEM, made as the router makes it
                answer = redeem(
                    session,
                    code,
                    certificate_request(key_pem),
                    now,
                    ca,
                    broker_host=settings.public_broker_host,
                    broker_port=settings.public_broker_port,
                ).to_json()
            folder = workdir / router_id / "credentials"
            _write_credentials(folder, key_pem, answer)
            identity = load_identity(folder)  # the agent's own checks of what it was given
            enrolled.append(
                SimRouter(router_id, merchant, site_name, folder, identity.alliance_key)
            )
    finally:
        engine.dispose()
    return enrolled
