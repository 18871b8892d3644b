"""Certificates for routers' portal names, from an ACME CA (RFC 8555) over DNS-01.

Each router's portal is named `<router_id>.<portal_domain>`; `loopspot-cloud portal-cert`
pushes that name in the router's config. The router makes a key (it never leaves the
router) and sends a certificate request for the name to the enrolment server, over mutual
TLS with its own certificate (agent.portal.certify). Here the request is checked: that
router, its current certificate, its own name and nothing else. Then the order is placed
with the router's request: the cloud proves it holds the operator's domain by publishing
the challenge's TXT record (cloud.acme_dns), and answers the chain. The ACME protocol itself
(JWS, nonces, polling) is certbot's `acme` library.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy.orm import Session

from agent.portal.tls import is_portal_name
from agent.wire import check_router_id
from cloud.acme_dns import PortalCertError, TxtPublisher
from cloud.enrol_renew import Presented, RenewalRefused
from cloud.errors import CloudConfigError, CloudError
from cloud.models import Router
from cloud.settings import CloudSettings

ACCOUNT_KEY = Path("acme") / "account.key"  # under data_dir: the cloud's one ACME account
CHALLENGE_LABEL = "_acme-challenge"
ORDER_TIMEOUT = timedelta(seconds=90)
PORTAL_FIELDS = ("portal_name",)  # what portal-cert sets in a config; config push keeps it
ACCEPTED_CURVES = (ec.SECP256R1, ec.SECP384R1)
MIN_RSA_BITS = 2048


class PortalRequestRefused(CloudError):
    """A router's certificate request the cloud will not order; names what is wrong."""


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A certificate for one portal name: the chain (leaf first) in PEM, and its end."""

    name: str
    chain: str
    not_after: datetime

    def to_json(self) -> dict[str, str]:
        """The JSON object the enrolment server answers the router with."""
        return {"certificate": self.chain, "not_after": self.not_after.isoformat()}


def portal_name(router_id: str, domain: str) -> str:
    """`<router_id>.<domain>`, the router's portal name; CloudConfigError if not a DNS name."""
    check_router_id(router_id)
    name = f"{router_id}.{domain.strip().rstrip('.').lower()}"
    if not domain.strip() or not is_portal_name(name):
        raise CloudConfigError(
            f"portal_domain: {domain!r} gives no DNS name for routers; "
            "set LOOPSPOT_PORTAL_DOMAIN to a zone you run, e.g. portal.example.com"
        )
    return name


def challenge_name(name: str) -> str:
    """Where DNS-01 wants the TXT record for `name` (RFC 8555, 8.4), fully qualified."""
    return f"{CHALLENGE_LABEL}.{name}."


def with_portal_name(previous: dict[str, Any], name: str) -> dict[str, Any]:
    """The router's last config with its portal name: its other settings stay."""
    return previous | {"portal_name": name}


def check_request(csr_pem: str, name: str) -> bytes:
    """The request as PEM if it asks for `name` alone, signed by a fitting key."""
    try:
        request = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        raise PortalRequestRefused("csr: not a PEM certificate request") from None
    if not request.is_signature_valid:
        raise PortalRequestRefused("csr: its signature does not verify")
    key = request.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ACCEPTED_CURVES):
            raise PortalRequestRefused(f"csr: curve {key.curve.name}; use P-256 or P-384")
    elif not (isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS):
        raise PortalRequestRefused("csr: the key must be EC P-256 or P-384, or RSA-2048 or more")
    try:
        names = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise PortalRequestRefused(f"csr: names nothing; it must name {name}") from None
    asked = [str(n.value) for n in names]
    if names.get_values_for_type(x509.DNSName) != [name] or len(asked) != 1:
        raise PortalRequestRefused(f"csr: names {asked!r}; this router may name {name} only")
    return request.public_bytes(serialization.Encoding.PEM)


def certify_router(
    session: Session,
    settings: CloudSettings,
    presented: Presented,
    csr_pem: str,
    dns: TxtPublisher,
) -> IssuedCertificate:
    """A certificate for the presenting router's own portal name, for its request.

    RenewalRefused when the presented certificate is not the router's current one,
    PortalRequestRefused for a request of another name, PortalCertError if the CA or DNS fails.
    """
    router = session.get(Router, presented.router_id)
    if router is None:
        raise RenewalRefused("unknown", f"no router {presented.router_id!r}")
    if router.cert_fingerprint != presented.fingerprint:
        raise RenewalRefused("replaced", f"router {router.id} presented a replaced certificate")
    session.rollback()  # the order takes seconds: hold no transaction open meanwhile
    name = portal_name(presented.router_id, settings.portal_domain)
    return obtain_certificate(settings, check_request(csr_pem, name), name, dns)


def _account_key(data_dir: Path) -> rsa.RSAPrivateKey:
    path = data_dir / ACCOUNT_KEY
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise PortalCertError(f"{path} is not an RSA key; remove it to make a new account")
        return key
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.touch(mode=0o600)
    path.write_bytes(pem)
    return key


def obtain_certificate(
    settings: CloudSettings, csr_pem: bytes, name: str, dns: TxtPublisher
) -> IssuedCertificate:
    """A certificate for `name` and the key of `csr_pem`, from settings.acme_directory."""
    import requests
    from acme import challenges, errors, messages
    from acme.client import ClientNetwork, ClientV2
    from josepy.jwk import JWKRSA

    account = JWKRSA(key=_account_key(settings.data_dir))
    # requests takes a CA bundle's path where acme says bool: the operator's own trust.
    verify = cast(bool, settings.acme_ca_file or True)
    net = ClientNetwork(account, user_agent="loopspot-cloud", verify_ssl=verify)
    published: list[str] = []
    try:
        client = ClientV2(ClientV2.get_directory(settings.acme_directory, net), net)
        registration = messages.NewRegistration.from_data(
            email=settings.acme_email or None, terms_of_service_agreed=True
        )
        try:
            client.new_account(registration)
        except errors.ConflictError as known:  # this key has an account already
            net.account = messages.RegistrationResource(
                uri=known.location, body=messages.Registration()
            )
        order = client.new_order(csr_pem)
        answers = []
        for authorization in order.authorizations:
            if authorization.body.status == messages.STATUS_VALID:
                continue  # the CA reuses a recent proof of this name
            challenge = next(
                (c for c in authorization.body.challenges if isinstance(c.chall, challenges.DNS01)),
                None,
            )
            if challenge is None:
                raise PortalCertError(f"the CA offers no dns-01 challenge for {name}")
            response, validation = challenge.response_and_validation(account)
            fqdn = challenge_name(authorization.body.identifier.value)
            dns.publish(fqdn, validation)
            published.append(fqdn)
            answers.append((challenge, response))
        for challenge, response in answers:
            client.answer_challenge(challenge, response)
        done = client.poll_and_finalize(order, datetime.now() + ORDER_TIMEOUT)
    except (errors.Error, messages.Error, requests.RequestException) as error:
        raise PortalCertError(f"ACME {settings.acme_directory}: {error}") from None
    finally:
        for fqdn in published:
            # The certificate stands; a stale TXT record only waits for the next order.
            with contextlib.suppress(PortalCertError):
                dns.withdraw(fqdn)
    chain = done.fullchain_pem
    leaf = x509.load_pem_x509_certificate(chain.encode())
    return IssuedCertificate(name, chain, leaf.not_valid_after_utc)
