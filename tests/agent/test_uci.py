"""The UCI syntax as libuci reads /etc/config files: sections, options, lists, quoting, errors."""

from __future__ import annotations

import contextlib
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import ConfigError
from agent.uci import (
    MAX_LINE_CHARS,
    MAX_TEXT_CHARS,
    UciItem,
    UciSection,
    UciValue,
    ValueKind,
    format_uci,
    parse_uci,
)

Shape = list[tuple[str, str | None, list[tuple[str, str, list[str]]]]]


def shape(sections: tuple[UciSection, ...]) -> Shape:
    """Sections without line numbers, for comparing what two texts mean."""
    return [
        (s.type, s.name, [(v.name, v.kind.value, list(v.texts)) for v in s.options.values()])
        for s in sections
    ]


def only_value(text: str) -> str:
    """The value of `option v` in a one-section file whose option line is `text`."""
    (section,) = parse_uci(f"config t\n\toption v {text}\n")
    return section.options["v"].texts[0]


def test_reads_named_and_anonymous_sections_with_options_and_lists() -> None:
    sections = parse_uci(
        "config agent 'agent'\n"
        "\tlist lan_interface 'br-lan'\n"
        "\tlist lan_interface 'wlan0'\n"
        "\toption portal_port '2050'\n"
        "\n"
        "config walled_garden\n"
        "\tlist domain 'alipay.com'\n"
    )
    agent, garden = sections
    assert (agent.type, agent.name, agent.line) == ("agent", "agent", 1)
    assert agent.options["lan_interface"] == UciValue(
        "lan_interface", ValueKind.LIST, (UciItem("br-lan", 2), UciItem("wlan0", 3))
    )
    assert agent.options["portal_port"].kind is ValueKind.OPTION
    assert agent.options["portal_port"].line == 4
    assert (garden.type, garden.name, garden.line) == ("walled_garden", None, 6)
    assert garden.options["domain"].texts == ("alipay.com",)


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("plain", "plain"),
        ("'single quoted'", "single quoted"),
        ('"double quoted"', "double quoted"),
        ("'it'\\''s'", "it's"),  # what `uci export` writes for a quote
        ("'a'\"b\"c", "abc"),  # adjacent parts join, as in the shell
        ("'back\\slash'", "back\\slash"),  # single quotes take everything literally
        ('"say \\"hi\\""', 'say "hi"'),
        ('"a\\\\b"', "a\\b"),
        ("\\'escaped", "'escaped"),
        ("'# not a comment'", "# not a comment"),
        ("'Café Lumière'", "Café Lumière"),
        ("'tab\tinside'", "tab\tinside"),
    ],
)
def test_values_may_be_unquoted_single_or_double_quoted(written: str, value: str) -> None:
    assert only_value(written) == value


def test_comments_blank_lines_tabs_and_spaces_are_ignored() -> None:
    text = (
        "# loopspot\n"
        "\n"
        "   config   portal   'portal'   # the portal\n"
        "  \t option\tsite_name\t'Shop' #  name\n"
        "\t# option template 'other'\n"
        "\t\n"
    )
    (portal,) = parse_uci(text)
    assert dict(portal.options) == {
        "site_name": UciValue("site_name", ValueKind.OPTION, (UciItem("Shop", 4),))
    }


def test_a_hash_inside_an_unquoted_value_starts_a_comment_as_in_libuci() -> None:
    assert only_value("abc#def ghi") == "abc"


def test_semicolon_separates_statements_on_one_line() -> None:
    (section,) = parse_uci("config t; option a '1'; option b 2\n")
    assert section.options["a"].texts == ("1",)
    assert section.options["b"].texts == ("2",)


def test_backslash_at_end_of_line_continues_the_value_on_the_next_line() -> None:
    (section,) = parse_uci("config t\n\toption a long\\\nvalue\n\toption b x\n")
    assert section.options["a"] == UciValue("a", ValueKind.OPTION, (UciItem("longvalue", 2),))
    assert section.options["b"].line == 4


def test_quoted_value_may_span_lines_and_keeps_the_line_it_starts_on() -> None:
    (section,) = parse_uci("config t\n\toption a 'one\ntwo'\n\toption b \"x\ny\"\n\toption c z\n")
    assert section.options["a"].items == (UciItem("one\ntwo", 2),)
    assert section.options["b"].items == (UciItem("x\ny", 4),)
    assert section.options["c"].line == 6


