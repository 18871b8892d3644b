"""Tests for agent.portal.i18n: language choice, UI strings, formatted amounts."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import ConfigError
from agent.portal.i18n import (
    TEMPLATE_FILTERS,
    format_bytes,
    format_duration,
    load_messages,
    other_language,
    pick_language,
)

MESSAGES = Path(__file__).parents[3] / "portal_templates" / "default" / "messages.json"

# What phones and browsers really send.
REAL_HEADERS = [
    ("zh-CN,zh-Hans;q=0.9", "zh"),
    ("zh-cn", "zh"),
    ("zh-TW,zh;q=0.9,en-US;q=0.8,en;q=0.7", "zh"),
    ("zh-Hant-HK", "zh"),
    ("zh-Hans-CN;q=1.0, en;q=0.5", "zh"),
    ("yue-HK", "zh"),
    ("en-US,en;q=0.9", "en"),
    ("en-GB,en;q=0.9,zh-CN;q=0.8", "en"),
    ("en-US;q=0.8,en;q=0.7,zh-CN;q=0.9", "zh"),
    ("de-DE,de;q=0.9,zh;q=0.5,en;q=0.4", "zh"),
    ("fr-FR,fr;q=0.9,en;q=0.1", "en"),
    ("zh;q=0, en;q=0.1", "en"),
    ("zh_CN", "zh"),
    ("  ZH-cn ; Q = 0.8 , en ; q=0.7", "zh"),
]


@pytest.mark.parametrize(("header", "expected"), REAL_HEADERS)
def test_shopper_gets_the_language_their_phone_asks_for(header: str, expected: str) -> None:
    assert pick_language(header, None) == expected


def test_lang_query_parameter_beats_the_phone_settings() -> None:
    assert pick_language("zh-CN,zh;q=0.9", "en") == "en"
    assert pick_language("en-US", "zh") == "zh"
    assert pick_language("en-US", "ZH-cn") == "zh"


@pytest.mark.parametrize("query", ["", "fr", "*", "e n", "zh!", "\uff5a\uff48", "x" * 10_000])
def test_invalid_lang_query_parameter_is_ignored(query: str) -> None:
    assert pick_language("zh-CN", query) == "zh"
    assert pick_language(None, query, default="zh") == "zh"


@pytest.mark.parametrize(
    ("header", "default", "expected"),
    [
        (None, "auto", "en"),
        (None, "zh", "zh"),
        ("", "zh", "zh"),
        ("fr-FR, de;q=0.5", "zh", "zh"),
        ("fr-FR, de;q=0.5", "auto", "en"),
        ("fr-FR", "klingon", "en"),
        ("*", "zh", "zh"),
        ("zh;q=0.1, *", "auto", "en"),
        ("en;q=0, *", "auto", "zh"),
    ],
)
def test_default_language_applies_when_the_phone_names_neither(
    header: str | None, default: str, expected: str
) -> None:
    assert pick_language(header, None, default=default) == expected


@pytest.mark.parametrize(
    "header",
    [
        "zh;q=nan",
        "zh;q=inf",
        "zh;q=1e3",
        "zh;q=-1",
        "zh;q=2",
        "zh;q=0.5.5",
        "zh;q=\uff10.\uff15",
        "zh;q=",
        "zh-;q=1",
        "\uff5a\uff48",
        ";;;,,,;;",
        "\x00zh\x00",
        "zh" + "-a" * 100_000,
        "en," * 100_000 + "zh",
        "zh;" + "q=1;" * 50_000,
    ],
)
def test_hostile_header_falls_back_without_raising(header: str) -> None:
    assert pick_language(header, None, default="en") == "en"


@given(st.one_of(st.none(), st.text()), st.one_of(st.none(), st.text()), st.text(max_size=8))
def test_any_header_text_gives_en_or_zh(
    header: str | None, query: str | None, default: str
) -> None:
    assert pick_language(header, query, default) in ("en", "zh")


@given(st.binary(max_size=500))
def test_any_header_bytes_give_en_or_zh(raw: bytes) -> None:
    # aiohttp hands over undecodable header bytes as latin-1 text.
    assert pick_language(raw.decode("latin-1"), None) in ("en", "zh")


ENGLISH = st.sampled_from(["en", "en-US", "en-GB", "EN", "en-Latn-US"])
CHINESE = st.sampled_from(["zh", "zh-CN", "zh-TW", "zh-Hans", "zh-Hant-HK", "cmn-Hans-CN"])
OTHER = st.sampled_from(["fr", "de-DE", "ja", "ko-KR", "es-419", "x-klingon"])
QVALUE = st.integers(min_value=1, max_value=1000).map(lambda q: f"{q / 1000:.3f}")


@given(ENGLISH, QVALUE, CHINESE, QVALUE, st.lists(st.tuples(OTHER, QVALUE)), st.randoms())
def test_higher_rated_language_wins(
    en: str,
    en_q: str,
    zh: str,
    zh_q: str,
    others: list[tuple[str, str]],
    rnd: random.Random,
) -> None:
    entries = [(en, en_q), (zh, zh_q), *others]
    rnd.shuffle(entries)
    header = ", ".join(f"{tag};q={q}" for tag, q in entries)
    chosen = pick_language(header, None)
    if float(en_q) > float(zh_q):
        assert chosen == "en"
    elif float(zh_q) > float(en_q):
        assert chosen == "zh"
    else:  # a tie goes to whichever the header names first
        first = next(tag for tag, _q in entries if tag in (en, zh))
        assert chosen == ("en" if first == en else "zh")


def test_switch_link_offers_the_other_language() -> None:
    assert other_language("en") == "zh"
    assert other_language("zh") == "en"


def test_shipped_messages_have_both_languages_with_the_same_keys() -> None:
    messages = load_messages(MESSAGES)
    assert messages["en"].keys() == messages["zh"].keys()
    assert messages["zh"]["accept_button"] == "同意并上网"


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "messages.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_missing_translation_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, {"en": {"title": "Hi", "accept_button": "Go"}, "zh": {"title": "你好"}})
    with pytest.raises(ConfigError) as caught:
        load_messages(path)
    assert "accept_button" in str(caught.value)
    assert str(path) in str(caught.value)
    assert caught.value.option == "zh.accept_button"


def test_key_only_in_chinese_is_reported_too(tmp_path: Path) -> None:
    path = write(tmp_path, {"en": {"title": "Hi"}, "zh": {"title": "你好", "extra": "多"}})
    with pytest.raises(ConfigError, match="'extra' is in 'zh' but missing from 'en'"):
        load_messages(path)


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        ([], "one JSON object"),
        ({"en": {"a": "b"}}, "language 'zh'"),
        ({"en": {"a": "b"}, "zh": ["a"]}, "language 'zh'"),
        ({"en": {"a": ""}, "zh": {"a": "乙"}}, "'en.a' must be non-empty"),
        ({"en": {"a": 1}, "zh": {"a": "乙"}}, "'en.a' must be non-empty"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(
    tmp_path: Path, data: object, complaint: str
) -> None:
    with pytest.raises(ConfigError, match=complaint):
        load_messages(write(tmp_path, data))


def test_broken_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "messages.json"
    path.write_text('{\n  "en": {\n    "a": "b",\n  }\n}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_messages(path)
    assert caught.value.line == 4
    assert str(path) in str(caught.value)


def test_unreadable_messages_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_messages(tmp_path / "absent.json")
    (tmp_path / "latin1.json").write_bytes(b'{"en": {"a": "caf\xe9"}}')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_messages(tmp_path / "latin1.json")


def test_extra_top_level_keys_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, {"_comment": "x", "en": {"a": "b"}, "zh": {"a": "乙"}, "fr": {}})
    assert load_messages(path) == {"en": {"a": "b"}, "zh": {"a": "乙"}}


@pytest.mark.parametrize(
    ("seconds", "en", "zh"),
    [
        (None, "no limit", "不限"),
        (3900, "1 h 05 min", "1小时05分"),
        (3600, "1 h 00 min", "1小时00分"),
        (3659, "1 h 00 min", "1小时00分"),
        (7199, "1 h 59 min", "1小时59分"),
        (300, "5 min", "5分钟"),
        (59, "59 s", "59秒"),
        (0, "0 s", "0秒"),
        (-5, "0 s", "0秒"),
        (90_000, "1 d 01 h", "1天01小时"),
    ],
)
def test_time_left_reads_naturally(seconds: int | None, en: str, zh: str) -> None:
    assert format_duration(seconds, "en") == en
    assert format_duration(seconds, "zh") == zh


@pytest.mark.parametrize(
    ("n", "en", "zh"),
    [
        (None, "no limit", "不限"),
        (0, "0 B", "0B"),
        (999, "999 B", "999B"),
        (1000, "1 KB", "1KB"),
        (1_536_000, "1.5 MB", "1.5MB"),
        (1_999_999, "1.9 MB", "1.9MB"),
        (250_000_000, "250 MB", "250MB"),
        (999_999_999, "999 MB", "999MB"),
        (2_000_000_000, "2 GB", "2GB"),
        (10**18, "1000 PB", "1000PB"),
        (-1, "0 B", "0B"),
    ],
)
def test_data_left_reads_naturally(n: int | None, en: str, zh: str) -> None:
    assert format_bytes(n, "en") == en
    assert format_bytes(n, "zh") == zh


@given(st.integers(min_value=0, max_value=10**15), st.integers(min_value=0, max_value=10**15))
def test_more_data_never_reads_as_less(a: int, b: int) -> None:
    def amount(n: int) -> float:
        number, unit = format_bytes(n, "en").split(" ")
        return float(number) * 1000.0 ** ["B", "KB", "MB", "GB", "TB", "PB"].index(unit)

    if a <= b:
        assert amount(a) <= amount(b) <= b


def test_template_filters_are_the_formatters() -> None:
    assert TEMPLATE_FILTERS["duration"](65, "en") == "1 min"
    assert TEMPLATE_FILTERS["data_size"](None, "zh") == "不限"


@pytest.mark.parametrize(
    ("lang", "text"),
    [("en", "15 Jan 2027, 08:00"), ("zh", "2027年1月15日 08:00"), ("en", "")],
)
def test_a_coupons_validity_reads_in_the_page_language(
    lang: str, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from agent.portal.i18n import format_moment

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        moment = None if not text else 1_800_000_000
        assert format_moment(moment, lang) == text
    finally:
        monkeypatch.undo()
        time.tzset()
