"""`loopspot-cloud retire` against a real Mosquitto: the router's live connection ends at
once, it cannot connect again, and its neighbour stays connected."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from agent.wire import INGEST_SHARE
from cloud.cli import main
from cloud.db import make_engine, migrate
from cloud.models import Merchant, Router, Site
from tests.cloud import test_broker_acl as acl
from tests.cloud.test_broker_acl import CloudBroker, Peer, start_mosquitto, stop_mosquitto, up

cloud_broker = acl.cloud_broker  # the generated config, run for real
peers = acl.peers

CUT_WITHIN = 5.0  # seconds from `retire` to the connection's end


def _cloud_config(
    broker: CloudBroker, tmp_path: Path, *router_ids: str, reload_command: str = ""
) -> Path:
    """A TOML config on the test broker's settings, with a database holding `router_ids`."""
    s = broker.settings
    url = f"sqlite:///{tmp_path}/cloud.db"
    migrate(url)
    engine = make_engine(url)
    with Session(engine) as session, session.begin():
        merchant = Merchant(name="Bistro")
        session.add(merchant)
        session.flush()
        site = Site(merchant_id=merchant.id, name="Main Street")
        session.add(site)
        session.flush()
        session.add_all(Router(id=r, site_id=site.id) for r in router_ids)
    engine.dispose()
    path = tmp_path / "cloud.toml"
    path.write_text(
        f'database_url = "{url}"\ndata_dir = "{s.data_dir}"\nbroker_port = {s.broker_port}\n'
        f'public_broker_host = "{s.public_broker_host}"\n'
        f"public_broker_port = {s.public_broker_port}\n"
        f"broker_reload_command = {reload_command!r}\n"
    )
    return path


def test_retiring_a_router_ends_its_connection_and_it_cannot_reconnect(
    cloud_broker: CloudBroker, peers: list[Peer], tmp_path: Path
) -> None:
    retired_files = cloud_broker.router("r-aaaaaaaaaa")
    config = _cloud_config(cloud_broker, tmp_path, "r-aaaaaaaaaa", "r-bbbbbbbbbb")
    retired = Peer("r-aaaaaaaaaa").as_router(cloud_broker, retired_files)
    neighbour = Peer("r-bbbbbbbbbb").as_router(cloud_broker, cloud_broker.router("r-bbbbbbbbbb"))
    service = Peer().as_service(cloud_broker)
    peers += [retired, neighbour, service]
    assert retired.accepted and neighbour.accepted
    reconnects = threading.Event()  # like the agent, it tries again at once when dropped
    retired.client.on_connect = lambda *_: reconnects.set()
    retired.client.reconnect_delay_set(1, 1)
    service.subscribe(INGEST_SHARE)

    started = time.monotonic()
    assert main(["--config", str(config), "retire", "r-aaaaaaaaaa"]) == 0

    assert retired.disconnected.wait(CUT_WITHIN), "the retired router is still connected"
    assert time.monotonic() - started < CUT_WITHIN
    again = Peer("r-aaaaaaaaaa").as_router(cloud_broker, retired_files)
    peers.append(again)
    assert not again.accepted and again.disconnected.is_set()
    assert not reconnects.wait(2.5), "the retired router's own client got back in"
    assert "certificate verify failed" in cloud_broker.log.read_text()
    neighbour.publish(up("r-bbbbbbbbbb"), b"still here")
    assert service.until(up("r-bbbbbbbbbb"), b"still here")
    assert not neighbour.disconnected.is_set()


def test_a_broker_started_after_the_retirement_refuses_the_router_too(
    cloud_broker: CloudBroker, peers: list[Peer], tmp_path: Path
) -> None:
    files = cloud_broker.router("r-aaaaaaaaaa")
    config = _cloud_config(cloud_broker, tmp_path, "r-aaaaaaaaaa")
    stop_mosquitto(cloud_broker.process)
    assert main(["--config", str(config), "retire", "r-aaaaaaaaaa"]) == 0
    conf = cloud_broker.settings.data_dir / "broker" / "mosquitto.conf"
    restarted = start_mosquitto(conf, cloud_broker.settings, cloud_broker.log)
    try:
        peer = Peer().as_router(cloud_broker, files)
        peers.append(peer)
        assert not peer.accepted
    finally:
        stop_mosquitto(restarted)


def test_a_router_back_in_before_a_slow_reload_is_thrown_out_again(
    cloud_broker: CloudBroker, peers: list[Peer], tmp_path: Path
) -> None:
    files = cloud_broker.router("r-aaaaaaaaaa")
    pid = cloud_broker.process.pid
    slow = f"sh -c '(sleep 2; kill -HUP {pid}) >/dev/null 2>&1 &'"  # reloads 2 s later
    config = _cloud_config(cloud_broker, tmp_path, "r-aaaaaaaaaa", reload_command=slow)
    retired = Peer("r-aaaaaaaaaa").as_router(cloud_broker, files)
    peers.append(retired)
    seen = {"connects": 0, "up": True}
    retired.client.on_connect = lambda *_: seen.update(connects=seen["connects"] + 1, up=True)
    retired.client.on_disconnect = lambda *_: seen.update(up=False)
    retired.client.reconnect_delay_set(1, 1)  # back 1 s after the first takeover: too early

    started = time.monotonic()
    assert main(["--config", str(config), "retire", "r-aaaaaaaaaa"]) == 0

    time.sleep(max(0.0, started + 5.0 - time.monotonic()))  # tries at ~1.5, 3.5 and 4.5 s
    assert seen == {"connects": 1, "up": False}  # back in once before the reload, then out


def test_a_router_whose_certificate_the_crl_cannot_name_is_denied_everything(
    cloud_broker: CloudBroker, peers: list[Peer], tmp_path: Path
) -> None:
    files = cloud_broker.router("r-aaaaaaaaaa")
    (cloud_broker.ca.directory / "issued.jsonl").unlink()  # signed before the ledger was kept
    config = _cloud_config(cloud_broker, tmp_path, "r-aaaaaaaaaa")
    service = Peer().as_service(cloud_broker)
    peers.append(service)
    service.subscribe(INGEST_SHARE)

    assert main(["--config", str(config), "retire", "r-aaaaaaaaaa"]) == 0

    again = Peer("r-aaaaaaaaaa").as_router(cloud_broker, files)
    peers.append(again)
    assert again.accepted  # its TLS handshake holds: nothing in the CRL names its certificate
    again.subscribe("loopspot/v1/r-aaaaaaaaaa/down/#")
    again.publish(up("r-aaaaaaaaaa"), b"from a retired router")
    service.publish("loopspot/v1/r-aaaaaaaaaa/down/cmd", b"for a retired router")
    neighbour = Peer().as_router(cloud_broker, cloud_broker.router("r-bbbbbbbbbb"))
    peers.append(neighbour)
    neighbour.publish(up("r-bbbbbbbbbb"), b"marker")

    assert service.until(up("r-bbbbbbbbbb"), b"marker") == [(up("r-bbbbbbbbbb"), b"marker")]
    with pytest.raises(queue.Empty):  # the ACL lets nothing through to it either
        again.messages.get(timeout=1.0)
