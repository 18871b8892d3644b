"""The cloud's one typed settings object, read from the environment (LOOPSPOT_*) or TOML."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from cloud.errors import CloudConfigError


@dataclass(frozen=True, slots=True)
class CloudSettings:
    """Where the database, the broker and the cloud's own files are."""

    database_url: str = "sqlite:///var/lib/loopspot/cloud.db"
    data_dir: Path = Path("/var/lib/loopspot")  # CA, broker config, secrets
    broker_host: str = "127.0.0.1"  # as the cloud's own services reach the broker
    broker_port: int = 1883  # the services' listener (loopback, username/password)
    broker_username: str = "loopspot-cloud"
    broker_password: str = ""
    public_broker_host: str = "127.0.0.1"  # as routers reach the broker (TLS listener)
    public_broker_port: int = 8883
    # How `retire` makes the broker re-read its CRL; empty: SIGHUP to the generated pid file.
    broker_reload_command: str = ""  # e.g. "systemctl reload mosquitto"
    enrol_host: str = "127.0.0.1"
    enrol_port: int = 8443
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    api_token: str = ""  # the JSON API's bearer token, for scripts; empty: the API refuses all
    web_secret: str = ""  # signs session cookies; empty: one kept in the database, shared
    ingest_batch: int = 500  # events written per transaction at most
    ingest_flush_interval: float = 0.2  # seconds a partial batch may wait
    claim_code_ttl: int = 24 * 3600
    # The trusted captive API (cloud.portal_cert): each router's portal is named
    # <router_id>.<portal_domain>, certified by this ACME directory over dns-01, the TXT
    # records published through acme_dns (cloud.acme_dns). serve-enrol places the orders.
    portal_domain: str = ""
    acme_directory: str = "https://acme-v02.api.letsencrypt.org/directory"
    acme_ca_file: str = ""  # the CA bundle to trust the ACME server's HTTPS by; "" = system's
    acme_email: str = ""  # the account's contact, optional
    acme_dns: str = ""  # rfc2136://SERVER/ZONE, or challtestsrv+http://HOST:PORT (lab)
    acme_dns_tsig_file: str = ""  # the TSIG key for rfc2136 (BIND key block, tsig-keygen)
    # Privacy: how many days each kind of data is kept (0: for ever), enforced by
    # `loopspot-cloud privacy retention` (cloud.privacy).
    retention_events_days: int = 180  # raw events, by the router's time of each
    retention_dead_letters_days: int = 30
    retention_visits_days: int = 400  # device days: "returning" looks back this far
    retention_rollups_days: int = 3 * 366  # hourly counts (they name no device)
    retention_coupons_days: int = 365  # after a coupon expires, its device link is dropped


_ENV_PREFIX = "LOOPSPOT_"


def _convert(name: str, kind: Any, raw: Any) -> Any:
    try:
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
        if kind in (Path, "Path"):
            return Path(str(raw))
        return str(raw)
    except (TypeError, ValueError):
        raise CloudConfigError(f"{name}: {raw!r} is not a valid {kind}") from None


def load_cloud_settings(
    toml_path: Path | None = None, environ: Mapping[str, str] | None = None
) -> CloudSettings:
    """Defaults, then the TOML file (if given), then LOOPSPOT_<FIELD> environment variables."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    known = {f.name: f.type for f in fields(CloudSettings)}
    if toml_path is not None:
        try:
            data = tomllib.loads(toml_path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CloudConfigError(f"{toml_path}: {exc}") from exc
        for key, raw in data.items():
            if key not in known:
                raise CloudConfigError(f"{toml_path}: unknown setting {key!r}")
            values[key] = _convert(key, known[key], raw)
    for key, kind in known.items():
        env_name = _ENV_PREFIX + key.upper()
        if env_name in environ:
            values[key] = _convert(env_name, kind, environ[env_name])
    return CloudSettings(**values)
