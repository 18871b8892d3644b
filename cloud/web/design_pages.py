"""The portal's design: name, logo, colours, welcome text and terms, versioned, pushed to
the merchant's routers as config."""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    """This module's routes."""
