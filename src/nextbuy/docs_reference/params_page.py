"""``params.md``: every knob, from the pydantic models of ``nextbuy.config`` (type, bounds) and
``params.yaml`` (value, inline comment)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from nextbuy import yaml_io
from nextbuy.docs_reference.markdown import GENERATED, _cell, _type_name


def params_comments(text: str) -> dict[str, str]:
    """``dotted.key -> inline comment`` of a YAML file written one key per line (params.yaml)."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        match = re.match(r"^(\s*)([A-Za-z_][\w]*):(.*)$", line)
        if not match:
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([k for _, k in stack] + [key])
        comment = _inline_comment(rest)
        if comment:
            comments[dotted] = comment
        stack.append((indent, key))
    return comments


def _inline_comment(rest: str) -> str:
    """The ``# comment`` after a YAML value, outside quotes."""
    quote = None
    for i, char in enumerate(rest):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or rest[i - 1].isspace()):
            return rest[i + 1 :].strip()
    return ""


_BOUND_SIGNS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


def _bounds(field: Any) -> str:
    out = []
    for item in field.metadata:
        for attr, sign in _BOUND_SIGNS.items():
            value = getattr(item, attr, None)
            if value is not None:
                out.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
    return ", ".join(out)


def _value(value: Any) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def render_params(root: Path) -> str:
    from pydantic import BaseModel

    from nextbuy.config import ALL_SECTIONS

    text = (root / "params.yaml").read_text()
    values = yaml_io.load(text) or {}
    comments = params_comments(text)
    lines = [
        GENERATED.format(source="src/nextbuy/config*.py and params.yaml"),
        "# Parameters (params.yaml)\n",
        "Every knob of the pipeline lives in `params.yaml`, one section per stage (and `serving`, "
        "read by `nextbuy serve`); "
        "`src/nextbuy/config*.py` hold their types and bounds and no defaults, so a missing or "
        "misspelt key stops the stage with the key named. The *value* column is the committed "
        "`params.yaml`. Change a value there (or per run: `dvc exp run -S key=value`, a preset, "
        "the Airflow trigger form's `overrides`).\n",
    ]

    def section(model: type[BaseModel], dotted: str, node: dict) -> None:
        doc = (model.__doc__ or "").strip()
        own_doc = (
            doc if doc and not doc.startswith("Usage docs") and model.__doc__ != BaseModel.__doc__ else ""
        )
        lines.append(f"\n## `{dotted}`\n")
        if comments.get(dotted):
            lines.append(f"{comments[dotted]}\n")
        if own_doc:
            lines.append(f"{' '.join(own_doc.split())}\n")
        lines.append("\n| key | type | bounds | value | what it does |\n|---|---|---|---|---|")
        subs: list[tuple[type[BaseModel], str, dict]] = []
        for key, field in model.model_fields.items():
            sub = field.annotation
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                subs.append((sub, f"{dotted}.{key}", node.get(key) or {}))
                lines.append(
                    f"| `{key}` | section | | see [`{dotted}.{key}`](#{_anchor(f'{dotted}.{key}')}) "
                    f"| {_cell(comments.get(f'{dotted}.{key}', ''))} |"
                )
                continue
            lines.append(
                f"| `{key}` | {_cell(_type_name(sub))} | {_cell(_bounds(field))} | "
                f"{_cell(_value(node.get(key)))} | {_cell(comments.get(f'{dotted}.{key}', ''))} |"
            )
        lines.append("")
        for sub_model, sub_dotted, sub_node in subs:
            section(sub_model, sub_dotted, sub_node)

    for name, model in ALL_SECTIONS.items():
        section(model, name, values.get(name) or {})
    return "\n".join(lines).rstrip() + "\n"


def _anchor(heading: str) -> str:
    """The id MkDocs (Python-Markdown's toc) gives a heading: lowercase, punctuation dropped."""
    return re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", heading).strip().lower())
