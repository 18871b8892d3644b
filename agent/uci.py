"""A pure parser for the UCI file syntax, as OpenWrt's libuci reads /etc/config files."""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from agent.errors import ConfigError

MAX_TEXT_CHARS = 1 << 20  # a config file past 1 MiB is not a config file
MAX_LINE_CHARS = 4096  # libuci's historical LINEBUF_MAX

_SPACE = " \t\r\v\f"
_PLAIN = re.compile(r"[^ \t\r\v\f\n'\"#;\\]+")
_IN_DOUBLE = re.compile(r'[^"\\]+')
_NAME = re.compile(r"[A-Za-z0-9_]+")
_PACKAGE = re.compile(r"[A-Za-z0-9_-]+")
_TYPE = re.compile(r"[!-~]+")  # printable ASCII, no space
_STATEMENTS = ("config", "option", "list", "package")
_KEYWORDS = {word[:size]: word for word in _STATEMENTS for size in (1, len(word))}  # as libuci
_NAME_FIX = "use only letters, digits and _ (UCI names are shell variable names)"


def show_value(text: str) -> str:
    """Quote text for an error message: control characters escaped, long text cut at 60."""
    safe = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:60])
    return f"'{safe}...'" if len(text) > 60 else f"'{safe}'"


class ValueKind(enum.Enum):
    """Whether a value was written with `option` (one value) or `list` (one per line)."""

    OPTION = "option"
    LIST = "list"


@dataclass(frozen=True, slots=True)
class UciItem:
    """One value as written, with the line its statement starts on."""

    text: str
    line: int


@dataclass(frozen=True, slots=True)
class UciValue:
    """An `option` (exactly one item) or a `list` (one item per `list` statement)."""

    name: str
    kind: ValueKind
    items: tuple[UciItem, ...]

    @property
    def line(self) -> int:
        """The line of the first item."""
        return self.items[0].line

    @property
    def texts(self) -> tuple[str, ...]:
        """The items' text, in file order."""
        return tuple(item.text for item in self.items)


@dataclass(frozen=True, slots=True)
class UciSection:
    """A `config <type> ['name']` block; `name` is None for an anonymous section."""

    type: str
    name: str | None
    line: int
    options: Mapping[str, UciValue]


@dataclass(slots=True)
class _SectionDraft:
    type: str
    name: str | None
    line: int
    options: dict[str, tuple[ValueKind, list[UciItem]]]

    def set_option(self, name: str, item: UciItem) -> None:
        # libuci: an empty value deletes the option; a new value replaces it (moved last).
        self.options.pop(name, None)
        if item.text:
            self.options[name] = (ValueKind.OPTION, [item])

    def add_to_list(self, name: str, item: UciItem) -> None:
        # libuci: `list` after `option` turns the option into a list that keeps its value.
        _, items = self.options.get(name, (ValueKind.LIST, []))
        items.append(item)
        self.options[name] = (ValueKind.LIST, items)

    def freeze(self) -> UciSection:
        options = {n: UciValue(n, kind, tuple(items)) for n, (kind, items) in self.options.items()}
        return UciSection(self.type, self.name, self.line, MappingProxyType(options))


