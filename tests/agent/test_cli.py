"""`loopspot-agent`: options go before or after the command; bad configs exit 2 with the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main

SHIPPED = Path(__file__).parents[2] / "deploy" / "openwrt" / "files" / "loopspot.config"


@pytest.mark.parametrize(
    "argv",
    [
        ["config-check", "--config", str(SHIPPED)],
        ["--config", str(SHIPPED), "config-check"],
        ["config-check", str(SHIPPED)],
    ],
)
def test_config_check_accepts_the_shipped_config_whatever_the_option_order(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 0
    assert "OK" in capsys.readouterr().out


def test_config_check_names_the_bad_option_line_and_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "loopspot"
    config.write_text("config agent 'agent'\n\toption portal_prot '2050'\n")
    assert main(["config-check", str(config)]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "portal_prot" in err and "portal_port" in err


def test_run_with_a_bad_config_stops_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "loopspot"
    config.write_text("config session 'session'\n\toption timeout 'soon'\n")
    assert main(["run", "--config", str(config)]) == 2
    assert "timeout" in capsys.readouterr().err


def test_talking_to_an_agent_that_is_not_running_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--socket", str(tmp_path / "none.sock"), "status"]) == 2
    assert "is it running?" in capsys.readouterr().err
