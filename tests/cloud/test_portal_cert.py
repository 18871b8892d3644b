"""The portal certificate's pure parts: names, the DNS seam, and what the push carries."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from agent.keys import CryptographyKeys
from agent.portal.certify import certificate_request
from cloud.acme_dns import ChallTestSrv, PortalCertError, txt_publisher
from cloud.cli import main
from cloud.db import sessions
from cloud.enrol_renew import Presented, RenewalRefused
from cloud.errors import CloudConfigError
from cloud.fleet_push import PushError, latest_config, push_config
from cloud.models import Router
from cloud.portal_cert import (
    PortalRequestRefused,
    certify_router,
    challenge_name,
    check_request,
    portal_name,
    with_portal_name,
)
from cloud.settings import CloudSettings
from lab.freeport import free_port
from tests.cloud.conftest import Enrol

NAME = "r1.portal.example.com"


def test_a_routers_portal_is_named_under_the_operators_domain() -> None:
    assert portal_name("r1", "Portal.Example.com.") == "r1.portal.example.com"
    assert challenge_name("r1.portal.example.com") == "_acme-challenge.r1.portal.example.com."


@pytest.mark.parametrize("domain", ["", "  ", "example..com", "bad_domain.com", "*.example.com"])
def test_a_domain_that_makes_no_dns_name_is_refused_naming_the_setting(domain: str) -> None:
    with pytest.raises(CloudConfigError, match=r"portal_domain.*LOOPSPOT_PORTAL_DOMAIN"):
        portal_name("r1", domain)


def test_portal_cert_keeps_the_routers_other_settings() -> None:
    previous = {"site_name": "Spa", "portal_name": "old.example.com"}
    assert with_portal_name(previous, NAME) == {"site_name": "Spa", "portal_name": NAME}


def _request(name: str = NAME) -> str:
    keys = CryptographyKeys()
    return certificate_request(keys, keys.new_key(), name).decode()


def test_a_routers_request_for_its_own_name_is_ordered_as_it_is() -> None:
    request = _request()
    assert check_request(request, NAME) == request.encode()


@pytest.mark.parametrize(
    ("request_pem", "reason"),
    [
        ("not pem", "not a PEM certificate request"),
        (_request("r2.portal.example.com"), r"may name r1\.portal\.example\.com only"),
        (_request("portal.example.com"), "may name"),
    ],
)
def test_a_request_for_another_name_is_refused_naming_what_is_wrong(
    request_pem: str, reason: str
) -> None:
    with pytest.raises(PortalRequestRefused, match=reason):
        check_request(request_pem, NAME)


def test_a_weak_key_is_refused() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), False)
    pem = builder.sign(weak, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(PortalRequestRefused, match="RSA-2048"):
        check_request(pem, NAME)


def test_only_the_router_with_its_current_certificate_gets_one(
    engine: Engine, enrol: Enrol
) -> None:
    (router_id,) = enrol("r-portal")
    with Session(engine) as session, session.begin():
        session.execute(update(Router).values(cert_fingerprint="current"))
    settings = CloudSettings(portal_domain="portal.example.com")
    with Session(engine) as session:
        for presented, reason in (
            (Presented("r-nobody", "current"), "unknown"),
            (Presented(router_id, "replaced-one"), "replaced"),
        ):
            with pytest.raises(RenewalRefused, match=reason):
                certify_router(session, settings, presented, _request(), Unpublished())
        with pytest.raises(PortalRequestRefused, match=r"r-portal\.portal\.example\.com only"):
            certify_router(
                session, settings, Presented(router_id, "current"), _request(), Unpublished()
            )


class Unpublished:
    """A DNS provider that is never reached in these tests."""

    def publish(self, fqdn: str, value: str) -> None:
        """Refuse: no order gets this far."""
        raise AssertionError(f"published {fqdn}")

    def withdraw(self, fqdn: str) -> None:
        """Nothing to withdraw."""


def test_only_a_known_dns_provider_is_taken() -> None:
    provider = txt_publisher("challtestsrv+http://127.0.0.1:8055/")
    assert isinstance(provider, ChallTestSrv) and provider.url == "http://127.0.0.1:8055"
    for spec in ("", "route53", "challtestsrv+ftp://x"):
        with pytest.raises(CloudConfigError, match="LOOPSPOT_ACME_DNS"):
            txt_publisher(spec)


def test_a_dns_provider_that_does_not_answer_stops_the_order_naming_it() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PortalCertError, match=f"{url}/set-txt"):
        ChallTestSrv(url).publish("_acme-challenge.r1.portal.example.com.", "token")


def test_portal_cert_without_a_portal_domain_says_which_setting_to_set(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOOPSPOT_PORTAL_DOMAIN", raising=False)
    assert main(["portal-cert", "r1"]) == 2
    assert "LOOPSPOT_PORTAL_DOMAIN" in capsys.readouterr().err


def test_the_latest_config_is_what_a_renewal_builds_on(engine: Engine, enrol: Enrol) -> None:
    (router_id,) = enrol("r-cert")
    factory = sessions(engine)
    assert latest_config(factory, router_id) == {}
    sent: list[bytes] = []
    push_config(factory, lambda _t, p, _r: sent.append(p), router_id, {"site_name": "Spa"})
    push_config(factory, lambda _t, p, _r: sent.append(p), router_id, {"session_timeout": 60})
    assert latest_config(factory, router_id) == {"session_timeout": 60}
    with pytest.raises(PushError, match="no router"):
        latest_config(factory, "r-nobody")
