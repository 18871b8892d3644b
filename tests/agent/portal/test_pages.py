"""The portal's pages are loaded at start, compiled once, and a broken one stops start-up."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

from agent.errors import ConfigError
from agent.portal.app import PAGES, TEMPLATE_CACHE, compiled_pages_cache, load_pages
from agent.portal.i18n import TEMPLATE_FILTERS

DEFAULT = Path(__file__).parents[3] / "portal_templates" / "default"


def environment(flash_dir: Path, *brands: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([*map(str, brands), str(DEFAULT)]),
        autoescape=True,
        bytecode_cache=compiled_pages_cache(flash_dir),
    )
    env.filters.update(TEMPLATE_FILTERS)
    return env


def test_every_page_is_loaded_at_start_with_its_layout(tmp_path: Path) -> None:
    assert set(load_pages(environment(tmp_path))) >= {*PAGES, "base.html"}


def test_a_later_start_takes_the_compiled_pages_from_flash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_pages(environment(tmp_path))
    assert len(list((tmp_path / TEMPLATE_CACHE).iterdir())) >= len(PAGES)

    def no_compiling(*_: object, **__: object) -> None:
        raise AssertionError("a page was compiled again")

    monkeypatch.setattr(jinja2.Environment, "compile", no_compiling)
    pages = load_pages(environment(tmp_path))
    assert "Too many requests" in pages["error.html"].render(title="Too many requests", t={})


def test_a_changed_page_is_compiled_again(tmp_path: Path) -> None:
    brand = tmp_path / "brand"
    brand.mkdir()
    (brand / "error.html").write_text("first {{ title }}")
    load_pages(environment(tmp_path / "flash", brand))
    (brand / "error.html").write_text("second {{ title }}")
    pages = load_pages(environment(tmp_path / "flash", brand))
    assert pages["error.html"].render(title="!") == "second !"


def test_a_broken_page_stops_start_up_naming_its_file_and_line(tmp_path: Path) -> None:
    brand = tmp_path / "brand"
    brand.mkdir()
    (brand / "online.html").write_text("<p>\n{% if seconds_remaining %}\n<p>no endif\n")
    with pytest.raises(ConfigError, match=r"online\.html, line \d+: .*endif"):
        load_pages(environment(tmp_path / "flash", brand))


def test_an_unwritable_flash_only_means_compiling_at_each_start(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.write_text("a file where the flash directory should be")
    assert compiled_pages_cache(flash) is None
    assert set(load_pages(environment(flash))) >= set(PAGES)