class _Reader:
    """Splits UCI text into statements the way libuci's parse_str/next_arg do."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1

    def _peek(self, offset: int = 0) -> str:
        at = self.pos + offset
        return self.text[at] if at < len(self.text) else ""

    def skip_space(self) -> None:
        while self._peek() and self._peek() in _SPACE:
            self.pos += 1

    def skip_comment(self) -> None:
        end = self.text.find("\n", self.pos)
        self.pos = len(self.text) if end < 0 else end

    def statements(self) -> Iterable[tuple[int, str, list[str]]]:
        """Yield (line, keyword, arguments) for each non-empty statement."""
        while self.pos < len(self.text):
            self.skip_space()
            char = self._peek()
            if char == "\n":
                self.pos += 1
                self.line += 1
            elif char == ";":
                self.pos += 1
            elif char == "#":
                self.skip_comment()
            elif char:
                line = self.line
                keyword = self._keyword()
                yield line, keyword, self._arguments()

    def _keyword(self) -> str:
        start = self.pos
        while self._peek() and self._peek() not in _SPACE + "\n":
            self.pos += 1
        return self.text[start : self.pos]

    def _arguments(self) -> list[str]:
        args: list[str] = []
        while True:
            self.skip_space()
            char = self._peek()
            if char in ("", "\n"):
                return args
            if char == ";":
                self.pos += 1
                return args
            if char == "#":
                self.skip_comment()
                return args
            args.append(self._word())

    def _word(self) -> str:
        parts: list[str] = []
        while (char := self._peek()) and char not in _SPACE + "\n;":
            if char == "#":  # a comment may start mid-word, as in libuci
                self.skip_comment()
                break
            if char == "'":
                parts.append(self._single_quoted())
            elif char == '"':
                parts.append(self._double_quoted())
            elif char == "\\":
                parts.append(self._escape())
            else:
                match = _PLAIN.match(self.text, self.pos)
                assert match is not None  # char is none of the characters _PLAIN stops at
                parts.append(match.group())
                self.pos = match.end()
        return "".join(parts)

    def _escape(self) -> str:
        """A backslash takes the next character literally; before a newline it joins lines."""
        self.pos += 1
        char = self._peek()
        if char == "\n" or (char == "\r" and self._peek(1) == "\n"):
            self.pos += 1 if char == "\n" else 2
            self.line += 1
            return ""
        self.pos += len(char)  # a backslash at the very end of the text is dropped
        return char

    def _single_quoted(self) -> str:
        opened = self.line
        end = self.text.find("'", self.pos + 1)
        if end < 0:
            raise _unterminated("'", opened)
        value = self.text[self.pos + 1 : end]
        self.line += value.count("\n")
        self.pos = end + 1
        return value

    def _double_quoted(self) -> str:
        opened = self.line
        self.pos += 1
        parts: list[str] = []
        while (char := self._peek()) != '"':
            if not char:
                raise _unterminated('"', opened)
            if char == "\\":
                parts.append(self._escape())
                continue
            match = _IN_DOUBLE.match(self.text, self.pos)
            assert match is not None  # char is neither '"' nor a backslash
            parts.append(match.group())
            self.line += match.group().count("\n")
            self.pos = match.end()
        self.pos += 1
        return "".join(parts)


def _unterminated(quote: str, line: int) -> ConfigError:
    return ConfigError(
        f"a value opened with {quote} is never closed.",
        line=line,
        fix=f"end the value with a matching {quote}; an open quote runs to the end of the file.",
    )


def _check_text(text: str) -> None:
    """Refuse input that is not a text config file before reading any statement."""
    if len(text) > MAX_TEXT_CHARS:
        raise ConfigError(
            f"the file is {len(text)} characters long, more than {MAX_TEXT_CHARS}.",
            fix="check that this is the loopspot config file and not another file.",
        )
    if text.startswith("\ufeff"):
        raise ConfigError(
            "the file starts with a byte-order mark, which uci cannot read.",
            line=1,
            fix="save the file as UTF-8 without BOM (or retype the first line).",
        )
    nul = text.find("\0")
    if nul >= 0:
        raise ConfigError(
            "the line contains a NUL byte.",
            line=text.count("\n", 0, nul) + 1,
            fix="save the file as plain text; it looks binary or corrupted.",
        )
    for number, physical in enumerate(text.split("\n"), start=1):
        if len(physical) > MAX_LINE_CHARS:
            raise ConfigError(
                f"the line is {len(physical)} characters long, more than {MAX_LINE_CHARS}.",
                line=number,
                fix="split long lists into one 'list' line per value.",
            )


def _unknown_keyword(keyword: str, line: int) -> ConfigError:
    close = difflib.get_close_matches(keyword.lower(), ["config", "option", "list"], n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return ConfigError(
        f"{show_value(keyword)} is not a UCI statement.",
        line=line,
        fix=f"{hint}Start each line with config, option or list, or with # for a comment.",
    )


def _check_count(keyword: str, args: list[str], least: int, most: int, line: int) -> None:
    usage = {
        "config": "config <type> ['name']",
        "option": "option <name> 'value'",
        "list": "list <name> 'value'",
        "package": "package <name>",
    }[keyword]
    if len(args) < least or not args[0]:
        what = "section type" if keyword == "config" else "name"
        raise ConfigError(f"'{keyword}' is missing its {what}.", line=line, fix=f"write {usage}.")
    if len(args) > most:
        raise ConfigError(
            f"too many words after '{keyword}'.",
            line=line,
            fix=f"write {usage}, and quote a value that contains spaces: 'two words'.",
        )


def parse_uci(text: str) -> tuple[UciSection, ...]:
    """Parse one UCI package's text into its sections, in file order; else raise ConfigError."""
    _check_text(text)
    drafts: list[_SectionDraft] = []
    named: dict[str, _SectionDraft] = {}
    current: _SectionDraft | None = None
    for line, word, args in _Reader(text).statements():
        keyword = _KEYWORDS.get(word)
        if keyword is None:
            raise _unknown_keyword(word, line)
        if keyword == "package":  # libuci ignores it when loading /etc/config/<package>
            _check_count(keyword, args, 1, 1, line)
            if not _PACKAGE.fullmatch(args[0]):
                raise ConfigError(
                    f"{show_value(args[0])} is not a package name.", line=line, fix=_NAME_FIX
                )
        elif keyword == "config":
            _check_count(keyword, args, 1, 2, line)
            current = _open_section(args, line, drafts, named)
        else:
            _check_count(keyword, args, 1, 2, line)
            if current is None:
                raise ConfigError(
                    f"'{keyword}' {show_value(args[0])} comes before any 'config' line.",
                    line=line,
                    fix="put a 'config <type>' line above it to open a section.",
                )
            name = args[0]
            if not _NAME.fullmatch(name):
                raise ConfigError(
                    f"{show_value(name)} is not a valid {keyword} name.", line=line, fix=_NAME_FIX
                )
            item = UciItem(args[1] if len(args) > 1 else "", line)
            if keyword == "option":
                current.set_option(name, item)
            else:
                current.add_to_list(name, item)
    return tuple(draft.freeze() for draft in drafts)


