"""``schemas.md``: every table that crosses a stage, from the pandera schemas of
``nextbuy.mlops.schemas``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nextbuy.docs_reference.markdown import GENERATED, _cell


def _check_text(check: Any) -> str:
    stats = getattr(check, "statistics", None) or {}
    name = check.name or "check"
    if not stats:
        return name
    args = ", ".join(f"{v}" if len(stats) == 1 else f"{k}={v}" for k, v in stats.items())
    return f"{name}({args})"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def render_schemas(root: Path) -> str:
    from nextbuy.mlops import schemas
    from nextbuy.tables_api import pa

    lines = [
        GENERATED.format(source="src/nextbuy/mlops/schemas.py"),
        "# Table schemas\n",
        "Every table that crosses a stage boundary, as the pandera schemas of "
        "`src/nextbuy/mlops/schemas.py` declare it. Stages read and write only through "
        "`nextbuy.mlops.io`, which validates against these schemas on read and on write: bad "
        "input stops the stage with the file, the column and the first offending rows (exit "
        "code 2). *Strict* tables refuse columns not listed here; a column marked *pattern* "
        "stands for every column whose name matches the regular expression.\n",
    ]
    for variable, schema in vars(schemas).items():
        if not isinstance(schema, pa.DataFrameSchema) or variable.startswith("_"):
            continue
        lines.append(f"\n## `{schema.name}` (`schemas.{variable}`)\n")
        facts = [f"strict: {'yes' if schema.strict else 'no'}"]
        if schema.unique:
            facts.append("unique together: " + ", ".join(f"`{c}`" for c in schema.unique))
        for check in schema.checks:
            facts.append(f"table check: `{_check_text(check)}`")
        lines.append("; ".join(facts) + ".\n")
        lines.append("| column | dtype | nullable | unique | required | checks |\n|---|---|---|---|---|---|")
        for name, column in schema.columns.items():
            label = f"`{name}`" + (" (pattern)" if column.regex else "")
            checks = ", ".join(f"`{_check_text(c)}`" for c in column.checks)
            dtype = "any (parsed by the reader)" if column.dtype is None else f"`{column.dtype}`"
            lines.append(
                f"| {_cell(label)} | {dtype} | {_yes(column.nullable)} | {_yes(column.unique)} | "
                f"{_yes(column.required)} | {_cell(checks)} |"
            )
        lines.append("")
    lines.append(
        "\nBeyond per-column checks, `schemas.py` also holds the cross-table rules (event order "
        "shown ≤ clicked ≤ carted ≤ converted, the funnel order, known product ids) and the keys "
        "of `models/gnn/moments.npz`: " + ", ".join(f"`{k}`" for k in schemas.MOMENT_KEYS) + ".\n"
    )
    return "\n".join(lines).rstrip() + "\n"
