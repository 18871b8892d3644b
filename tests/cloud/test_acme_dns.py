"""The cloud's dns-01 against a real DNS server: BIND taking TSIG-signed updates, then pebble."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest
from cryptography import x509

from agent.certificate import read_certificate
from agent.keys import CryptographyKeys, KeyBackend
from agent.portal.certify import certificate_request
from cloud.acme_dns import PortalCertError, Rfc2136, TsigKey, txt_publisher
from cloud.errors import CloudConfigError
from cloud.portal_cert import (
    PortalRequestRefused,
    challenge_name,
    check_request,
    obtain_certificate,
    portal_name,
)
from cloud.settings import CloudSettings
from lab.acme import PebbleStack
from lab.bind import BindZone
from tests.agent.test_keys import keys  # noqa: F401 (the fixture: each backend in turn)

ZONE = "portal.example.test"


class Unpublished:
    """A DNS provider that takes every record and publishes none."""

    def publish(self, fqdn: str, value: str) -> None:
        """Publish nothing."""

    def withdraw(self, fqdn: str) -> None:
        """Nothing to withdraw."""


@pytest.fixture
def zone(tmp_path: Path) -> Iterator[BindZone]:
    bind = BindZone(tmp_path / "bind", ZONE)
    try:
        yield bind.start()
    finally:
        bind.close()
        print(f"--- named log ---\n{bind.log()[-3000:]}")


def txt(zone: BindZone, fqdn: str) -> list[str]:
    query = dns.message.make_query(fqdn, dns.rdatatype.TXT)
    answer = dns.query.udp(query, "127.0.0.1", port=zone.port, timeout=5)
    return [
        b"".join(record.strings).decode()
        for rrset in answer.answer
        for record in rrset
        if rrset.rdtype == dns.rdatatype.TXT
    ]


def test_the_challenge_record_is_published_and_withdrawn_with_a_signed_update(
    zone: BindZone,
) -> None:
    provider = txt_publisher(zone.acme_dns, str(zone.key_file))
    fqdn = challenge_name(f"r1.{ZONE}")
    provider.publish(fqdn, "first-token")
    provider.publish(fqdn, "second-token")  # a new order replaces the old value
    assert txt(zone, fqdn) == ["second-token"]
    provider.withdraw(fqdn)
    assert txt(zone, fqdn) == []


def test_an_update_with_the_wrong_key_is_refused_and_names_the_server(zone: BindZone) -> None:
    wrong = TsigKey.parse(zone.tsig_block("d3JvbmcgLS0gbm90IHRoZSB6b25lJ3Mga2V5IGF0IGFsbA=="))
    provider = Rfc2136("127.0.0.1", zone.port, ZONE, wrong)
    with pytest.raises(PortalCertError, match=rf"127\.0\.0\.1:{zone.port}"):
        provider.publish(challenge_name(f"r1.{ZONE}"), "token")
    with pytest.raises(PortalCertError, match="not in the zone"):
        provider.publish("_acme-challenge.r1.other.test.", "token")


@pytest.mark.parametrize(
    ("spec", "tsig", "setting"),
    [
        ("rfc2136://127.0.0.1/", "x", "acme_dns"),
        ("rfc2136://127.0.0.1/zone.test", "", "acme_dns_tsig_file"),
        ("rfc2136://127.0.0.1/zone.test", "/nonexistent/key", "acme_dns_tsig_file"),
    ],
)
def test_an_incomplete_rfc2136_setting_names_what_to_set(
    spec: str, tsig: str, setting: str
) -> None:
    with pytest.raises(CloudConfigError, match=setting):
        txt_publisher(spec, tsig)


def test_a_key_file_without_a_key_block_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(CloudConfigError, match="tsig-keygen"):
        TsigKey.parse("secret = hunter2")


def test_pebble_issues_the_portal_certificate_after_reading_the_record_from_bind(
    zone: BindZone, tmp_path: Path
) -> None:
    pebble = PebbleStack(tmp_path / "pebble", dns_server=zone.address).start()
    try:
        settings = CloudSettings(
            data_dir=tmp_path / "cloud",
            portal_domain=ZONE,
            acme_directory=pebble.directory,
            acme_ca_file=str(pebble.tls_ca),
            acme_dns=zone.acme_dns,
            acme_dns_tsig_file=str(zone.key_file),
        )
        name = portal_name("r1", ZONE)
        keys = CryptographyKeys()
        key_pem = keys.new_key()  # the router's, which it keeps
        provider = txt_publisher(settings.acme_dns, settings.acme_dns_tsig_file)
        request = certificate_request(keys, key_pem, name)
        issued = obtain_certificate(settings, request, name, provider)
        leaf = x509.load_pem_x509_certificate(issued.chain.encode())
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == [name]
        assert read_certificate(issued.chain).public_key_der == keys.public_key(key_pem)
        assert txt(zone, challenge_name(name)) == [], "the challenge record is withdrawn"
        other = portal_name("r2", ZONE)
        asked = certificate_request(keys, key_pem, other)
        with pytest.raises(PortalCertError, match="ACME"):  # pebble really reads the record
            obtain_certificate(settings, asked, other, Unpublished())
    finally:
        pebble.close()
        print(f"--- pebble log ---\n{pebble.log('pebble')[-3000:]}")


def test_pebble_issues_for_a_request_from_either_key_backend_and_the_cloud_wants_its_name(
    tmp_path: Path,
    keys: KeyBackend,  # noqa: F811
) -> None:
    pebble = PebbleStack(tmp_path / "pebble").start()  # its own DNS: pebble-challtestsrv
    try:
        settings = CloudSettings(
            data_dir=tmp_path / "cloud",
            portal_domain=ZONE,
            acme_directory=pebble.directory,
            acme_ca_file=str(pebble.tls_ca),
            acme_dns=pebble.dns_api,
        )
        name = portal_name("r1", ZONE)
        key_pem = keys.new_key()
        provider = txt_publisher(settings.acme_dns, "")

        issued = obtain_certificate(
            settings, certificate_request(keys, key_pem, name), name, provider
        )

        leaf = read_certificate(issued.chain)
        assert leaf.dns_names == (name,)
        assert leaf.public_key_der == keys.public_key(key_pem)
        # Without the subjectAltName there is nothing to order: the cloud refuses it first.
        nameless = keys.certificate_request(key_pem).decode()
        with pytest.raises(PortalRequestRefused, match="names nothing"):
            check_request(nameless, name)
    finally:
        pebble.close()
        print(f"--- pebble log ---\n{pebble.log('pebble')[-3000:]}")
