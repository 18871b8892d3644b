"""The linked daemon checks its certificate in a process of its own, and says when it fails."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from agent.link.runtime import watch_certificate


async def test_a_failed_check_is_logged_and_the_watch_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="loopspot.link")
    watch = asyncio.create_task(watch_certificate(tmp_path / "not-enrolled", first=0, every=3600))
    try:
        for _ in range(300):
            if "certificate renewal failed" in caplog.text:
                break
            await asyncio.sleep(0.1)
        assert "router.crt" in caplog.text  # the child names what it could not read
        assert not watch.done()  # still watching, for the next check
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
