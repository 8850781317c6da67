"""The generated reference pages (docs/reference/) match the code, params.yaml and dvc.yaml,
and every command-line option has a help line."""

from __future__ import annotations

import pytest

from nextbuy import docs_reference
from nextbuy.cli.docs import command_line
from tests.conftest import ROOT


@pytest.mark.parametrize("page", list(docs_reference.PAGES))
def test_committed_reference_page_is_what_the_generator_renders(page):
    committed = ROOT / docs_reference.REFERENCE_DIR / page
    rendered = docs_reference.PAGES[page](command_line(), ROOT)
    assert committed.exists(), f"{committed} missing: run `nextbuy docs-reference`"
    assert committed.read_text() == rendered, f"{committed} is stale: run `nextbuy docs-reference`"


def test_every_option_of_every_command_has_help():
    assert docs_reference.options_without_help(command_line(), ROOT) == []


def test_params_page_lists_every_knob_with_its_comment():
    from nextbuy.config import flat_fields

    page = docs_reference.render_params(ROOT)
    for dotted in flat_fields():
        assert f"| `{dotted.rsplit('.', 1)[1]}` |" in page, dotted
    assert "| `target_precision` | float | > 0, < 1 | `0.3` |" in page


def test_params_comments_follow_nesting_and_ignore_hashes_in_quotes():
    text = 'a:\n  b: 1  # one\n  c:\n    d: "x # y"   # two\ne: 3\n'
    assert docs_reference.params_comments(text) == {"a.b": "one", "a.c.d": "two"}


def test_cli_page_lists_every_command():
    page = docs_reference.render_cli(command_line(), ROOT)
    for path, _ in docs_reference.cli_commands(command_line(), ROOT):
        assert f"`{path}`" in page
    assert "`nextbuy bench report`" in page
    assert "`nextbuy docs-reference`" in page


def test_stages_page_follows_dvc_yaml():
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    page = docs_reference.render_stages(ROOT)
    for name, spec in stages.items():
        assert f"## `{name}`" in page
        assert spec["desc"] in page


def test_readme_stage_table_is_what_the_generator_renders():
    assert (ROOT / "README.md").read_text() == docs_reference.readme_with_stage_table(ROOT), (
        "README.md's stage table is stale: run `nextbuy docs-reference`"
    )


def test_readme_fits_on_a_page_and_shows_the_two_commands_first():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    first_screen = "\n".join(lines[:30])
    assert "make run" in first_screen
    assert "make test" in first_screen


def test_every_list_in_the_docs_is_set_off_from_the_paragraph_before_it():
    """MkDocs' Markdown runs a list into the paragraph above it unless a blank line parts them
    (the page would show "- item - item" as one line)."""
    import re

    glued = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        previous, code = "", False
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if line.strip().startswith("```"):
                code = not code
            item = re.match(r"\s{0,3}([-*]|\d+\.)\s", line)
            after_text = previous.strip() and not re.match(r"\s*([-*]|\d+\.)\s|[ \t|#><]", previous)
            if not code and item and after_text:
                glued.append(f"{page.relative_to(ROOT)}:{number}")
            previous = line
    assert not glued, f"add a blank line before these list items: {glued}"
