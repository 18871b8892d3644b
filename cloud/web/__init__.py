"""The cloud's JSON API (aiohttp): routes under /api/v1/."""
