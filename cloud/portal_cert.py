"""Certificates for routers' portal names, from an ACME CA (RFC 8555) over DNS-01.

Each router's portal is named `<router_id>.<portal_domain>`. The cloud proves it holds the
operator's domain by publishing the challenge's TXT record through a TxtPublisher, gets
the certificate, and pushes it with its key in the router's config (cloud.cli portal-cert).
The ACME protocol itself (JWS, nonces, polling) is certbot's `acme` library; the DNS
providers are in cloud.acme_dns.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agent.portal.tls import is_portal_name
from agent.wire import check_router_id
from cloud.acme_dns import PortalCertError, TxtPublisher
from cloud.errors import CloudConfigError
from cloud.settings import CloudSettings

ACCOUNT_KEY = Path("acme") / "account.key"  # under data_dir: the cloud's one ACME account
CHALLENGE_LABEL = "_acme-challenge"
ORDER_TIMEOUT = timedelta(seconds=90)
CERTIFICATE_FIELDS = ("portal_name", "portal_certificate", "portal_key")


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A certificate for one portal name: chain (leaf first) and key in PEM, and its end."""

    name: str
    chain: str
    key: str
    not_after: datetime

    def config_fields(self) -> dict[str, str]:
        """The RouterConfig fields that carry it."""
        return {"portal_name": self.name, "portal_certificate": self.chain, "portal_key": self.key}


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


def with_certificate(previous: dict[str, Any], issued: IssuedCertificate) -> dict[str, Any]:
    """The router's last config with the certificate in place: its other settings stay."""
    kept = {k: v for k, v in previous.items() if k not in CERTIFICATE_FIELDS}
    return kept | issued.config_fields()


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


def _portal_key() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())  # small and quick in a router's handshakes
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def obtain_certificate(settings: CloudSettings, name: str, dns: TxtPublisher) -> IssuedCertificate:
    """A new key and a certificate for `name` from settings.acme_directory, over DNS-01."""
    import requests
    from acme import challenges, crypto_util, errors, messages
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
        key_pem = _portal_key()
        order = client.new_order(crypto_util.make_csr(key_pem, [name]))
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
    return IssuedCertificate(name, chain, key_pem.decode(), leaf.not_valid_after_utc)


def describe(issued: IssuedCertificate, now: datetime | None = None) -> dict[str, Any]:
    """What the operator is told: the name, and when the certificate ends."""
    now = now or datetime.now(UTC)
    return {
        "portal_name": issued.name,
        "not_after": issued.not_after.isoformat(timespec="seconds"),
        "days_left": (issued.not_after - now).days,
    }
