"""The router's side of the portal certificate: its request, and when to ask again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.certificate import read_certificate
from agent.keys import KeyBackend
from agent.portal.certify import (
    CHAIN,
    KEY,
    RENEW_BEFORE,
    certificate_request,
    fresh_until,
    main,
    names_of,
    portal_cert_url,
)
from tests.agent.portal.test_tls import NAME, issue, make_ca, store
from tests.agent.test_keys import keys  # noqa: F401 (the fixture: each backend in turn)


def test_the_request_names_the_portal_alone_and_nothing_of_the_router(
    keys: KeyBackend,  # noqa: F811
) -> None:
    key_pem = keys.new_key()
    request = x509.load_pem_x509_csr(certificate_request(keys, key_pem, NAME))
    assert request.is_signature_valid
    assert request.subject == x509.Name([])
    names = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n.value) for n in names] == [NAME]
    key = serialization.load_pem_private_key(key_pem, None)
    assert request.public_key() == key.public_key()


def test_the_request_goes_beside_the_enrolment_endpoint() -> None:
    url = portal_cert_url("https://cloud.example.com:8443/v1/enrol?x=1")
    assert url == "https://cloud.example.com:8443/v1/portal-cert"


@pytest.fixture(scope="module")
def ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    return make_ca()


def test_a_certificate_is_asked_for_again_only_when_due_or_not_this_ones(
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    tmp_path: Path,
    keys: KeyBackend,  # noqa: F811
) -> None:
    now = datetime.now(UTC)
    assert fresh_until(tmp_path, NAME, now, keys) is None, "nothing stored"
    store(tmp_path, issue(ca, days=90))
    ends = fresh_until(tmp_path, NAME, now, keys)
    assert ends is not None and ends - now > RENEW_BEFORE
    assert names_of(read_certificate((tmp_path / CHAIN).read_bytes())) == [NAME]
    assert fresh_until(tmp_path, NAME, now + timedelta(days=61), keys) is None, "due 30 days before"
    assert fresh_until(tmp_path, "r2.portal.example.com", now, keys) is None, "another name"
    (tmp_path / KEY).write_text(issue(ca, days=90)[1])  # a key of another certificate
    assert fresh_until(tmp_path, NAME, now, keys) is None
    (tmp_path / KEY).write_text("not a key")
    assert fresh_until(tmp_path, NAME, now, keys) is None


def test_a_router_that_cannot_ask_says_why_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--dir", str(tmp_path / "tls"), "--credentials-dir", str(tmp_path), "--name", NAME]
    assert main([*argv, "--if-due"]) == 1
    assert "error:" in capsys.readouterr().err


def test_the_request_and_its_check_run_where_cryptography_is_not_installed(
    tmp_path: Path, ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]
) -> None:
    import subprocess
    import sys

    from lab.hidden import environment_without

    store(tmp_path / "tls", issue(ca, days=90))
    code = (
        "import sys\n"
        "from datetime import UTC, datetime\n"
        "from pathlib import Path\n"
        "from agent.keys import choose_backend\n"
        "from agent.portal.certify import certificate_request, fresh_until\n"
        "keys = choose_backend()\n"
        "ends = fresh_until(Path(sys.argv[1]), sys.argv[2], datetime.now(UTC))\n"
        "print(keys.name, ends is not None)\n"
        "print(b'CERTIFICATE REQUEST' in certificate_request(keys, keys.new_key(), sys.argv[2]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "tls"), NAME],
        env=environment_without(["cryptography"], tmp_path / "hidden"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["openssl", "True", "True"]
