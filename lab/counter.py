"""Staff at a shop's counter, on a phone of the shop's LAN: the staff page over HTTP."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from http.cookies import SimpleCookie

from lab import addresses as A
from lab.client import HttpResponse, http_get, http_post_form
from lab.topology import Phone

PORTAL = f"http://{A.ROUTER_LAN_IP}:2050"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_FLAG = re.compile(r'data-(valid|redeemed|refusal|on-wifi)="([^"]*)"')


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the staff page said about one code."""

    status: int
    valid: bool
    redeemed: bool
    refusal: str  # the message key, e.g. "refusal_spent"; "" when valid
    on_wifi: bool
    text: str


def verdict_of(page: HttpResponse) -> Verdict:
    """The verdict a staff page shows."""
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
    """Staff on the till phone: log in with the PIN, check codes, redeem them."""

    till: Phone
    cookies: dict[str, str] = field(default_factory=dict)
    csrf: str = ""  # the token of the last page shown, as its forms carry it

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
        found = _CSRF.search(page.text)
        if found:
            self.csrf = found.group(1)
        return page

    def page(self) -> HttpResponse:
        """The staff page as the till shows it now."""
        url = f"{PORTAL}/staff?lang=en"
        return self._keep(http_get(self.till.ns, url, headers=self._headers()))

    def submit(self, path: str, fields: dict[str, str]) -> HttpResponse:
        """Submit a form of the page shown last (its CSRF token), as the till's browser does."""
        if not self.csrf:
            self.page()
        return self._keep(
            http_post_form(
                self.till.ns,
                f"{PORTAL}/staff/{path}?lang=en",
                {"csrf": self.csrf, **fields},
                headers=self._headers(),
                timeout=10,
            )
        )

    def log_in(self, pin: str) -> HttpResponse:
        """Type the staff PIN; afterwards the staff page shows the check form."""
        self.page()
        answer = self.submit("login", {"pin": pin})
        self.page()
        return answer

    def check(self, code: str) -> Verdict:
        """Type (or scan) a code and see the verdict."""
        return verdict_of(self.submit("check", {"code": code}))

    def redeem(self, code: str) -> Verdict:
        """Tap redeem for a code."""
        return verdict_of(self.submit("redeem", {"code": code}))
