"""The coupon screens: campaigns, partnerships, the funnel and flows; the staff counter."""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    """This module's routes."""
