"""Tests for portal_templates/: every page renders in both languages and keeps the portal rules."""

from __future__ import annotations

import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from agent.portal.i18n import TEMPLATE_FILTERS, load_messages, other_language
from agent.portal.offers import STATE_KEYS, CouponView, Offer
from agent.portal.staff import REFUSAL_KEYS

TEMPLATES = Path(__file__).parents[3] / "portal_templates"
DEFAULT = TEMPLATES / "default"
MESSAGES = load_messages(DEFAULT / "messages.json")
LANGS = ("en", "zh")
PAGES = (
    "portal.html",
    "online.html",
    "unknown_client.html",
    "error.html",
    "wallet.html",
    "wallet_coupon.html",
    "wallet_move.html",
)
STAFF_PAGES = ("staff.html", "staff_verdict.html")  # not shopper pages: staff.js allowed
CJK = re.compile(r"[\u4e00-\u9fff]")
MAX_PAGE = 20 * 1024


def environment(*brands: Path) -> Environment:
    """The environment the app builds: autoescape on, brand folders before default/."""
    env = Environment(
        loader=FileSystemLoader([*brands, DEFAULT]), autoescape=True, undefined=StrictUndefined
    )
    env.filters.update(TEMPLATE_FILTERS)
    return env


def coupon_view(number: int, state: str = "state_valid") -> CouponView:
    """A coupon as the pages get it, with an English offer."""
    return CouponView(
        f"{number:032x}",
        "7KQ2M-X9D4R",
        Offer("Spa 20% off", "Weekdays only, one per visit.", "Lotus Spa"),
        1_800_000_000,
        1_802_592_000,
        state,
        state == "state_valid",
        "A" * 341,
    )


QR = '<svg viewBox="0 0 65 65" class="qr"><path stroke="#000" d="M4 4.5h7"/></svg>'
WALLET = [coupon_view(1), coupon_view(2, "state_spent"), coupon_view(3, "state_not_yet_valid")]
PAGE_CONTEXT: dict[str, dict[str, Any]] = {
    "portal.html": {"terms_version": "3", "csrf_token": "tok-123", "accept_url": "/accept"},
    "online.html": {
        "seconds_remaining": 3900,
        "bytes_remaining": 1_536_000,
        "terms_version": "3",
        "coupons_on": True,
        "new_coupons": [coupon_view(1)],
    },
    "error.html": {"title": "Too many requests", "message": "Wait a moment."},
    "unknown_client.html": {},
    "wallet.html": {
        "coupons": [*WALLET, *(coupon_view(n) for n in range(4, 20))],
        "coupons_on": True,
        "csrf_token": "tok-123",
        "notice": "Done.",
        "notice_failed": False,
    },
    "wallet_coupon.html": {"coupon": coupon_view(1), "qr": Markup(QR)},
    "wallet_move.html": {"move_code": "ABCDE-FGHJK", "move_expires": 1_800_000_900},
    "staff.html": {"mode": "check", "notice": "", "csrf_token": "tok-123", "staff_path": "/staff"},
    "staff_verdict.html": {
        "valid": True,
        "redeemed": False,
        "tried_redeem": False,
        "refusal_key": "",
        "hint": "",
        "known": True,
        "offer": Offer("Spa 20% off", "Weekdays only.", "Lotus Spa"),
        "code": "7KQ2M-X9D4R",
        "not_before": 1_800_000_000,
        "not_after": 1_802_592_000,
        "on_wifi": True,
        "typed": "7KQ2MX9D4R",
        "csrf_token": "tok-123",
        "staff_path": "/staff",
    },
}


def context(page: str, lang: str, **overrides: Any) -> dict[str, Any]:
    """The context contract of base.html, filled in for one page."""
    values: dict[str, Any] = {
        "t": MESSAGES[lang],
        "lang": lang,
        "other_lang": other_language(lang),
        "lang_switch_url": f"/portal?lang={other_language(lang)}",
        "site_name": "Sunny Side Café",
        "static_url": "/static",
        "portal_path": "/portal",
    }
    return values | PAGE_CONTEXT[page] | overrides


def render(page: str, lang: str, env: Environment | None = None, **overrides: Any) -> str:
    return (env or environment()).get_template(page).render(context(page, lang, **overrides))


