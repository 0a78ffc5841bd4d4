"""README.md's config tables are generated from the config classes (wildreward/config_docs.py): a changed Field
description, default or new field fails here until the README is regenerated."""
from typing import Literal

import pytest
from pydantic import Field

from tests.conftest import REPO
from wildreward import config_docs
from wildreward.config import Section

README = REPO / "README.md"


def test_readme_config_tables_are_current():
    diff = config_docs.stale_diff(README)
    assert not diff, (f"README.md's config tables differ from the config classes; regenerate them with\n"
                      f"    {config_docs.REGENERATE}\n\n{diff[:6000]}")


def test_readme_has_a_table_for_every_config():
    names = [name for name, _, _ in config_docs.blocks(README.read_text(encoding="utf-8"))]
    assert sorted(names) == sorted(config_docs.TABLES), "add <!-- config:NAME:start/end --> markers for new configs"


class _Inner(Section):
    mode: Literal["a", "b"] = Field("a", description="a | b, written to <output_dir>/`x<y>`.")
    limit: int | None = Field(None, ge=1)


class _Outer(Section):
    rate: float = Field(5e-7, gt=0, le=1, description="A ``rate``.")
    names: list[str] = Field(default_factory=lambda: ["en", "zh"])
    inner: _Inner = _Inner()
    changed: _Inner = Field(default_factory=lambda: _Inner(mode="b"))


def test_table_walks_nested_sections_with_dotted_keys():
    table = config_docs.render_table(_Outer)
    assert table.splitlines()[:2] == ["| key | type | default | description |", "|---|---|---|---|"]
    assert "| `rate` | float > 0, ≤ 1 | `5e-7` | A `rate`. |" in table
    assert "| `names` | list[str] | `[en, zh]` |  |" in table
    # pipes escaped, '<' escaped outside code spans only (an HTML tag would vanish on GitHub)
    assert "| `inner.mode` | `a` \\| `b` | `a` | a \\| b, written to &lt;output_dir>/`x<y>`. |" in table
    assert "| `inner.limit` | int ≥ 1 \\| null | `null` |  |" in table
    assert "| `changed.mode` | `a` \\| `b` | `b` |" in table  # the enclosing default, not the class's


def test_collapsed_section_lists_what_differs_from_its_defaults():
    table = config_docs.render_table(_Outer, ("changed",))
    assert "| `changed` | _Inner | `mode: b` |  |" in table
    assert "changed.mode" not in table
    assert "labeller" in config_docs.TABLES  # the labeller's train section: feedback input, five levels
    assert "`model.input: feedback`" in config_docs.render("labeller")


def test_machine_dependent_default_is_described_not_resolved(monkeypatch):
    monkeypatch.setenv("WILDREWARD_SHARED", "/somewhere/else")
    row = next(line for line in config_docs.render("eval").splitlines() if line.startswith("| `data_dir` |"))
    assert "/somewhere/else" not in row and "WILDREWARD_SHARED" in row


def test_update_replaces_only_marked_blocks():
    text = "intro\n<!-- config:serve:start -->\nold table\n<!-- config:serve:end -->\noutro\n"
    new = config_docs.update(text)
    assert new.startswith("intro\n<!-- config:serve:start -->\n| key |")
    assert new.endswith("|\n<!-- config:serve:end -->\noutro\n")
    assert "old table" not in new and config_docs.update(new) == new
    with pytest.raises(ValueError, match="unknown config table"):
        config_docs.update("<!-- config:nope:start -->\n<!-- config:nope:end -->\n")
    with pytest.raises(ValueError, match="no end marker"):
        config_docs.update("<!-- config:serve:start -->\n")


def test_check_and_write_commands(tmp_path, capsys):
    path = tmp_path / "doc.md"
    path.write_text("<!-- config:serve:start -->\nstale\n<!-- config:serve:end -->\n")
    assert config_docs.main(["--check", str(path)]) == 1
    assert config_docs.REGENERATE in capsys.readouterr().err
    assert config_docs.main(["--write", str(path)]) == 0
    assert config_docs.main(["--check", str(path)]) == 0
    assert "| `max_batch_size` |" in path.read_text()