def _open_section(
    args: list[str], line: int, drafts: list[_SectionDraft], named: dict[str, _SectionDraft]
) -> _SectionDraft:
    type_ = args[0]
    if not _TYPE.fullmatch(type_):
        raise ConfigError(
            f"{show_value(type_)} is not a valid section type.",
            line=line,
            fix="use printable ASCII without spaces, e.g. config agent 'agent'.",
        )
    name = args[1] if len(args) > 1 and args[1] else None
    if name is None:
        drafts.append(_SectionDraft(type_, None, line, {}))
        return drafts[-1]
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"{show_value(name)} is not a valid section name.", line=line, fix=_NAME_FIX
        )
    earlier = named.get(name)
    if earlier is None:
        named[name] = _SectionDraft(type_, name, line, {})
        drafts.append(named[name])
        return named[name]
    if earlier.type != type_:  # libuci refuses this in strict mode, its default
        raise ConfigError(
            f"section '{name}' was opened as '{earlier.type}' on line {earlier.line},"
            f" and again here as '{type_}'.",
            line=line,
            fix="give one of the two sections another name.",
        )
    return earlier  # libuci merges a repeated named section into the first


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def format_uci(sections: Iterable[UciSection]) -> str:
    """Render sections as uci export would, every value single-quoted; parse_uci reads it back."""
    out: list[str] = []
    for section in sections:
        names = [section.name or "", *section.options]
        if not _TYPE.fullmatch(section.type) or any(n and not _NAME.fullmatch(n) for n in names):
            raise ValueError(f"section {section.type!r} {section.name!r} has an invalid name")
        head = f"config {section.type if _NAME.fullmatch(section.type) else _quote(section.type)}"
        out.append(f"\n{head} {_quote(section.name)}" if section.name else f"\n{head}")
        for value in section.options.values():
            for item in value.items:
                out.append(f"\t{value.kind.value} {value.name} {_quote(item.text)}")
    return "\n".join(out).lstrip("\n") + "\n"
