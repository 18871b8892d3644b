"""What shoppers and staff do with coupons, as plain steps over HTTP from the shop's phones."""

from __future__ import annotations

import re

from lab.client import HttpResponse, http_get
from lab.counter import Counter, Verdict
from lab.topology import Phone
from tests.lab.portal_steps import PORTAL

__all__ = ["Counter", "Verdict", "codes_on", "online_page", "wallet"]

CODE = re.compile(r'class="code"[^>]*>([2-9A-HJKMNP-Z]{5}-[2-9A-HJKMNP-Z]{5})<')
COUPON_ID = re.compile(r'id="coupon-([0-9a-f]{32})"')


def codes_on(page: HttpResponse) -> list[str]:
    """The short codes a page shows (the online page's new coupons, or a wallet)."""
    return CODE.findall(page.text)


def wallet(phone: Phone) -> HttpResponse:
    """The phone's wallet page."""
    page = http_get(phone.ns, f"{PORTAL}/portal/wallet?lang=en", timeout=10)
    assert page.status == 200, page.text[:500]
    return page


def online_page(phone: Phone) -> HttpResponse:
    """The 'you are online' page, with the coupons just given."""
    return http_get(phone.ns, f"{PORTAL}/portal/online?lang=en", timeout=10)
