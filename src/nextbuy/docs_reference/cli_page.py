"""``cli.md``: every ``nextbuy`` command, its help and every option's help (click introspection
of the Typer app)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nextbuy.docs_reference.markdown import GENERATED, _cell, _type_name

SHELL_OPTIONS = {"help", "install_completion", "show_completion"}


@dataclass(frozen=True)
class CommandLine:
    """What the CLI page documents, handed in by the ``docs-reference`` command (the CLI
    imports this package, never the other way round)."""

    app: Any  # the Typer app of the ``nextbuy`` entry point
    benches: tuple[str, ...]  # the product's benches, in help order


def cli_commands(cli: CommandLine, root: Path = Path(".")) -> list[tuple[str, Any]]:
    """``(path, click command)`` of every ``nextbuy`` command and group, depth first, in help order.

    ``nextbuy bench`` also lists the research benchmarks that ``benchmarks/pyproject.toml``
    declares, whether or not their distribution's entry points are installed here, so the page
    does not depend on the environment it is rendered in."""
    import typer  # the Typer app's introspection, only where the CLI page is rendered

    found: list[tuple[str, Any]] = []

    def walk(command: Any, path: str) -> None:
        found.append((path, command))
        if _is_group(command):
            ctx = command.context_class(command, info_name=path)
            names = list(command.list_commands(ctx))
            extra = _declared_benches(root) if path == "nextbuy bench" else {}
            # The product's benches, the research ones, then the rest: the same order whether
            # or not the research entry points were installed (and so registered) first.
            first = [n for n in cli.benches if n in names] + [n for n in extra if n not in cli.benches]
            for name in first + [n for n in names if n not in first]:
                if name in names:
                    walk(command.get_command(ctx, name), f"{path} {name}")
                else:
                    single = typer.Typer()
                    single.command(name=name)(extra[name])
                    walk(typer.main.get_command(single), f"{path} {name}")

    walk(typer.main.get_command(cli.app), "nextbuy")
    return found


def _declared_benches(root: Path) -> dict[str, Callable]:
    """The ``nextbuy.bench`` entry points of ``benchmarks/pyproject.toml``, loaded."""
    import importlib
    import tomllib

    file = root / "benchmarks" / "pyproject.toml"
    if not file.exists():
        return {}
    declared = (
        tomllib.loads(file.read_text()).get("project", {}).get("entry-points", {}).get("nextbuy.bench", {})
    )
    out = {}
    for name, target in declared.items():
        module, _, attr = target.partition(":")
        out[name] = getattr(importlib.import_module(module), attr)
    return out


def _is_group(command: Any) -> bool:
    """A click group (Typer may bring its own copy of click: duck-typed, not isinstance)."""
    return hasattr(command, "list_commands")


def _is_argument(param: Any) -> bool:
    return getattr(param, "param_type_name", "") == "argument"


def _help(command: Any) -> str:
    return (command.help or command.short_help or "").strip()


def render_cli(cli: CommandLine, root: Path) -> str:
    lines = [
        GENERATED.format(source="the Typer app in src/nextbuy/cli/"),
        "# Command line (`nextbuy`)\n",
        "Every command of the `nextbuy` entry point, as `nextbuy … --help` prints it. The stage "
        "commands are what `dvc repro` and the Airflow tasks run; their help is the stage's `desc` "
        "in `dvc.yaml`. The `bench` commands beyond the operational ones come from the research "
        "package in `benchmarks/` (entry point group `nextbuy.bench`).\n",
    ]
    for path, command in cli_commands(cli, root):
        depth = min(path.count(" ") + 1, 3)
        lines.append(f"\n{'#' * (depth + 1)} `{path}`\n")
        help_text = _help(command)
        if help_text:
            lines.append(_paragraphs(help_text) + "\n")
        if _is_group(command):
            continue
        # Typer adds the completion options only where it detects a shell: not the CLI's own.
        params = [p for p in command.params if p.name not in SHELL_OPTIONS]
        if not params:
            lines.append("No options.\n")
            continue
        lines.append("| option | type | default | help |\n|---|---|---|---|")
        for param in params:
            if _is_argument(param):
                name = f"`{(param.metavar or param.name).upper()}`" + (
                    "" if param.required else " (optional)"
                )
            else:
                name = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
            lines.append(
                f"| {name} | {_cell(_param_type(param))} | {_cell(_default(param))} | "
                f"{_cell(getattr(param, 'help', '') or '')} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _paragraphs(text: str) -> str:
    return "\n\n".join(" ".join(block.split()) for block in re.split(r"\n\s*\n", text))


def _param_type(param: Any) -> str:
    if getattr(param, "is_flag", False):
        return "flag"
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if annotation is not None:
        name = _type_name(annotation)
    else:  # plain click
        kind = getattr(param, "type", None)
        choices = getattr(kind, "choices", None)
        name = " or ".join(map(str, choices)) if choices else str(getattr(kind, "name", kind)).lower()
    return f"{name}, repeatable" if getattr(param, "multiple", False) else name


def _default(param: Any) -> str:
    default = param.default
    if callable(default) or default is None or default == () or default == []:
        return "" if not param.required else "required"
    if isinstance(default, int) and default == os.cpu_count() and "worker" in (param.name or ""):
        return "the core count"  # a default read from the machine: the page must not depend on it
    if isinstance(default, bool):
        return f"`{str(default).lower()}`" if not getattr(param, "is_flag", False) else f"`{default}`"
    return f"`{default}`"


def options_without_help(cli: CommandLine, root: Path = Path(".")) -> list[str]:
    """``command option`` for every option or argument of every command that has no help line."""
    missing = []
    for path, command in cli_commands(cli, root):
        for param in command.params:
            if param.name != "help" and not (getattr(param, "help", None) or "").strip():
                label = param.name if _is_argument(param) else param.opts[0]
                missing.append(f"{path} {label}")
    return missing
