"""Helper programs the agent runs: their status and words, and never a hang."""

from __future__ import annotations

import sys

from agent.child import run_child


async def test_a_helper_that_fails_is_reported_with_what_it_said() -> None:
    code = "import sys; print('no pool serves br-lan', file=sys.stderr); sys.exit(3)"
    done = await run_child(sys.executable, "-c", code, within=30)
    assert (done.returncode, done.said, done.ok) == (3, "no pool serves br-lan", False)


async def test_a_helper_that_hangs_is_stopped() -> None:
    done = await run_child(sys.executable, "-c", "import time; time.sleep(30)", within=0.3)
    assert done.returncode is None and "stopped it" in done.said


async def test_a_helper_that_is_missing_is_said_so() -> None:
    done = await run_child("/nonexistent/dnsmasq-sync", within=5)
    assert done.returncode is None and done.said.startswith("cannot run /nonexistent")
