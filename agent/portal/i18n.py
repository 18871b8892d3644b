"""The portal's languages: choosing one per request, loading UI strings, formatting amounts."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Final, TypeAlias

from agent.errors import ConfigError
from agent.settings import LANGUAGES

Messages: TypeAlias = dict[str, dict[str, str]]
"""UI strings by language, then by key: `messages["zh"]["accept_button"]`."""

# Longer headers are cut before parsing; browsers send well under 200 characters.
_MAX_HEADER = 4096
_MAX_TAG = 64
# Primary subtags served in Chinese: zh, Mandarin (cmn) and Cantonese (yue).
_PRIMARY: Final[Mapping[str, str]] = MappingProxyType(
    {"en": "en", "zh": "zh", "cmn": "zh", "yue": "zh"}
)
# A language range: "*" or ASCII subtags joined by "-" (or "_", which some apps send).
_RANGE = re.compile(r"\*|([A-Za-z]{1,8})(?:[-_][A-Za-z0-9]{1,8})*")
# RFC 9110 qvalue, read leniently: any number of decimals, optional spaces around "=".
_QVALUE = re.compile(r"[qQ]\s*=\s*(0(?:\.[0-9]*)?|1(?:\.0*)?)")


def _language_of(tag: str) -> str | None:
    """The supported language a tag names ("zh-Hant-TW" -> "zh"), or None."""
    match = _RANGE.fullmatch(tag.strip()[:_MAX_TAG])
    if match is None or match.group(1) is None:
        return None
    return _PRIMARY.get(match.group(1).lower())


def _ranges(header: str) -> list[tuple[str, float]]:
    """The (range, q) pairs of an Accept-Language header in order; malformed entries dropped."""
    ranges: list[tuple[str, float]] = []
    if len(header) > _MAX_HEADER:  # the cut may split the last entry: drop it
        header = header[:_MAX_HEADER].rpartition(",")[0]
    for entry in header.split(","):
        tag, *params = entry.split(";")
        tag = tag.strip()
        if not tag or _RANGE.fullmatch(tag) is None:
            continue
        q = 1.0
        for param in params:
            param = param.strip()
            if param[:1] in ("q", "Q"):
                weight = _QVALUE.fullmatch(param)
                if weight is None:
                    break
                q = float(weight.group(1))
        else:
            ranges.append((tag, q))
    return ranges


def _from_header(header: str, preferred: str) -> str | None:
    """The language the header rates highest (q > 0), earliest or `preferred` on a tie, or None."""
    explicit: dict[str, tuple[float, int]] = {}
    wildcard: tuple[float, int] | None = None
    for position, (tag, q) in enumerate(_ranges(header)):
        if tag == "*":
            if wildcard is None or q > wildcard[0]:
                wildcard = (q, position)
            continue
        lang = _language_of(tag)
        if lang is not None and (lang not in explicit or q > explicit[lang][0]):
            explicit[lang] = (q, position)
    best: str | None = None
    best_key = (0.0, 0, 0)
    for lang in LANGUAGES:
        rating = explicit.get(lang, wildcard)  # "*" rates only languages not named
        if rating is None or rating[0] <= 0:
            continue
        key = (rating[0], -rating[1], lang == preferred)
        if best is None or key > best_key:
            best, best_key = lang, key
    return best


def pick_language(
    accept_language: str | None, query_lang: str | None, default: str = "auto"
) -> str:
    """Return "en"/"zh": a valid ?lang=, else Accept-Language by q, else default, else "en"."""
    if query_lang:
        lang = _language_of(query_lang)
        if lang is not None:
            return lang
    fallback = default if default in LANGUAGES else "en"
    if accept_language:
        lang = _from_header(accept_language, fallback)
        if lang is not None:
            return lang
    return fallback


def other_language(lang: str) -> str:
    """The language the switch link offers: "zh" on an English page, otherwise "en"."""
    return "en" if lang == "zh" else "zh"


def load_messages(path: Path) -> Messages:
    """Read {"en": {key: text}, "zh": {…}}, same non-empty keys; ConfigError names file and key."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text", fix="save it as UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid JSON: {exc.msg}", line=exc.lineno, fix="check quotes and commas"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold one JSON object", fix='use {"en": {...}, "zh": {...}}')
    messages: Messages = {}
    for lang in LANGUAGES:
        table = data.get(lang)
        if not isinstance(table, dict):
            raise ConfigError(
                f"{path}: language '{lang}' is missing or not an object",
                option=lang,
                fix=f'add "{lang}": {{...}} with every UI string',
            )
        for key, text in table.items():
            if not isinstance(text, str) or not text.strip():
                raise ConfigError(
                    f"{path}: '{lang}.{key}' must be non-empty text",
                    option=f"{lang}.{key}",
                    fix="give it a translated string",
                )
        messages[lang] = dict(table)
    for lang in LANGUAGES:
        for other in LANGUAGES:
            missing = sorted(messages[lang].keys() - messages[other].keys())
            if missing:
                raise ConfigError(
                    f"{path}: key '{missing[0]}' is in '{lang}' but missing from '{other}'",
                    option=f"{other}.{missing[0]}",
                    fix=f"add '{missing[0]}' to \"{other}\"",
                )
    return messages


def format_duration(seconds: int | None, lang: str) -> str:
    """Time left, floored, ≥ 0: "1 h 05 min"/"1小时05分", "5 min", "45 s"; None -> "no limit"."""
    zh = lang == "zh"
    if seconds is None:
        return "不限" if zh else "no limit"
    days, rest = divmod(max(0, seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}天{hours:02d}小时" if zh else f"{days} d {hours:02d} h"
    if hours:
        return f"{hours}小时{minutes:02d}分" if zh else f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes}分钟" if zh else f"{minutes} min"
    return f"{secs}秒" if zh else f"{secs} s"


_BYTE_UNITS = ("B", "KB", "MB", "GB", "TB", "PB")


def format_bytes(n: int | None, lang: str) -> str:
    """Data left, floored, ≥ 0, in 1000s: "1.5 MB", "250 MB" (zh "1.5MB"); None -> "no limit"."""
    zh = lang == "zh"
    if n is None:
        return "不限" if zh else "no limit"
    n = max(0, n)
    unit, scale = 0, 1
    while n >= scale * 1000 and unit < len(_BYTE_UNITS) - 1:
        unit, scale = unit + 1, scale * 1000
    tenths = n * 10 // scale
    if unit and tenths < 100 and tenths % 10:
        amount = f"{tenths // 10}.{tenths % 10}"
    else:
        amount = str(n // scale)
    return f"{amount}{'' if zh else ' '}{_BYTE_UNITS[unit]}"


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_moment(seconds: int | None, lang: str) -> str:
    """A Unix time in the router's local time: "15 Feb 2027, 08:00" / "2027年2月15日 08:00"."""
    if seconds is None:
        return ""
    at = datetime.fromtimestamp(seconds)
    if lang == "zh":
        return f"{at.year}年{at.month}月{at.day}日 {at:%H:%M}"
    return f"{at.day} {_MONTHS[at.month - 1]} {at.year}, {at:%H:%M}"


TEMPLATE_FILTERS: Final[Mapping[str, Callable[[int | None, str], str]]] = MappingProxyType(
    {"duration": format_duration, "data_size": format_bytes, "moment": format_moment}
)
"""The Jinja filters: `{{ secs | duration(lang) }}`, `{{ n | data_size(lang) }}`, `moment`."""
