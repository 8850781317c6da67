"""The research benchmarks' `nextbuy bench` commands, registered through the ``nextbuy.bench``
entry point group (benchmarks/pyproject.toml): `bench linkpred`, `bench model`, `bench delay`
and `bench thresholds`. Importing this module stays light (the CLI loads it at start-up); each
command imports its benchmark when run."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import typer
from rich.markup import escape

from nextbuy.cli.common import ParamsOption, console, setup_logging


def linkpred(
    out: Path = typer.Option(Path("bench-linkpred.json"), "--out", help="JSON results"),
    graph: Path | None = typer.Option(
        None, help="PPNP .npz or src,dst edge list (default: ../shared/data/cora_ml/cora_ml.npz)"
    ),
    split: Path | None = typer.Option(
        None, help="DirLinkBench split folder (default: split0 next to the default graph; else random)"
    ),
    seeds: int = typer.Option(5, min=1, help="seeds averaged (mean ± std)"),
    workers: int = typer.Option(
        os.cpu_count() or 1,
        min=1,
        help="training processes side by side, one thread each (1: in process)",
    ),
    members: int = typer.Option(
        1, min=1, help="every trained method as a seed ensemble of this many fits (K x its training time)"
    ),
) -> None:
    """Directed link prediction, DirLinkBench protocol: BLADE vs GNN baselines, +Adamic-Adar."""
    setup_logging()
    bench = importlib.import_module("nextbuy_lab.linkpred")
    figures = bench.run(out, graph=graph, split=split, seeds=seeds, workers=workers, members=members)
    console.print(f"[green]bench linkpred[/] → {out}: {json.dumps(figures)}", highlight=False)


def _comma_list(text: str | None) -> tuple[str, ...] | None:
    """``"a, b"`` → ``("a", "b")``; None or blank → None."""
    items = tuple(item.strip() for item in (text or "").split(",") if item.strip())
    return items or None


def delay(
    out: Path = typer.Option(Path("bench-delay.json"), "--out", help="JSON results"),
    seeds: int = typer.Option(5, min=1, help="training seeds averaged (mean ± std)"),
    sweep: bool = typer.Option(False, help="also short/long delays, no launches, a shorter history"),
    methods: str | None = typer.Option(
        None, help="comma-separated methods to compare (default: all; naive, importance, oracle always)"
    ),
    regimes: str | None = typer.Option(
        None, help="comma-separated sweep regimes (implies --sweep; default with --sweep: all)"
    ),
    default_store: bool = typer.Option(True, help="--no-default-store: the sweep regimes alone"),
    params: str = ParamsOption,
) -> None:
    """Delayed feedback: naive, wait, importance (+ablations) and oracle on post-snapshot labels."""
    setup_logging()
    chosen = _comma_list(methods)
    chosen_regimes = _comma_list(regimes)
    bench = importlib.import_module("nextbuy_lab.delay")
    try:
        bench.selected(chosen)
        bench.sweep_regimes(chosen_regimes)
    except ValueError as err:
        console.print(f"[red]{escape(str(err))}[/]", highlight=False)
        raise typer.Exit(2) from None
    figures = bench.run(
        out,
        seeds=seeds,
        sweep=sweep or chosen_regimes is not None,
        methods=chosen,
        regimes=chosen_regimes,
        default_store=default_store,
        params_file=params,
    )
    console.print(f"[green]bench delay[/] → {out}: {json.dumps(figures)}", highlight=False)


def model(
    out: Path = typer.Option(Path("bench-model.json"), "--out", help="JSON results"),
    seeds: int = typer.Option(5, min=1, help="training seeds averaged (mean ± std)"),
    params: str = ParamsOption,
) -> None:
    """Conversion model vs the simulator's truth: BLADE, fixed fanout, dual MF, category LR, oracle."""
    setup_logging()
    figures = importlib.import_module("nextbuy_lab.model").run(out, seeds=seeds, params_file=params)
    console.print(f"[green]bench model[/] → {out}: {json.dumps(figures)}", highlight=False)


def thresholds(
    out: Path = typer.Option(Path("bench-thresholds.json"), "--out", help="JSON results"),
    seeds: int = typer.Option(5, min=1, help="training seeds averaged (mean and CI)"),
    graph: Path | None = typer.Option(
        None, help="a directed graph (PPNP .npz or src,dst edge list): its test pairs, cross-fitted"
    ),
    split: Path | None = typer.Option(None, help="with --graph: a DirLinkBench split folder (else random)"),
    params: str = ParamsOption,
) -> None:
    """Per-bucket vs single thresholds vs calibrate-then-threshold, out of sample, by estimator."""
    setup_logging()
    bench = importlib.import_module("nextbuy_lab.thresholds")
    figures = bench.run(out, seeds=seeds, graph=graph, split=split, params_file=params)
    console.print(f"[green]bench thresholds[/] → {out}: {json.dumps(figures)}", highlight=False)


STORE_HELP = "a real store of presets/: online-retail | complete-journey"


def _real(kind: str, out: Path, store: str, seeds: int, params: str) -> None:
    setup_logging()
    if store not in ("online-retail", "complete-journey"):
        console.print(f"[red]--store {escape(store)}: {STORE_HELP}[/]", highlight=False)
        raise typer.Exit(2)
    figures = importlib.import_module("nextbuy_lab.real_stores").run(kind, out, store, seeds, params)
    console.print(f"[green]bench real-{kind}[/] → {out}: {json.dumps(figures)}", highlight=False)


def real_ranking(
    out: Path = typer.Option(Path("bench-real-ranking.json"), "--out", help="JSON results"),
    store: str = typer.Option("online-retail", help=STORE_HELP),
    seeds: int = typer.Option(5, min=1, help="training seeds (mean ± std, paired CIs)"),
    params: str = ParamsOption,
) -> None:
    """A real store's next purchases after its snapshot: BLADE and the served order vs baselines."""
    _real("ranking", out, store, seeds, params)


def real_delay(
    out: Path = typer.Option(Path("bench-real-delay.json"), "--out", help="JSON results"),
    store: str = typer.Option("online-retail", help=STORE_HELP),
    seeds: int = typer.Option(5, min=1, help="training seeds (mean ± std, paired CIs)"),
    params: str = ParamsOption,
) -> None:
    """Delay correction on a real store's delays: each weighting vs labels matured by the log's end."""
    _real("delay", out, store, seeds, params)


def real_thresholds(
    out: Path = typer.Option(Path("bench-real-thresholds.json"), "--out", help="JSON results"),
    store: str = typer.Option("online-retail", help=STORE_HELP),
    seeds: int = typer.Option(5, min=1, help="training seeds (mean and CI)"),
    params: str = ParamsOption,
) -> None:
    """Per-bucket vs one threshold on a real store, judged on its matured exposures after the snapshot."""
    _real("thresholds", out, store, seeds, params)


def real_monitor(
    out: Path = typer.Option(Path("bench-real-monitor.json"), "--out", help="JSON results"),
    store: str = typer.Option("online-retail", help=STORE_HELP),
    params: str = ParamsOption,
) -> None:
    """The monitor on a real store's months after its snapshot (after make run-preset of that store)."""
    _real("monitor", out, store, 1, params)