def test_windows_line_endings_are_read() -> None:
    (section,) = parse_uci("config t 'n'\r\n\toption a '1'\r\n\tlist b 2\r\n")
    assert shape((section,)) == [("t", "n", [("a", "option", ["1"]), ("b", "list", ["2"])])]


def test_one_letter_keywords_are_accepted_as_in_libuci() -> None:
    (section,) = parse_uci("c t 'n'\no a 1\nl b 2\n")
    assert shape((section,)) == [("t", "n", [("a", "option", ["1"]), ("b", "list", ["2"])])]


def test_a_package_line_is_accepted_and_ignored() -> None:
    (section,) = parse_uci("package loopspot\n\nconfig agent 'agent'\n")
    assert section.type == "agent"


def test_an_empty_option_value_removes_the_option_as_uci_set_does() -> None:
    (section,) = parse_uci("config t\n\toption a 1\n\toption a ''\n\toption b\n")
    assert dict(section.options) == {}


def test_a_later_option_replaces_an_earlier_one() -> None:
    (section,) = parse_uci("config t\n\toption a 1\n\toption a 2\n")
    assert section.options["a"].items == (UciItem("2", 3),)


def test_a_list_after_an_option_of_the_same_name_keeps_both_values() -> None:
    (section,) = parse_uci("config t\n\toption a 1\n\tlist a 2\n\tlist a ''\n")
    assert section.options["a"].kind is ValueKind.LIST
    assert section.options["a"].texts == ("1", "2", "")


def test_a_repeated_named_section_merges_into_the_first() -> None:
    sections = parse_uci("config t 'n'\n\toption a 1\nconfig u\nconfig t 'n'\n\toption b 2\n")
    assert shape(sections) == [
        ("t", "n", [("a", "option", ["1"]), ("b", "option", ["2"])]),
        ("u", None, []),
    ]
    assert sections[0].line == 1


def test_options_of_a_parsed_section_cannot_be_changed() -> None:
    (section,) = parse_uci("config t\n\toption a 1\n")
    assert isinstance(section.options, MappingProxyType)


