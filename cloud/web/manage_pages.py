"""Management pages: channel agents, merchants, sites and claim codes; the merchant's staff PIN."""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    """This module's routes."""
