"""`loopspot-cloud` against a SQLite database in tmp_path, as an operator would use it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cloud.ingest
from agent.enrol import enrol_main, load_identity
from cloud.cli import main
from cloud.settings import CloudSettings
from lab.freeport import free_port, wait_for_port


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "cloud.toml"
    path.write_text(
        f'database_url = "sqlite:///{tmp_path}/cloud.db"\n'
        f'data_dir = "{tmp_path}/data"\n'
        'public_broker_host = "127.0.0.1"\n'
    )
    return path


class Cli:
    """Runs main() with the test's config and returns (exit code, stdout, stderr)."""

    def __init__(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.config = config
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        code = main(["--config", str(self.config), *argv])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *argv: str) -> Any:
        code, out, err = self(*argv, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def cli(config: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(config, capsys)


@pytest.fixture
def ready(cli: Cli) -> Cli:
    assert cli("init")[0] == 0
    return cli


def test_init_makes_the_database_ca_and_broker_config(cli: Cli, tmp_path: Path) -> None:
    made = cli.json("init")

    data = tmp_path / "data"
    assert made["ca_certificate"] == str(data / "ca" / "ca.crt")
    assert made["broker_config"] == str(data / "broker" / "mosquitto.conf")
    assert made["service_password"] == str(data / "broker" / "service-password")
    assert "require_certificate true" in (data / "broker" / "mosquitto.conf").read_text()
    assert (data / "enrol" / "server.crt").exists()
    assert cli.json("init")["ca_certificate"] == made["ca_certificate"]  # again: no change


def test_operator_sets_up_a_shop_and_gets_a_claim_code(ready: Cli) -> None:
    merchant = ready.json("merchant", "create", "Bistro Nord")
    site = ready.json("site", "create", "--merchant", "Bistro Nord", "Main Street")
    claim = ready.json("claim", "create", "--site", str(site["site_id"]), "--ttl", "2h")
    routers = ready.json("routers")["routers"]

    assert merchant["alliance"].startswith("merchant-")
    assert len(claim["code"]) == 14 and claim["router_id"].startswith("r-")
    assert [(r["router_id"], r["state"], r["site"]) for r in routers] == [
        (claim["router_id"], "awaiting-enrolment", "Main Street")
    ]
    assert ready.json("sites")["sites"] == [
        {"id": site["site_id"], "merchant": "Bistro Nord", "site": "Main Street"}
    ]


def test_human_output_is_a_table_and_key_value_lines(ready: Cli) -> None:
    ready("merchant", "create", "Spa Sud")
    code, out, _ = ready("site", "create", "--merchant", "Spa Sud", "Harbour")
    assert code == 0 and "site_id: 1" in out
    code, out, _ = ready("claim", "create", "--site", "1")
    assert code == 0 and "code: " in out and "router_id: r-" in out

    code, out, _ = ready("routers")

    assert out.splitlines()[0].split() == [
        "ROUTER_ID",
        "MERCHANT",
        "SITE",
        "STATE",
        "ENROLLED_AT",
        "LAST_SEEN",
    ]
    assert "awaiting-enrolment" in out


def test_merchants_of_one_alliance_share_it(ready: Cli) -> None:
    first = ready.json("merchant", "create", "Bistro", "--alliance", "Harbour Lane")
    second = ready.json("merchant", "create", "Gym", "--alliance", "Harbour Lane")

    assert first["alliance"] == second["alliance"] == "Harbour Lane"


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["site", "create", "--merchant", "Nobody", "Shop"], "no merchant called 'Nobody'"),
        (["claim", "create", "--site", "99"], "no site with id 99"),
        (["merchant", "create", "Bistro Nord"], "'Bistro Nord' exists already"),
    ],
)
def test_refusals_name_the_problem_and_exit_1(ready: Cli, argv: list[str], error: str) -> None:
    ready("merchant", "create", "Bistro Nord")

    code, _, err = ready(*argv)

    assert code == 1
    assert error in err


