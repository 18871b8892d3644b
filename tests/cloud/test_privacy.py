"""Retention, erasure and export remove or list what they should and nothing else."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from cloud import cli, privacy
from cloud.ingest_store import IngestStore
from cloud.models import (
    Command,
    CouponRow,
    DeadLetter,
    Erasure,
    Event,
    Redemption,
    SiteAnalytics,
    SiteDay,
    SiteDevice,
    SiteHour,
)
from tests.cloud.analytics_data import device, make_fleet, rolled_up, write_all

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
GONE, KEPT, OTHER = device(0xA), device(0xB), device(0xC)


def _coupon(coupon_id: str, who: str, not_after: datetime) -> CouponRow:
    return CouponRow(
        coupon_id=coupon_id,
        short_code=coupon_id[:8],
        campaign_id=1,
        merchant_id=1,
        alliance_id=1,
        issuer_router_id="r-shop",
        device_id=who,
        token=f"token-of-{coupon_id}",
        issued_at=(not_after - timedelta(days=30)).timestamp(),
        not_before=int((not_after - timedelta(days=30)).timestamp()),
        not_after=int(not_after.timestamp()),
    )


def _held(engine: Engine) -> dict[str, Any]:
    """What each table holds, by its keys, to compare before and after."""
    with Session(engine) as session:
        return {
            "events": sorted(tuple(r) for r in session.execute(select(Event.device_id, Event.seq))),
            "days": sorted(
                tuple(r) for r in session.execute(select(SiteDay.day, SiteDay.device_id))
            ),
            "devices": sorted(session.scalars(select(SiteDevice.device_id))),
            "coupons": sorted(
                tuple(r)
                for r in session.execute(
                    select(CouponRow.coupon_id, CouponRow.device_id, CouponRow.token)
                )
            ),
            "redemptions": sorted(session.scalars(select(Redemption.coupon_id))),
            "commands": sorted(
                tuple(r) for r in session.execute(select(Command.id, Command.device_id))
            ),
            "letters": sorted(session.scalars(select(DeadLetter.topic))),
        }


@pytest.fixture
def shop(engine: Engine) -> Engine:
    """A shop whose devices GONE and KEPT visited on two days, with coupons, a redemption,
    commands and dead letters naming them; OTHER only came long ago."""
    fleet = make_fleet(engine, {"shop": ("he", "UTC", ["r-shop"])})
    old, recent = (NOW - timedelta(days=200)).timestamp(), (NOW - timedelta(days=1)).timestamp()
    for who in (GONE, KEPT):
        fleet.visit("r-shop", who, old, 900.0, session_bytes=1000)
        fleet.visit("r-shop", who, recent, 1200.0, session_bytes=2000)
    fleet.visit("r-shop", OTHER, old + 60, 600.0)
    write_all(IngestStore(engine), iter([fleet.messages("r-shop")]))
    with Session(engine) as session, session.begin():
        session.add_all(
            [
                _coupon("c" * 31 + "1", GONE, NOW + timedelta(days=10)),
                _coupon("c" * 31 + "2", GONE, NOW - timedelta(days=400)),
                _coupon("c" * 31 + "3", KEPT, NOW - timedelta(days=400)),
                _coupon("c" * 31 + "4", KEPT, NOW + timedelta(days=10)),
            ]
        )
        session.add(Redemption(coupon_id="c" * 31 + "1", campaign_id=1, router_id="r-shop", at=1.0))
        session.add(
            Command(id="cmd-gone", router_id="r-shop", action="revoke_device", device_id=GONE)
        )
        session.add(
            Command(id="cmd-kept", router_id="r-shop", action="revoke_device", device_id=KEPT)
        )
        session.add(
            DeadLetter(
                topic="quotes-gone",
                payload=json.dumps({"device_id": GONE}).encode(),
                reason="test",
                received_at=NOW - timedelta(days=1),
            )
        )
        session.add(
            DeadLetter(
                topic="old-kept",
                payload=json.dumps({"device_id": KEPT}).encode(),
                reason="test",
                received_at=NOW - timedelta(days=40),
            )
        )
    return engine


def test_erasure_removes_the_device_everywhere_and_nothing_else(shop: Engine) -> None:
    before = _held(shop)
    counts = rolled_up(shop)
    removed = privacy.erase_device(shop, GONE, "operator ann", NOW)
    after = _held(shop)
    assert removed == {
        "events": 12,  # two visits with a session: 6 events each
        "events_moved_to": 0,
        "site_days": 2,
        "site_devices": 1,
        "dead_letters": 1,
        "coupons_anonymised": 2,
        "commands_anonymised": 1,
    }
    assert after["events"] == [row for row in before["events"] if row[0] != GONE]
    assert after["days"] == [row for row in before["days"] if row[1] != GONE]
    assert after["devices"] == sorted([KEPT, OTHER])
    assert after["coupons"] == sorted(
        [("c" * 31 + "1", "", ""), ("c" * 31 + "2", "", "")]
        + [row for row in before["coupons"] if row[1] == KEPT]
    )
    assert after["redemptions"] == before["redemptions"]  # the shop's books keep them
    assert after["commands"] == [("cmd-gone", ""), ("cmd-kept", KEPT)]
    assert after["letters"] == ["old-kept"]
    assert rolled_up(shop) == counts  # counts name no device: they stay
    with Session(shop) as session:
        record = session.scalars(select(Erasure)).one()
    assert record.device_hash == privacy.device_hash(GONE) != GONE
    assert record.erased_by == "operator ann"
    assert json.loads(record.removed) == removed


def test_export_lists_what_is_held_and_then_the_erasure(shop: Engine) -> None:
    held = privacy.export_device(shop, GONE, NOW)
    assert len(held["events"]) == 12 and {e["device_id"] for e in held["events"]} == {GONE}
    assert [d["hours"] for d in held["visit_days"]] == [[12], [12]]
    assert [s["device_id"] for s in held["sites"]] == [GONE]
    assert [c["token"] for c in held["coupons"]] == [
        "token-of-" + "c" * 31 + "1",
        "token-of-" + "c" * 31 + "2",
    ]
    assert [r["coupon_id"] for r in held["redemptions"]] == ["c" * 31 + "1"]
    assert [c["id"] for c in held["commands"]] == ["cmd-gone"]
    assert [d["topic"] for d in held["dead_letters"]] == ["quotes-gone"]
    json.dumps(held)  # plain data all the way down
    privacy.erase_device(shop, GONE, "operator ann", NOW)
    after = privacy.export_device(shop, GONE, NOW)
    assert all(not after[k] for k in ("events", "visit_days", "sites", "coupons", "commands"))
    assert [e["erased_by"] for e in after["erasures"]] == ["operator ann"]


def test_retention_removes_what_is_older_and_nothing_else(shop: Engine) -> None:
    retention = privacy.Retention(events=180, dead_letters=30, visits=100, rollups=150, coupons=365)
    before = _held(shop)
    with Session(shop) as session:
        hours_before = session.scalars(select(SiteHour.day)).all()
    planned = privacy.apply_retention(shop, retention, NOW, dry_run=True)
    assert _held(shop) == before  # a dry run changes nothing
    done = privacy.apply_retention(shop, retention, NOW, batch=2)  # several batches
    assert done == planned
    after = _held(shop)
    old = (NOW - timedelta(days=200)).date()
    assert done == {
        "events": 6 + 6 + 2,
        "dead_letters": 1,
        "site_devices": 1,  # OTHER came only long ago
        "site_days": 3,
        "site_hours": len([d for d in hours_before if d == old]),
        "coupons": 2,
    }
    with Session(shop) as session:
        events_left = session.scalars(select(Event.at)).all()
        hours_left = session.scalars(select(SiteHour.day)).all()
    assert min(events_left) >= (NOW - timedelta(days=180)).timestamp()
    assert len(events_left) == 12
    assert after["days"] == [row for row in before["days"] if row[0] != old]
    assert after["devices"] == sorted([GONE, KEPT])
    assert after["letters"] == ["quotes-gone"]
    assert after["coupons"] == sorted(
        (cid, "", "") if cid.endswith(("2", "3")) else (cid, who, token)
        for cid, who, token in before["coupons"]
    )
    assert after["redemptions"] == before["redemptions"] and after["commands"] == before["commands"]
    assert hours_left and old not in hours_left
    assert privacy.apply_retention(shop, retention, NOW) == {name: 0 for name in done}


def test_the_cli_erases_exports_and_sets_rules(
    shop: Engine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LOOPSPOT_DATABASE_URL", database_url)
    assert cli.main(["privacy", "export", KEPT]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["device_id"] == KEPT and len(exported["events"]) == 12
    assert cli.main(["privacy", "erase", "AA:BB:CC:DD:EE:FF"]) == 1
    assert "device_id" in capsys.readouterr().err
    assert cli.main(["--json", "privacy", "erase", GONE, "--by", "ann"]) == 0
    assert json.loads(capsys.readouterr().out)["events"] == 12
    assert cli.main(["privacy", "retention", "--dry-run"]) == 0
    assert "would remove events: 8" in capsys.readouterr().out  # KEPT's and OTHER's old visits
    with Session(shop) as session:
        site_id = session.scalars(select(SiteAnalytics.site_id)).first()
    assert cli.main(["analytics", "rules", str(site_id), "--timezone", "Mars/Olympus"]) == 1
    assert "timezone" in capsys.readouterr().err
    assert cli.main(["--json", "analytics", "rules", str(site_id), "--passer-by", "10m"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["passer_by_seconds"] == 600 and shown["timezone"] == "UTC"
    with Session(shop) as session:
        assert session.scalar(select(func.count()).select_from(SiteAnalytics)) == 2
