"""A helper program run from the loop: waited for, bounded in time, its output kept short."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

OUTPUT_LIMIT = 2000  # characters of its output kept for the log


@dataclass(frozen=True, slots=True)
class Finished:
    """How a helper program ended: its exit status (None: it could not run or was stopped)
    and what it printed, stdout first, else stderr."""

    returncode: int | None
    said: str

    @property
    def ok(self) -> bool:
        """It ran and exited 0."""
        return self.returncode == 0


async def run_child(*argv: str, within: float) -> Finished:
    """Run `argv` to its end, or stop it after `within` seconds; never raises for it."""
    try:
        child = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except OSError as error:
        return Finished(None, f"cannot run {argv[0]}: {error}")
    try:
        out, err = await asyncio.wait_for(child.communicate(), within)
    except TimeoutError:
        child.kill()
        await child.wait()
        return Finished(None, f"{argv[0]} took over {within:.0f} s; stopped it")
    said = (out.strip() or err.strip()).decode(errors="replace")
    return Finished(child.returncode, said[:OUTPUT_LIMIT])
