"""Retiring a router revokes all its certificates, in a CRL signed by the cloud CA."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from agent.enrol import certificate_request, new_key
from agent.wire import WireError
from cloud.broker_config import deny_router, retired_routers, write_broker_config
from cloud.ca import CertificateAuthority
from cloud.errors import CloudConfigError
from cloud.revocation import (
    CRL_RENEW_BEFORE,
    crl_path,
    ensure_crl,
    load_crl,
    reload_broker,
    revoke_router,
)
from cloud.settings import CloudSettings

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path / "ca", NOW)


def _issue(ca: CertificateAuthority, router_id: str, at: datetime = NOW) -> x509.Certificate:
    return ca.sign_router_request(certificate_request(new_key()), router_id, at)


def _serials(ca: CertificateAuthority) -> set[int]:
    crl = load_crl(ca)
    assert crl is not None
    return {entry.serial_number for entry in crl}


def test_a_new_crl_is_empty_signed_by_the_ca_and_valid_for_years(ca: CertificateAuthority) -> None:
    path = ensure_crl(ca, NOW)

    crl = x509.load_pem_x509_crl(path.read_bytes())
    assert len(crl) == 0
    assert crl.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]
    assert crl.issuer == ca.certificate.subject
    assert crl.next_update_utc is not None and crl.next_update_utc - NOW > timedelta(days=3000)


def test_retiring_revokes_every_certificate_issued_to_the_router_and_no_other(
    ca: CertificateAuthority,
) -> None:
    enrolled = _issue(ca, "r-aaaaaaaaaa")
    renewed = _issue(ca, "r-aaaaaaaaaa", NOW + timedelta(days=340))
    neighbour = _issue(ca, "r-bbbbbbbbbb")
    ensure_crl(ca, NOW)

    revoked = revoke_router(ca, "r-aaaaaaaaaa", NOW + timedelta(days=341))

    assert sorted(revoked) == sorted([enrolled.serial_number, renewed.serial_number])
    assert _serials(ca) == {enrolled.serial_number, renewed.serial_number}
    assert neighbour.serial_number not in _serials(ca)
    crl = load_crl(ca)
    assert crl is not None
    entry = crl.get_revoked_certificate_by_serial_number(renewed.serial_number)
    assert entry is not None and entry.revocation_date_utc == NOW + timedelta(days=341)


def test_retiring_again_keeps_earlier_revocations_and_counts_up_the_crl_number(
    ca: CertificateAuthority,
) -> None:
    first = _issue(ca, "r-aaaaaaaaaa")
    second = _issue(ca, "r-bbbbbbbbbb")
    revoke_router(ca, "r-aaaaaaaaaa", NOW)
    number_before = _crl_number(ca)

    assert revoke_router(ca, "r-aaaaaaaaaa", NOW) == []  # nothing new
    assert revoke_router(ca, "r-bbbbbbbbbb", NOW) == [second.serial_number]

    assert _serials(ca) == {first.serial_number, second.serial_number}
    assert _crl_number(ca) == number_before + 2


def _crl_number(ca: CertificateAuthority) -> int:
    crl = load_crl(ca)
    assert crl is not None
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_a_crl_near_its_next_update_is_resigned_with_its_revocations(
    ca: CertificateAuthority,
) -> None:
    certificate = _issue(ca, "r-aaaaaaaaaa")
    revoke_router(ca, "r-aaaaaaaaaa", NOW - timedelta(days=5 * 365))  # an old CRL
    crl = load_crl(ca)
    assert crl is not None and crl.next_update_utc is not None
    late = crl.next_update_utc - CRL_RENEW_BEFORE + timedelta(days=1)

    ensure_crl(ca, late)

    fresh = load_crl(ca)
    assert fresh is not None and fresh.next_update_utc is not None
    assert fresh.next_update_utc > crl.next_update_utc
    assert _serials(ca) == {certificate.serial_number}


def test_a_crl_signed_by_another_ca_is_refused(ca: CertificateAuthority, tmp_path: Path) -> None:
    stranger = CertificateAuthority.create(tmp_path / "other", NOW)
    crl_path(ca).write_bytes(ensure_crl(stranger, NOW).read_bytes())

    with pytest.raises(CloudConfigError, match="not signed by this CA"):
        revoke_router(ca, "r-aaaaaaaaaa", NOW)


def test_a_stale_pid_file_naming_another_process_is_not_signalled(tmp_path: Path) -> None:
    settings = CloudSettings(data_dir=tmp_path)
    (tmp_path / "broker").mkdir()
    (tmp_path / "broker" / "mosquitto.pid").write_text("1\n")  # init, not a mosquitto

    done, why = reload_broker(settings)

    assert not done and f"names {Path('/proc/1/comm').read_text().strip()!r}" in why


def test_a_failing_reload_command_names_the_setting(tmp_path: Path) -> None:
    settings = CloudSettings(data_dir=tmp_path, broker_reload_command="false")

    with pytest.raises(CloudConfigError, match="broker_reload_command"):
        reload_broker(settings)


def test_the_acl_denies_retired_routers_everything_and_keeps_them_when_rewritten(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    settings = CloudSettings(data_dir=tmp_path / "data")
    deny_router(settings, "r-aaaaaaaaaa")
    deny_router(settings, "r-aaaaaaaaaa")  # retired twice: listed once

    write_broker_config(settings, ca, now=NOW)  # `loopspot-cloud broker-config` later

    acl = (tmp_path / "data" / "broker" / "acl").read_text()
    assert acl.count("user r-aaaaaaaaaa\ntopic deny #\n") == 1
    assert acl.index("pattern readwrite loopspot/v1/%u/#") < acl.index("user r-aaaaaaaaaa")
    assert retired_routers(settings) == ["r-aaaaaaaaaa"]
    with pytest.raises(WireError):
        deny_router(settings, "R/#")
