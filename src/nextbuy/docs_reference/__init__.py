"""The documentation's reference pages, generated from their one source of truth.

- ``params.md``: every knob, from the pydantic models of ``nextbuy.config`` (type, bounds)
  and ``params.yaml`` (value, inline comment);
- ``cli.md``: every ``nextbuy`` command, its help and every option's help (click
  introspection of the Typer app);
- ``schemas.md``: every table that crosses a stage, from the pandera schemas of
  ``nextbuy.mlops.schemas``;
- ``stages.md``: the stages of ``dvc.yaml`` (description, DAG, params, data deps, outs, metrics).

``nextbuy docs-reference`` writes them under ``docs/reference/``; ``tests/test_docs_reference.py``
fails when a committed page differs from what :func:`render_all` renders.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nextbuy.docs_reference.cli_page import CommandLine, cli_commands, options_without_help, render_cli
from nextbuy.docs_reference.markdown import GENERATED
from nextbuy.docs_reference.params_page import params_comments, render_params
from nextbuy.docs_reference.schemas_page import render_schemas
from nextbuy.docs_reference.stages_page import (
    README_BEGIN,
    README_END,
    readme_with_stage_table,
    render_readme_stage_table,
    render_stages,
)

__all__ = [
    "GENERATED",
    "PAGES",
    "README_BEGIN",
    "README_END",
    "REFERENCE_DIR",
    "CommandLine",
    "cli_commands",
    "options_without_help",
    "params_comments",
    "readme_with_stage_table",
    "render_all",
    "render_cli",
    "render_params",
    "render_readme_stage_table",
    "render_schemas",
    "render_stages",
    "write_all",
]

REFERENCE_DIR = Path("docs") / "reference"


PAGES: dict[str, Callable[[CommandLine, Path], str]] = {
    "params.md": lambda _, root: render_params(root),
    "cli.md": render_cli,
    "schemas.md": lambda _, root: render_schemas(root),
    "stages.md": lambda _, root: render_stages(root),
}


def render_all(cli: CommandLine, root: Path) -> dict[Path, str]:
    """Each generated page's path (relative to ``root``) and its text; README.md's stage table too."""
    pages = {REFERENCE_DIR / name: render(cli, root) for name, render in PAGES.items()}
    if (root / "README.md").exists() and README_BEGIN in (root / "README.md").read_text():
        pages[Path("README.md")] = readme_with_stage_table(root)
    return pages


def write_all(cli: CommandLine, root: Path) -> list[Path]:
    """Write every page under ``root``; the paths that changed."""
    changed = []
    for rel, text in render_all(cli, root).items():
        path = root / rel
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed.append(rel)
    return changed