@pytest.mark.parametrize(
    "argv",
    [["claim", "create", "--site", "1", "--ttl", "soon"], ["frobnicate"], ["merchant"]],
)
def test_usage_errors_exit_2(ready: Cli, argv: list[str]) -> None:
    assert ready(*argv)[0] == 2


def test_bad_settings_exit_2_naming_the_setting(tmp_path: Path, cli: Cli) -> None:
    cli.config.write_text("brokr_port = 1\n")

    code, _, err = cli("routers")

    assert code == 2 and "unknown setting 'brokr_port'" in err


def test_database_without_init_exits_2_and_says_so(cli: Cli) -> None:
    code, _, err = cli("merchant", "create", "Bistro")

    assert code == 2 and "did `init` run?" in err


def test_settings_come_from_the_environment_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOOPSPOT_DATABASE_URL", f"sqlite:///{tmp_path}/env.db")
    monkeypatch.setenv("LOOPSPOT_DATA_DIR", str(tmp_path / "env-data"))

    assert main(["init"]) == 0

    assert (tmp_path / "env.db").exists() and (tmp_path / "env-data" / "ca" / "ca.key").exists()


def test_ingest_runs_the_worker_with_the_generated_service_password(
    ready: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[tuple[CloudSettings, str | None]] = []
    monkeypatch.setattr(cloud.ingest, "run_ingest", lambda s, name: seen.append((s, name)))

    assert ready("ingest", "--worker-name", "ingest-a")[0] == 0

    password = (tmp_path / "data" / "broker" / "service-password").read_text().strip()
    assert [(s.broker_password, name) for s, name in seen] == [(password, "ingest-a")]


@pytest.fixture
def enrol_service(ready: Cli, config: Path) -> Iterator[str]:
    """`loopspot-cloud serve-enrol` as a real process; yields its URL."""
    port = free_port()
    env = {**os.environ, "LOOPSPOT_ENROL_PORT": str(port)}
    script = "from cloud.cli import main; raise SystemExit(main())"
    process = subprocess.Popen(
        [sys.executable, "-c", script, "--config", str(config), "serve-enrol"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        if not wait_for_port("127.0.0.1", port, 20):
            process.kill()
            raise AssertionError(f"serve-enrol did not start: {process.communicate()[1]!r}")
        yield f"https://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def test_installer_enrols_a_router_with_the_printed_code(
    ready: Cli, enrol_service: str, tmp_path: Path
) -> None:
    ready("merchant", "create", "Bistro Nord")
    ready("site", "create", "--merchant", "Bistro Nord", "Main Street")
    claim = ready.json("claim", "create", "--site", "1")
    ca = str(tmp_path / "data" / "ca" / "ca.crt")
    folder = tmp_path / "router-credentials"

    code = enrol_main([claim["code"], "--url", enrol_service, "--ca", ca, "--dir", str(folder)])

    assert code == 0
    assert "enrolled as " + claim["router_id"] in ready.capsys.readouterr().out
    assert load_identity(folder).router_id == claim["router_id"]
    routers = ready.json("routers")["routers"]
    assert routers[0]["enrolled_at"] is not None and routers[0]["state"] == "unknown"


def test_a_retired_router_is_listed_as_retired_and_its_claim_code_is_void(ready: Cli) -> None:
    ready.json("merchant", "create", "Bistro Nord")
    site = ready.json("site", "create", "--merchant", "Bistro Nord", "Main Street")
    claim = ready.json("claim", "create", "--site", str(site["site_id"]))

    retired = ready.json("retire", claim["router_id"])

    assert retired["router_id"] == claim["router_id"] and retired["state"] == "retired"
    assert retired["revoked_certificates"] == 0  # it never enrolled: nothing was signed
    assert retired["connection_ended"] is False and "no broker running" in retired["broker_reload"]
    (row,) = ready.json("routers")["routers"]
    assert (row["router_id"], row["state"], row["claim_expires_at"]) == (
        claim["router_id"],
        "retired",
        None,
    )


def test_retiring_an_unknown_router_names_it_and_exits_1(ready: Cli) -> None:
    code, _, err = ready("retire", "r-nobody0000")
    assert code == 1 and "no router 'r-nobody0000'" in err
