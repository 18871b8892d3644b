"""An operator pushes a config and a command from `loopspot-cloud` through the real broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent import wire
from cloud.cli import main
from tests.cloud.test_broker_acl import CloudBroker, Peer, cloud_broker

__all__ = ["cloud_broker"]


def run(config: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["--config", str(config), *argv])
    out, err = capsys.readouterr()
    return code, out + err


def claimed_router(config: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """An initialised cloud with one merchant, site and claimed router; its id."""
    assert run(config, capsys, "init", "--bind", "127.0.0.1")[0] == 0
    run(config, capsys, "merchant", "create", "Bistro")
    run(config, capsys, "site", "create", "--merchant", "Bistro", "Main Street")
    _, out = run(config, capsys, "--json", "claim", "create", "--site", "1")
    return str(json.loads(out)["router_id"])


@pytest.fixture
def config(tmp_path: Path, cloud_broker: CloudBroker) -> Path:
    s = cloud_broker.settings
    path = tmp_path / "cloud.toml"
    path.write_text(
        f'database_url = "sqlite:///{tmp_path}/cloud.db"\ndata_dir = "{s.data_dir}"\n'
        f"broker_port = {s.broker_port}\npublic_broker_port = {s.public_broker_port}\n"
        'public_broker_host = "localhost"\n'
    )
    return path


def test_operator_pushes_a_config_and_a_command_to_a_router(
    config: Path, cloud_broker: CloudBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    router_id = claimed_router(config, capsys)
    router = Peer().as_router(cloud_broker, cloud_broker.router(router_id))
    try:
        assert router.accepted
        router.client.subscribe(f"loopspot/v1/{router_id}/down/#", qos=1)
        code, out = run(
            config,
            capsys,
            "config",
            "push",
            router_id,
            "--set",
            "session_timeout=1800",
            "--set",
            'walled_garden_addresses=["198.51.100.10/32"]',
        )
        assert code == 0, out
        topic, payload = router.messages.get(timeout=10)
        assert topic.endswith("/down/config")
        pushed = wire.decode(payload, wire.RouterConfig)
        assert (pushed.version, pushed.session_timeout) == (1, 1800)
        assert pushed.walled_garden_addresses == ("198.51.100.10/32",)
        code, out = run(config, capsys, "command", router_id, "send_status")
        assert code == 0, out
        topic, payload = router.messages.get(timeout=10)
        assert wire.decode(payload, wire.Command).action is wire.CommandAction.SEND_STATUS
    finally:
        router.client.loop_stop()
        router.client.disconnect()


def test_a_bad_field_is_refused_with_its_name_and_exit_1(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    router_id = claimed_router(config, capsys)
    code, out = run(config, capsys, "config", "push", router_id, "--set", "idle_timout=60")
    assert code == 1 and "idle_timout" in out