HOSTILE = [
    pytest.param("config t\n\toption a 'open\n", 2, "never closed", id="unterminated-single"),
    pytest.param('config t\n\toption a "open\\"\n', 2, "never closed", id="unterminated-double"),
    pytest.param("option a b\n", 1, "before any 'config'", id="option-outside-section"),
    pytest.param("\n\nlist a b\n", 3, "before any 'config'", id="list-outside-section"),
    pytest.param("confg agent\n", 1, "did you mean 'config'", id="misspelt-keyword"),
    pytest.param("config t\n\tset a b\n", 2, "not a UCI statement", id="unknown-keyword"),
    pytest.param("config t\n\t'option' a b\n", 2, "not a UCI statement", id="quoted-keyword"),
    pytest.param("config t 'bad-name'\n", 1, "not a valid section name", id="section-name"),
    pytest.param("config 'two words'\n", 1, "not a valid section type", id="section-type"),
    pytest.param("config 'типа'\n", 1, "not a valid section type", id="non-ascii-type"),
    pytest.param("config t\n\toption bad.name 1\n", 2, "not a valid option name", id="opt-name"),
    pytest.param("config t\n\tlist 'a b' 1\n", 2, "not a valid list name", id="list-name"),
    pytest.param("config\n", 1, "missing its section type", id="config-without-type"),
    pytest.param("config ''\n", 1, "missing its section type", id="config-empty-type"),
    pytest.param("config t\n\toption\n", 2, "missing its name", id="option-without-name"),
    pytest.param("config t\n\toption a b c\n", 2, "too many words", id="unquoted-spaces"),
    pytest.param("config t n extra\n", 1, "too many words", id="config-too-many"),
    pytest.param("package a.b\n", 1, "not a package name", id="package-name"),
    pytest.param("config t\n\toption a 'x\0y'\n", 2, "NUL byte", id="nul-byte"),
    pytest.param("\ufeffconfig t\n", 1, "byte-order mark", id="bom"),
    pytest.param("config t\n\n\t#" + "x" * MAX_LINE_CHARS, 3, "characters long", id="long"),
    pytest.param("# " * (MAX_TEXT_CHARS // 2 + 1), 0, "characters long", id="huge-file"),
]


@pytest.mark.parametrize(("text", "line", "complaint"), HOSTILE)
def test_hostile_input_raises_config_error_naming_the_line_and_the_fix(
    text: str, line: int, complaint: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_uci(text)
    assert caught.value.line == line
    assert complaint in str(caught.value)
    assert caught.value.fix, "every syntax error says how to fix it"
    assert str(caught.value).startswith(f"line {line}: " if line else "")


def test_control_characters_in_values_are_kept_for_the_settings_to_judge() -> None:
    assert only_value("'a\x1bb\x7f'") == "a\x1bb\x7f"  # libuci keeps them too


def test_error_messages_escape_control_characters_so_logs_stay_readable() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_uci("\x1b[31mconfig t\n")
    assert "\x1b" not in str(caught.value)
    assert "'\\x1b[31mconfig' is not a UCI statement" in str(caught.value)


def test_a_section_name_reused_for_another_type_is_refused_naming_both_lines() -> None:
    with pytest.raises(ConfigError, match=r"^line 3: .*'agent' on line 1.*'portal'") as caught:
        parse_uci("config agent 'main'\n\toption a 1\nconfig portal 'main'\n")
    assert "another name" in caught.value.fix


def test_an_unclosed_quote_is_reported_where_it_opened_not_at_the_end_of_the_file() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_uci("config t\n\toption a 'oops\n\toption b 1\n\toption c 2\n")
    assert caught.value.line == 2


def test_format_quotes_every_value_and_escapes_single_quotes() -> None:
    section = UciSection(
        "agent",
        "agent",
        1,
        {"site_name": UciValue("site_name", ValueKind.OPTION, (UciItem("Bob's", 2),))},
    )
    assert format_uci([section]) == "config agent 'agent'\n\toption site_name 'Bob'\\''s'\n"


def test_format_refuses_names_that_uci_could_not_read_back() -> None:
    with pytest.raises(ValueError, match="invalid name"):
        format_uci([UciSection("t", "bad name", 1, {})])


# --- properties -----------------------------------------------------------------------------

FRAGMENTS = st.sampled_from(
    [
        "config", "option", "list", "package", "c", "o", "l", "agent", "'agent'", "name",
        "'", '"', "\\", "\\\n", "#", ";", " ", "\t", "\n", "\r\n", "''", '""', "'a b'",
        "\0", "\ufeff", "é", "x" * 50, "-", ".", "\x0b",
    ]
)  # fmt: skip


@settings(max_examples=500)
@given(st.text())
def test_any_text_either_parses_or_raises_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_uci(text)


@settings(max_examples=500)
@given(st.lists(FRAGMENTS, max_size=40).map(" ".join) | st.lists(FRAGMENTS).map("".join))
def test_uci_shaped_noise_either_parses_or_raises_config_error(text: str) -> None:
    try:
        parse_uci(text)
    except ConfigError as error:
        assert str(error)


NAMES = st.from_regex(r"[A-Za-z0-9_]{1,12}", fullmatch=True)
TYPES = st.from_regex(r"[!-~]{1,12}", fullmatch=True)
VALUES = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=30)


@st.composite
def uci_sections(draw: st.DrawFn) -> list[UciSection]:
    """Well-formed sections with distinct names, as uci itself would hold them."""
    names = draw(st.lists(NAMES, unique=True, max_size=6))
    sections = []
    for name in names:
        options: dict[str, UciValue] = {}
        for option in draw(st.lists(NAMES, unique=True, max_size=5)):
            if draw(st.booleans()):
                texts = draw(st.lists(VALUES, min_size=1, max_size=4))
                kind = ValueKind.LIST
            else:
                texts = [draw(VALUES.filter(bool))]  # an empty option means "unset"
                kind = ValueKind.OPTION
            items = tuple(UciItem(text, 0) for text in texts)
            options[option] = UciValue(option, kind, items)
        anonymous = draw(st.booleans())
        sections.append(UciSection(draw(TYPES), None if anonymous else name, 0, options))
    return sections


@settings(max_examples=300)
@given(uci_sections())
def test_formatted_sections_read_back_the_same(sections: list[UciSection]) -> None:
    assert shape(parse_uci(format_uci(sections))) == shape(tuple(sections))
