"""The merchant owner's visitor pages: visitors per hour and day, passers-by, new and
returning, dwell, sessions, terms."""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    """This module's routes."""
