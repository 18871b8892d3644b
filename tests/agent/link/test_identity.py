"""Who the router is in the cloud: UCI first, enrolment's identity.json for the rest."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from agent.link.errors import IdentityError
from agent.link.identity import resolve_identity
from agent.settings import Settings

KEY_HEX = "00112233445566778899aabbccddeeff"


def enrolled(tmp_path: Path, **fields: object) -> Settings:
    folder = tmp_path / "credentials"
    folder.mkdir()
    identity = {"router_id": "shop-7", "broker_host": "mqtt.example.com", "broker_port": 8883,
                "alliance_key": KEY_HEX} | fields  # fmt: skip
    (folder / "identity.json").write_text(json.dumps(identity))
    return Settings(cloud_enabled=True, cloud_credentials_dir=folder)


def test_an_enrolled_router_takes_everything_from_identity_json(tmp_path: Path) -> None:
    settings = enrolled(tmp_path)
    for name in ("ca.crt", "router.crt", "router.key"):
        (settings.cloud_credentials_dir / name).write_text("pem")
    identity = resolve_identity(settings)
    assert (identity.router_id, identity.broker_host, identity.broker_port) == (
        "shop-7", "mqtt.example.com", 8883,
    )  # fmt: skip
    assert identity.alliance_key == bytes.fromhex(KEY_HEX)
    assert (
        identity.tls is not None
        and identity.tls.cert == settings.cloud_credentials_dir / "router.crt"
    )
    assert KEY_HEX not in repr(identity)


def test_uci_options_win_over_identity_json(tmp_path: Path) -> None:
    key_file = tmp_path / "alliance.key"
    key_file.write_text("ff" * 16 + "\n")
    password = tmp_path / "password"
    password.write_text("s3cret\nignored\n")
    settings = dataclasses.replace(
        enrolled(tmp_path),
        cloud_router_id="lab-1",
        cloud_broker_host="198.51.100.2",
        cloud_broker_port=1883,
        cloud_tls=False,
        cloud_alliance_key_file=key_file,
        cloud_username="lab-1",
        cloud_password_file=password,
    )
    identity = resolve_identity(settings)
    assert (identity.router_id, identity.broker_host, identity.broker_port) == (
        "lab-1",
        "198.51.100.2",
        1883,
    )
    assert identity.tls is None and identity.alliance_key == b"\xff" * 16
    assert (identity.username, identity.password) == ("lab-1", "s3cret")


def test_the_port_follows_tls_when_nobody_names_it(tmp_path: Path) -> None:
    settings = dataclasses.replace(enrolled(tmp_path, broker_port=0), cloud_tls=False)
    assert resolve_identity(settings).broker_port == 1883


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"router_id": ""}, "no router_id"),
        ({"router_id": "Shop 7"}, "router_id"),
        ({"alliance_key": "not hex"}, "not hex"),
        ({"alliance_key": "0011"}, "at least 16"),
        ({"broker_port": "8883"}, "not a port number"),
    ],
)
def test_a_broken_identity_is_refused_with_the_fix(
    tmp_path: Path, fields: dict[str, object], says: str
) -> None:
    with pytest.raises(IdentityError, match=says):
        resolve_identity(enrolled(tmp_path, **fields))


def test_a_router_that_is_not_enrolled_is_told_how_to_fix_it(tmp_path: Path) -> None:
    settings = Settings(cloud_enabled=True, cloud_credentials_dir=tmp_path / "none")
    with pytest.raises(IdentityError, match="enrol the router"):
        resolve_identity(settings)