class Page(HTMLParser):
    """The elements of a rendered page, as (tag, attributes) in document order."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {name: value or "" for name, value in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def by_id(self, element_id: str) -> dict[str, str]:
        found = [attrs for _, attrs in self.elements if attrs.get("id") == element_id]
        assert len(found) == 1, f"expected one #{element_id}, found {len(found)}"
        return found[0]

    def tags(self, name: str) -> list[dict[str, str]]:
        return [attrs for tag, attrs in self.elements if tag == name]


EVERY_PAGE = [(page, lang) for page in PAGES for lang in LANGS]


@pytest.mark.parametrize(("page", "lang"), EVERY_PAGE)
def test_page_works_in_a_captive_window_without_javascript(page: str, lang: str) -> None:
    html = render(page, lang)
    parsed = Page(html)
    assert "<script" not in html.lower()
    assert "javascript:" not in html.lower()
    assert not parsed.tags("iframe")
    for tag, attrs in parsed.elements:
        handlers = [name for name in attrs if name.startswith("on")]
        assert not handlers, f"<{tag}> has event handlers {handlers}"
    assert len(html.encode("utf-8")) < MAX_PAGE


@pytest.mark.parametrize(("page", "lang"), EVERY_PAGE)
def test_page_links_only_to_the_portal_itself(page: str, lang: str) -> None:
    parsed = Page(render(page, lang))
    own = ("/portal", "/static/", "/accept", "data:")
    for tag, attrs in parsed.elements:
        for name in ("href", "src", "action"):
            if name in attrs:
                assert attrs[name].startswith(own), (
                    f"<{tag} {name}={attrs[name]!r}> leaves the portal"
                )


@pytest.mark.parametrize(("page", "lang"), EVERY_PAGE)
def test_page_has_language_viewport_stylesheet_and_switch(page: str, lang: str) -> None:
    parsed = Page(render(page, lang))
    assert parsed.tags("html")[0]["lang"] == MESSAGES[lang]["html_lang"]
    viewport = [m for m in parsed.tags("meta") if m.get("name") == "viewport"]
    assert "width=device-width" in viewport[0]["content"]
    sheets = [link["href"] for link in parsed.tags("link") if link.get("rel") == "stylesheet"]
    assert sheets == ["/static/portal.css"]
    switch = parsed.by_id("lang-switch")
    assert switch["href"] == f"/portal?lang={other_language(lang)}"
    assert switch["hreflang"] == other_language(lang)


@pytest.mark.parametrize("lang", LANGS)
def test_one_tap_form_posts_terms_acceptance_with_csrf(lang: str) -> None:
    parsed = Page(render("portal.html", lang))
    forms = parsed.tags("form")
    assert len(forms) == 1
    assert forms[0]["method"] == "post"
    assert forms[0]["action"] == "/accept"
    hidden = {i["name"]: i["value"] for i in parsed.tags("input") if i.get("type") == "hidden"}
    assert hidden == {"csrf": "tok-123", "terms_version": "3", "lang": lang}
    accept = parsed.by_id("accept")
    assert accept["type"] == "submit"
    assert MESSAGES[lang]["accept_button"] in "".join(parsed.text)


@pytest.mark.parametrize("lang", LANGS)
def test_portal_shows_the_terms_and_their_version(lang: str) -> None:
    text = "".join(Page(render("portal.html", lang)).text)
    assert MESSAGES[lang]["terms_p1"] in text
    assert f"{MESSAGES[lang]['terms_version_label']} 3" in text


@pytest.mark.parametrize(
    ("lang", "seconds", "data", "time_text", "data_text"),
    [
        ("en", 3900, 1_536_000, "1 h 05 min", "1.5 MB"),
        ("zh", 3900, 1_536_000, "1小时05分", "1.5MB"),
        ("en", None, None, "no limit", "no limit"),
        ("zh", None, None, "不限", "不限"),
    ],
)
def test_online_page_shows_time_and_data_left(
    lang: str, seconds: int | None, data: int | None, time_text: str, data_text: str
) -> None:
    html = render("online.html", lang, seconds_remaining=seconds, bytes_remaining=data)
    parsed = Page(html)
    parsed.by_id("online")
    assert parsed.by_id("seconds-remaining")["data-seconds"] == (
        "" if seconds is None else str(seconds)
    )
    assert parsed.by_id("bytes-remaining")["data-bytes"] == ("" if data is None else str(data))
    assert f'id="seconds-remaining" data-seconds="{seconds or ""}">{time_text}<' in html
    assert f'id="bytes-remaining" data-bytes="{data or ""}">{data_text}<' in html
    assert MESSAGES[lang]["session_note"] in "".join(parsed.text)


@pytest.mark.parametrize("lang", LANGS)
def test_unknown_phone_page_explains_and_offers_try_again(lang: str) -> None:
    parsed = Page(render("unknown_client.html", lang))
    assert parsed.by_id("try-again")["href"] == "/portal"
    text = "".join(parsed.text)
    assert MESSAGES[lang]["unknown_title"] in text
    assert MESSAGES[lang]["unknown_step_3"] in text


def test_error_page_shows_title_message_and_way_back() -> None:
    parsed = Page(render("error.html", "en", title="Slow down", message="Too many taps."))
    assert "Slow down" in "".join(parsed.text)
    assert "Too many taps." in "".join(parsed.text)
    assert parsed.by_id("back")["href"] == "/portal"


@pytest.mark.parametrize("page", PAGES)
def test_chinese_pages_are_in_chinese_and_english_pages_are_not(page: str) -> None:
    zh_text = "".join(Page(render(page, "zh")).text)
    en_text = "".join(Page(render(page, "en")).text).replace(
        MESSAGES["en"]["other_language_name"], ""
    )
    assert len(CJK.findall(zh_text)) >= 8
    assert not CJK.findall(en_text)


@pytest.mark.parametrize(("page", "lang"), EVERY_PAGE)
def test_hostile_site_name_is_escaped(page: str, lang: str) -> None:
    evil = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    html = render(page, lang, site_name=evil, title=evil, message=evil)
    assert "<script" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;" in html


def test_hostile_csrf_token_cannot_break_out_of_its_attribute() -> None:
    parsed = Page(render("portal.html", "en", csrf_token='"><b>x</b>'))
    hidden = {i["name"]: i["value"] for i in parsed.tags("input")}
    assert hidden["csrf"] == '"><b>x</b>'
    assert not parsed.tags("b")


def test_brand_overrides_one_partial_and_keeps_the_rest(tmp_path: Path) -> None:
    brand = tmp_path / "cafe"
    brand.mkdir()
    (brand / "_terms.html").write_text("<p>Cafe rules, {{ lang }}.</p>\n", encoding="utf-8")
    env = environment(brand)
    branded = render("portal.html", "en", env=env)
    assert "Cafe rules, en." in branded
    assert MESSAGES["en"]["terms_p1"] not in branded
    assert MESSAGES["en"]["accept_button"] in branded  # portal.html itself still from default/
    for page in ("online.html", "unknown_client.html", "error.html"):
        assert render(page, "en", env=env) == render(page, "en")


def test_brand_overrides_a_whole_page(tmp_path: Path) -> None:
    brand = tmp_path / "spa"
    brand.mkdir()
    (brand / "online.html").write_text(
        '{% extends "base.html" %}{% block content %}<p id="online">Relax.</p>{% endblock %}',
        encoding="utf-8",
    )
    env = environment(brand)
    assert Page(render("online.html", "zh", env=env)).by_id("online")
    assert render("portal.html", "zh", env=env) == render("portal.html", "zh")


def test_every_ui_string_is_used_and_every_used_string_exists() -> None:
    used: set[str] = set()
    for template in DEFAULT.glob("*.html"):
        used |= set(re.findall(r"\bt\.(\w+)", template.read_text(encoding="utf-8")))
    for module in (Path(__file__).parents[3] / "agent" / "portal").glob("*.py"):
        source = module.read_text(encoding="utf-8")
        used |= set(re.findall(r'\bt\["(\w+)"\]', source))
        used |= set(re.findall(r'_text\(portal, request, "(\w+)"\)', source))
        used |= set(re.findall(r'": "(move_error_\w+)"', source))
    used |= set(STATE_KEYS.values()) | set(REFUSAL_KEYS.values())
    used.discard("state")  # t[c.state]: the state keys, added above
    used.discard("refusal_key")
    assert used == set(MESSAGES["en"])


def test_stylesheet_is_small_and_self_contained() -> None:
    css = (DEFAULT / "static" / "portal.css").read_text(encoding="utf-8")
    assert len(css.encode("utf-8")) < MAX_PAGE
    assert "@import" not in css
    assert "url(" not in css
    assert "@font-face" not in css


EVERY_STAFF_PAGE = [(page, lang) for page in STAFF_PAGES for lang in LANGS]


@pytest.mark.parametrize(("page", "lang"), EVERY_STAFF_PAGE)
def test_staff_pages_load_only_the_staff_script_and_stay_on_the_router(
    page: str, lang: str
) -> None:
    html = render(page, lang)
    parsed = Page(html)
    assert [s.get("src") for s in parsed.tags("script")] == ["/static/staff.js"]
    assert html.count("<script") == 1 and "javascript:" not in html.lower()
    for tag, attrs in parsed.elements:
        assert not [name for name in attrs if name.startswith("on")], tag
        for name in ("href", "src", "action"):
            if name in attrs:
                assert attrs[name].startswith(("/staff", "/static/", "/portal", "data:"))
    assert len(html.encode("utf-8")) < MAX_PAGE
    assert len(CJK.findall("".join(parsed.text))) >= (8 if lang == "zh" else 0)


@pytest.mark.parametrize("mode", ["off", "no_pin", "login"])
def test_the_staff_page_has_no_script_before_login(mode: str) -> None:
    html = render("staff.html", "en", mode=mode)
    assert "<script" not in html
    ids = {"off": "staff-off", "no_pin": "staff-no-pin", "login": "staff-login"}
    Page(html).by_id(ids[mode])


@pytest.mark.parametrize("key", sorted(set(REFUSAL_KEYS.values())))
@pytest.mark.parametrize("lang", LANGS)
def test_every_refusal_reads_on_the_verdict_page(key: str, lang: str) -> None:
    parsed = Page(render("staff_verdict.html", lang, valid=False, refusal_key=key, hint="typo"))
    text = "".join(parsed.text)
    assert MESSAGES[lang][key] in text and "typo" in text
    assert not [f for f in parsed.tags("form") if f.get("id") == "redeem-form"]


@pytest.mark.parametrize("lang", LANGS)
def test_wallet_lists_codes_and_states_and_links_each_valid_coupon_to_its_qr(lang: str) -> None:
    parsed = Page(render("wallet.html", lang))
    text = "".join(parsed.text)
    for key in ("state_valid", "state_spent", "state_not_yet_valid", "move_have_code"):
        assert MESSAGES[lang][key] in text
    links = [a["href"] for a in parsed.tags("a") if a["href"].startswith("/portal/wallet/")]
    assert len(links) == 17  # the valid ones; the spent and the not yet valid have none
    assert all(f"?lang={lang}" in link for link in links)
    forms = parsed.tags("form")
    assert [f["action"] for f in forms] == [
        f"/portal/wallet/move-code?lang={lang}",
        f"/portal/wallet/move?lang={lang}",
    ]
    assert all(i["value"] == "tok-123" for i in parsed.tags("input") if i["name"] == "csrf")


def test_a_coupon_page_draws_its_qr_code_inline() -> None:
    html = render("wallet_coupon.html", "en")
    assert QR in html and "7KQ2M-X9D4R" in html
    assert "Weekdays only" in html


@pytest.mark.parametrize(
    ("image", "shown"),
    [("spa.jpg", "/static/spa.jpg"), ("https://cdn.example/spa.jpg", None), ("../x", None)],
)
def test_an_offers_image_is_shown_only_from_the_portals_static_folder(
    image: str, shown: str | None
) -> None:
    from agent.wire import Campaign

    offer = Offer.of(Campaign(title_en="Spa", image=image), "en")
    html = render("wallet_coupon.html", "en", coupon=replace(coupon_view(1), offer=offer))
    images = [i["src"] for i in Page(html).tags("img")]
    assert images == ([shown] if shown else [])


@pytest.mark.parametrize(("page", "lang"), EVERY_STAFF_PAGE)
def test_hostile_text_on_staff_pages_is_escaped(page: str, lang: str) -> None:
    evil = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    hostile = Offer(evil, evil, evil)
    html = render(
        page, lang, site_name=evil, notice=evil, hint=evil, typed=evil, offer=hostile, valid=True
    )
    assert html.count("<script") == 1  # staff.js only
    assert "<img src=x" not in html and "&lt;script&gt;" in html
