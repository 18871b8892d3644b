"""`loopspot-cloud` coupon commands on real SQLite and PostgreSQL: clear refusals, nothing lost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from cloud.cli import main
from cloud.models import Merchant
from lab.freeport import free_port
from tests.cloud.coupon_fleet import Fleet, make_fleet


class Cli:
    """Runs main() against the test's database; (exit code, stdout, stderr)."""

    def __init__(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.config, self.capsys = config, capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        code = main(["--config", str(self.config), *argv])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *argv: str) -> Any:
        code, out, err = self(*argv, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def fleet(engine: Engine) -> Fleet:
    return make_fleet(engine)


@pytest.fixture
def cli(database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    config = tmp_path / "cloud.toml"
    config.write_text(
        f'database_url = "{database_url}"\ndata_dir = "{tmp_path}/data"\n'
        f"broker_port = {free_port()}\n"  # nothing listens: announcing spent coupons fails
    )
    return Cli(config, capsys)


CREATE = (
    "campaign",
    "create",
    "--merchant",
    "spa",
    "--title-en",
    "Half-price massage",
    "--title-zh",
    "按摩半价",
    "--starts-at",
    "2027-01-01",
    "--ends-at",
    "2027-02-01T00:00+08:00",
    "--budget",
    "100",
    "--reach",
    "partners",
    "--slice-size",
    "20",
)


def test_a_merchant_creates_a_campaign_and_a_partner_accepts_it(cli: Cli, fleet: Fleet) -> None:
    made = cli.json(*CREATE)["campaign"]
    assert (made["merchant"], made["budget"], made["starts_at"]) == ("spa", 100, 1798761600)
    assert made["issuers"] == []  # nobody has accepted yet
    proposed = cli.json("partner", "propose", "--merchant", "spa", "--partner", "restaurant")
    assert proposed["partnership"]["state"] == "proposed"
    cli.json("partner", "accept", "--merchant", "spa", "--partner", "restaurant")
    shown = cli.json("campaign", "show", str(made["id"]))["campaign"]
    assert shown["issuers"] == [fleet.merchants["restaurant"]]
    listed = cli.json("campaign", "list", "--merchant", "spa")["campaigns"]
    assert [c["id"] for c in listed] == [made["id"]]
    code, out, _ = cli("campaign", "list")
    assert code == 0 and "Half-price massage" in out
    code, out, _ = cli("campaign", "show", str(made["id"]))
    assert code == 0 and "title_en: Half-price massage" in out


@pytest.mark.parametrize(
    ("change", "field", "fix"),
    [
        (("--ends-at", "2026-12-01"), "ends_at", "ends before it starts"),
        (("--trigger", "birthday"), "trigger", "login, first_visit, nth_visit"),
        (("--budget", "lots"), "budget", "whole number"),
        (("--starts-at", "next week"), "starts_at", "2027-01-31"),
    ],
)
def test_a_bad_campaign_is_refused_naming_the_field_and_the_fix(
    cli: Cli, fleet: Fleet, change: tuple[str, str], field: str, fix: str
) -> None:
    code, _, err = cli(*CREATE, *change)
    assert code == 1
    assert f"error: {field}: " in err and fix in err
    assert cli.json("campaign", "list")["campaigns"] == []


def test_an_unknown_merchant_is_named(cli: Cli, fleet: Fleet) -> None:
    code, _, err = cli("campaign", "create", "--merchant", "bakery", *CREATE[4:])
    assert code == 1 and "merchant: no merchant 'bakery'" in err


def test_a_budget_under_the_slices_handed_out_is_refused_and_nothing_changes(
    cli: Cli, fleet: Fleet, engine: Engine
) -> None:
    from cloud import coupon_store as store

    made = cli.json(*CREATE, "--reach", "own")["campaign"]
    with engine.begin() as connection:
        store.top_up(connection, made["id"], "r-spa")  # one slice of 20 is out
    code, _, err = cli("campaign", "update", str(made["id"]), "--budget", "10", "--title-en", "x")
    assert code == 1 and "budget: 10 is under the 20 coupons already handed out" in err
    kept = cli.json("campaign", "show", str(made["id"]))["campaign"]
    assert (kept["budget"], kept["title_en"]) == (100, "Half-price massage")
    changed = cli.json("campaign", "update", str(made["id"]), "--per_device", "2", "--budget", "20")
    assert (changed["campaign"]["budget"], changed["campaign"]["per_device"]) == (20, 2)


def test_a_partner_outside_the_alliance_is_refused(cli: Cli, fleet: Fleet) -> None:
    assert main(["--config", str(cli.config), "merchant", "create", "bakery"]) == 0
    cli.capsys.readouterr()
    code, _, err = cli("partner", "propose", "--merchant", "spa", "--partner", "bakery")
    assert code == 1 and "partner: 'bakery' is not in the alliance of 'spa'" in err


def test_a_partnership_is_declined_or_ended_only_from_the_right_state(
    cli: Cli, fleet: Fleet
) -> None:
    pair = ("--merchant", "gym", "--partner", "spa")
    cli.json("partner", "propose", *pair)
    assert cli.json("partner", "decline", *pair)["partnership"]["state"] == "declined"
    code, _, err = cli("partner", "accept", *pair)
    assert code == 1 and "state: the partnership is declined" in err
    cli.json("partner", "propose", *pair)  # asked again
    cli.json("partner", "accept", *pair)
    assert cli.json("partner", "end", *pair)["partnership"]["state"] == "ended"


def test_the_staff_pin_is_stored_as_a_hash_and_a_bad_one_is_refused(
    cli: Cli, fleet: Fleet, engine: Engine
) -> None:
    from agent.coupons.pin import pin_matches

    code, _, err = cli("staff-pin", "set", "--merchant", "gym", "12ab")
    assert code == 1 and "pin: a staff PIN is 4 to 8 digits" in err
    cli.json("staff-pin", "set", "--merchant", "gym", "135790")
    with engine.connect() as connection:
        stored = connection.scalar(select(Merchant.staff_pin).where(Merchant.name == "gym"))
    assert stored is not None and stored.startswith("pbkdf2_sha256$200000$")
    assert "135790" not in stored and pin_matches(stored, "135790")


def test_stats_flows_and_a_redemption_from_the_command_line(
    cli: Cli, fleet: Fleet, engine: Engine
) -> None:
    import time

    from cloud.ingest_store import IngestStore
    from tests.cloud.test_coupon_ingest import issued, send

    now = int(time.time())
    offer = fleet.campaign("spa", reach="partners")
    coupon = fleet.coupon("r-restaurant", offer, "spa", not_before=now - 60, not_after=now + 600)
    send(IngestStore(engine), issued(fleet, "r-restaurant", coupon))
    code, out, err = cli("coupon", "redeem", coupon.to_text(), "--router", "r-spa", "--json")
    assert code == 0, err
    assert json.loads(out)["redeemed"] == coupon.coupon_id
    assert "were not told" in err  # no broker here; the redemption stands all the same
    code, _, err = cli("coupon", "redeem", coupon.to_text(), "--router", "r-spa")
    assert code == 1 and "refused (spent)" in err
    assert cli.json("campaign", "stats", str(offer))["redeemed"] == 1
    assert cli.json("flows", "--alliance", "loop")["flows"] == [
        {"from_merchant": "restaurant", "to_merchant": "spa", "customers": 1, "redemptions": 1}
    ]
    assert cli.json("alliances")["alliances"] == [
        {"id": fleet.alliance_id, "alliance": "loop", "merchants": "gym, restaurant, spa"}
    ]
    code, out, _ = cli("alliances")
    assert code == 0 and "gym, restaurant, spa" in out
    code, _, err = cli("flows", "--alliance", "nowhere")
    assert code == 1 and "alliance: no alliance 'nowhere'" in err
