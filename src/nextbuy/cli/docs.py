"""Commands that write the documentation's generated pages: the reference pages
(``nextbuy docs-reference``) and the benchmark results page (``nextbuy bench report``),
and ``nextbuy bench record``, which runs a bench and keeps its result as a committed file."""

from __future__ import annotations

import importlib
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from nextbuy.cli.bench import BENCHES, bench_app
from nextbuy.cli.common import app, console

if TYPE_CHECKING:
    from nextbuy.docs_reference import CommandLine

RootOption = typer.Option(
    Path("."), "--root", help="project root (where dvc.yaml, params.yaml and docs/ are)"
)


@app.command("docs-reference")
def docs_reference(
    root: Path = RootOption,
    check: bool = typer.Option(False, "--check", help="write nothing; exit 1 when a page is out of date"),
) -> None:
    """Write docs/reference/ (params, CLI, table schemas, stages) from the code, params.yaml and dvc.yaml."""
    # Imported here: every stage command's DVC deps cover what the CLI imports as it starts.
    from nextbuy import docs_reference as reference

    if check:
        pages = reference.render_all(command_line(), root)
        stale = [str(p) for p, text in pages.items() if _differs(root / p, text)]
        if stale:
            console.print(f"out of date (run nextbuy docs-reference): {', '.join(stale)}", highlight=False)
            raise typer.Exit(code=1)
        console.print("reference pages up to date")
        return
    changed = reference.write_all(command_line(), root)
    console.print(
        f"reference pages written: {', '.join(map(str, changed)) or 'none changed'}", highlight=False
    )


def command_line() -> CommandLine:
    """The ``nextbuy`` app as the CLI page documents it (every command registered by now)."""
    from nextbuy.docs_reference import CommandLine  # as in docs_reference() above

    return CommandLine(app, tuple(BENCHES))


def _differs(path: Path, text: str) -> bool:
    return not path.exists() or path.read_text() != text


@bench_app.command("report")
def bench_report(
    root: Path = RootOption,
    check: bool = typer.Option(False, "--check", help="write nothing; exit 1 when the page is out of date"),
) -> None:
    """Render docs/benchmarks/results.md and its pictures from the result files in benchmarks/results/."""
    report = importlib.import_module("nextbuy.bench.report")  # by name: the CLI never imports bench/
    if check:
        stale = report.stale(root)
        if stale:
            said = ", ".join(str(p.relative_to(root)) for p in stale)
            console.print(f"out of date: {said}: run nextbuy bench report", highlight=False)
            raise typer.Exit(code=1)
        console.print(f"{report.PAGE} and its pictures up to date", highlight=False)
        return
    changed = report.write(root)
    console.print(f"{report.PAGE} {'written' if changed else 'unchanged'}", highlight=False)


@bench_app.command("record", context_settings={"ignore_unknown_options": True})
def bench_record(
    name: str = typer.Argument(..., help="result name: writes benchmarks/results/NAME.json"),
    command: list[str] = typer.Argument(
        ...,
        help="the bench command line, after --, with --out FILE (e.g. -- nextbuy bench serve --out s.json)",
    ),
    root: Path = RootOption,
) -> None:
    """Run a bench and keep its JSON with command, commit, date, machine, wall time and peak memory."""
    report = importlib.import_module("nextbuy.bench.report")
    try:
        path = report.record(name, command, root)
    except ValueError as err:
        console.print(f"[red]{err}[/]", highlight=False)
        raise typer.Exit(code=2) from None
    except subprocess.CalledProcessError as err:
        console.print(f"[red]the bench exited {err.returncode}: nothing recorded[/]", highlight=False)
        raise typer.Exit(code=1) from None
    console.print(f"{path} written; render the page with nextbuy bench report", highlight=False)


@bench_app.command("record-all")
def bench_record_all(
    root: Path = RootOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan and its expected time only"),
) -> None:
    """Record every committed result file again with its own recorded command, one at a time
    (run it on a quiet machine), then render the results page: `make results`."""
    import os

    report = importlib.import_module("nextbuy.bench.report")
    plan, skipped = report.recordings(root)
    expected = sum(r.expected_s or 0.0 for r in plan)
    console.print(
        f"{len(plan)} result files to record again, about {expected / 3600:.1f} h on the machine "
        "that recorded them last (each file's wall time):",
        highlight=False,
    )
    for r in plan:
        console.print(
            f"  {r.name:<36} {(r.expected_s or 0) / 60:6.1f} min  {' '.join(r.argv)}", highlight=False
        )
    for name, why in skipped.items():
        console.print(f"  {name:<36} not re-run: {why}", highlight=False)
    if dry_run:
        return
    # The project's programs first, as the recorded commands name them (nextbuy, python).
    os.environ["PATH"] = f"{(root / '.venv' / 'bin').resolve()}{os.pathsep}{os.environ.get('PATH', '')}"
    failed = []
    for r in plan:
        console.print(f"[bold]recording {r.name}[/]", highlight=False)
        try:
            report.record(r.name, r.argv, root)
        except (subprocess.CalledProcessError, ValueError, OSError) as err:
            console.print(f"[red]{r.name}: {err}: its last result stays[/]", highlight=False)
            failed.append(r.name)
    report.write(root)
    if failed:
        console.print(f"[red]not recorded: {', '.join(failed)}[/]", highlight=False)
        raise typer.Exit(code=1)
    console.print(f"{report.PAGE} rendered from {len(plan)} new recordings", highlight=False)
