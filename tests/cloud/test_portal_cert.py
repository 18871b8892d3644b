"""The portal certificate's pure parts: names, the DNS seam, and what the push carries."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from cloud.acme_dns import ChallTestSrv, PortalCertError, txt_publisher
from cloud.cli import main
from cloud.db import sessions
from cloud.errors import CloudConfigError
from cloud.fleet_push import PushError, latest_config, push_config
from cloud.portal_cert import IssuedCertificate, challenge_name, portal_name, with_certificate
from lab.freeport import free_port
from tests.cloud.conftest import Enrol

ISSUED = IssuedCertificate(
    "r1.portal.example.com", "CHAIN", "KEY", datetime(2027, 3, 1, tzinfo=UTC)
)


def test_a_routers_portal_is_named_under_the_operators_domain() -> None:
    assert portal_name("r1", "Portal.Example.com.") == "r1.portal.example.com"
    assert challenge_name("r1.portal.example.com") == "_acme-challenge.r1.portal.example.com."


@pytest.mark.parametrize("domain", ["", "  ", "example..com", "bad_domain.com", "*.example.com"])
def test_a_domain_that_makes_no_dns_name_is_refused_naming_the_setting(domain: str) -> None:
    with pytest.raises(CloudConfigError, match=r"portal_domain.*LOOPSPOT_PORTAL_DOMAIN"):
        portal_name("r1", domain)


def test_a_renewal_keeps_the_routers_other_settings_and_replaces_the_certificate() -> None:
    previous = {"site_name": "Spa", "portal_name": "old.example.com", "portal_key": "OLD"}
    pushed = with_certificate(previous, ISSUED)
    assert pushed == {
        "site_name": "Spa",
        "portal_name": "r1.portal.example.com",
        "portal_certificate": "CHAIN",
        "portal_key": "KEY",
    }


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
