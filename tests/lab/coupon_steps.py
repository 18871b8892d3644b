"""What shoppers and staff do with coupons, as plain steps over HTTP from the shop's phones."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from http.cookies import SimpleCookie

from lab.client import HttpResponse, http_get, http_post_form
from lab.topology import Phone
from tests.lab.portal_steps import PORTAL, csrf_of

CODE = re.compile(r'class="code"[^>]*>([2-9A-HJKMNP-Z]{5}-[2-9A-HJKMNP-Z]{5})<')
COUPON_ID = re.compile(r'id="coupon-([0-9a-f]{32})"')
_FLAG = re.compile(r'data-(valid|redeemed|refusal|on-wifi)="([^"]*)"')


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


@dataclass
class Verdict:
    """What the staff page said about one code."""

    status: int
    valid: bool
    redeemed: bool
    refusal: str
    on_wifi: bool
    text: str


def _verdict(page: HttpResponse) -> Verdict:
    flags = dict(_FLAG.findall(page.text))
    return Verdict(
        page.status,
        flags.get("valid") == "yes",
        flags.get("redeemed") == "yes",
        flags.get("refusal", ""),
        flags.get("on-wifi") == "yes",
        page.text,
    )


@dataclass
class Counter:
    """Staff at the counter, on the till phone: log in with the PIN, check, redeem."""

    till: Phone
    cookies: dict[str, str] = field(default_factory=dict)

    def _headers(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}

    def _keep(self, page: HttpResponse) -> HttpResponse:
        for header in page.headers.get_all("Set-Cookie") or []:
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel.value:
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)
        return page

    def page(self) -> HttpResponse:
        """The staff page as the till shows it now."""
        return self._keep(
            http_get(self.till.ns, f"{PORTAL}/staff?lang=en", headers=self._headers())
        )

    def _post(self, path: str, fields: dict[str, str]) -> HttpResponse:
        token = csrf_of(self.page())
        return self._keep(
            http_post_form(
                self.till.ns,
                f"{PORTAL}/staff/{path}?lang=en",
                {"csrf": token, **fields},
                headers=self._headers(),
                timeout=10,
            )
        )

    def log_in(self, pin: str) -> HttpResponse:
        """Type the staff PIN."""
        return self._post("login", {"pin": pin})

    def check(self, code: str) -> Verdict:
        """Type (or scan) a code and see the verdict."""
        return _verdict(self._post("check", {"code": code}))

    def redeem(self, code: str) -> Verdict:
        """Check a code, then tap redeem."""
        return _verdict(self._post("redeem", {"code": code}))
