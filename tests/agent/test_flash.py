"""Files on flash are written whole, and only when their text changes."""

from __future__ import annotations

from pathlib import Path

from agent.flash import replace_file


def test_replace_file_writes_removes_and_reports_only_real_changes(tmp_path: Path) -> None:
    path = tmp_path / "flash" / "walled-garden.domains"
    assert replace_file(path, None) is False
    assert replace_file(path, "a.example\n") is True and path.read_text() == "a.example\n"
    assert replace_file(path, "a.example\n") is False
    assert not path.with_suffix(".tmp").exists()
    assert replace_file(path, None) is True and not path.exists()
