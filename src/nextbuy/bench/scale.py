"""`nextbuy bench scale`: the pipeline's cores at growing catalogue sizes.

Each size (default 10k, 100k and 1M simulated products: params.yaml's store with purchases
and impressions scaled in proportion, so the power-law graph's edges grow linearly) runs in a
fresh child process (:mod:`nextbuy.bench.scale_core`, which says how each stage is timed), so
its peak RSS is its own. Per size: ``n_products``, ``n_edges``, the ``<stage>_s`` times,
``total_s`` (their sum), ``topk_s`` and ``topk_all_s_extrapolated``, ``peak_rss_gib``.

Across sizes:

* ``time_exponent``: least-squares slope of log ``total_s`` vs log ``n_edges`` (goal <= 1.1:
  near-linear);
* ``sampler_edges_per_s``: message edges per second of BLADE's neighbour sampler, largest
  size run;
* ``blade_vs_sage_epoch_ratio``: one BLADE epoch sampling every hop over one epoch of
  torch-geometric's GraphSAGE (same loop, graph, batches and neighbour budget, same process, back
  to back), largest size where both ran (goal <= 1.5).

A size that cannot run is recorded, not fatal (``"skipped": reason``): before it starts, when
the sizes already run extrapolate past the time budget (60 min) or the memory available;
while it runs, when it passes either (the child is killed); or when the child fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO

import numpy as np
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from nextbuy import presets
from nextbuy.bench.scale_core import RESULT_PREFIX, SAMPLE_SOURCES, STAGE_KEYS, STAGE_PREFIX, STEPS, TOP_K
from nextbuy.config import read_params
from nextbuy.mlops import io

DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
BUDGET_S = 3600.0  # per size: a size predicted or seen to take longer is skipped
MEMORY_SHARE = 0.9  # of the memory available when a size starts: the most its child may hold
POLL_S = 0.5
GOALS = {"time_exponent": 1.1, "blade_vs_sage_epoch_ratio": 1.5}
SIZE_KEYS = (
    "n_products",
    "n_edges",
    *STAGE_KEYS,
    "total_s",
    "topk_s",
    "topk_all_s_extrapolated",
    "peak_rss_gib",
)


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"10000,100000"`` -> (10000, 100000); each a catalogue of at least 10 products."""
    sizes = tuple(int(part) for part in text.replace("_", "").split(",") if part.strip())
    if not sizes or min(sizes) < 10:
        raise ValueError(f"sizes must be comma-separated product counts >= 10, got {text!r}")
    return sizes


def time_exponent(n_edges: Sequence[float], total_s: Sequence[float]) -> float | None:
    """Least-squares slope of log(time) on log(edges); None with fewer than two distinct sizes."""
    x, y = np.log(np.asarray(n_edges, dtype=float)), np.log(np.asarray(total_s, dtype=float))
    if x.size < 2 or np.ptp(x) == 0:
        return None
    return float(np.polyfit(x, y, 1)[0])


def estimate(n_products: int, measured: list[dict]) -> dict | None:
    """Child wall time and peak RSS of ``n_products`` extrapolated from the sizes measured:
    time by their fitted power (at least linear) from the largest; memory by a straight line
    through the two largest (a fixed base, the interpreter and libraries, plus a cost per
    product; never below the largest's), or in proportion to the one size measured."""
    if not measured:
        return None
    ordered = sorted(measured, key=lambda r: r["n_products"])
    last = ordered[-1]
    power = time_exponent([r["n_products"] for r in measured], [r["child_s"] for r in measured]) or 1.0
    ratio = n_products / last["n_products"]
    if len(ordered) >= 2 and ordered[-2]["n_products"] < last["n_products"]:
        before = ordered[-2]
        per_product = (last["peak_rss_gib"] - before["peak_rss_gib"]) / (
            last["n_products"] - before["n_products"]
        )
        memory = last["peak_rss_gib"] + max(per_product, 0.0) * (n_products - last["n_products"])
    else:
        memory = last["peak_rss_gib"] * ratio
    return {
        "child_s": last["child_s"] * ratio ** max(power, 1.0),
        "peak_rss_gib": memory,
        "from_n_products": last["n_products"],
    }


def preflight(
    n_products: int, measured: list[dict], budget_s: float, available_gib: float | None
) -> str | None:
    """Why ``n_products`` should not start (extrapolated past the budget or the memory), or None."""
    guess = estimate(n_products, measured)
    if guess is None:
        return None
    basis = f"extrapolated from the {guess['from_n_products']:,}-product run"
    if guess["child_s"] > budget_s:
        return f"estimated {guess['child_s'] / 60:.0f} min > budget {budget_s / 60:.0f} min ({basis})"
    if available_gib is not None and guess["peak_rss_gib"] > MEMORY_SHARE * available_gib:
        return (
            f"estimated peak RSS {guess['peak_rss_gib']:.1f} GiB > {MEMORY_SHARE:.0%} of the "
            f"{available_gib:.1f} GiB available ({basis})"
        )
    return None


def skipped(n_products: int, reason: str, stopped_in: str | None = None) -> dict:
    row = {key: None for key in SIZE_KEYS} | {"n_products": int(n_products), "skipped": reason}
    return row | ({"stopped_in": stopped_in} if stopped_in else {})


# -- the child process ----------------------------------------------------------------------------


def available_gib() -> float | None:
    """MemAvailable of /proc/meminfo in GiB (None where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        return None
    return None


def _rss_gib(pid: int) -> float:
    """Resident memory of process ``pid`` (0 where /proc cannot tell)."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**30


def _pump(stream: Iterable[str], lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))


class _Child:
    """One size's child process: its stage lines, its result, and the watchdog's verdict."""

    def __init__(self, params_file: Path, n_products: int, sample_sources: int, stderr: IO[bytes]) -> None:
        self.stderr = stderr
        cmd = [sys.executable, "-m", "nextbuy.bench.scale_core", str(params_file), str(n_products),
               str(sample_sources)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                     start_new_session=True)  # fmt: skip
        self.lines: queue.Queue = queue.Queue()
        self.reader = threading.Thread(target=_pump, args=(self.proc.stdout, self.lines), daemon=True)
        self.reader.start()
        self.result: dict | None = None
        self.step: str | None = None
        self.reason: str | None = None

    def drain(self, on_step: Callable[[str], None]) -> None:
        while not self.lines.empty():
            line = self.lines.get()
            if line.startswith(STAGE_PREFIX):
                self.step = line.removeprefix(STAGE_PREFIX)
                on_step(self.step)
            elif line.startswith(RESULT_PREFIX):
                self.result = json.loads(line.removeprefix(RESULT_PREFIX))

    def kill(self, reason: str) -> None:
        self.reason = reason
        with contextlib.suppress(ProcessLookupError):  # ended meanwhile
            os.killpg(self.proc.pid, signal.SIGKILL)  # our own child's session
        self.proc.wait()

    def failure(self) -> str:
        self.stderr.seek(0)
        tail = self.stderr.read().decode(errors="replace").strip().splitlines()[-3:]
        code = self.proc.returncode
        why = "killed by SIGKILL (out of memory?)" if code == -signal.SIGKILL else f"exited {code}"
        return f"child {why}: {' | '.join(tail)[-400:]}"


def run_size(
    params_file: Path, n_products: int, sample_sources: int, budget_s: float, on_step: Callable[[str], None]
) -> dict:
    """One size in a fresh child, killed past ``budget_s`` or ``MEMORY_SHARE`` of available memory."""
    free = available_gib()
    limit = MEMORY_SHARE * free if free else float("inf")
    with tempfile.TemporaryFile() as stderr:
        child = _Child(params_file, n_products, sample_sources, stderr)
        try:
            _watch(child, budget_s, limit, on_step)
        finally:
            if child.proc.poll() is None:
                child.kill("interrupted")
        if child.result is not None:
            return child.result
        return skipped(n_products, child.reason or child.failure(), child.step)


def _watch(child: _Child, budget_s: float, limit_gib: float, on_step: Callable[[str], None]) -> None:
    """Relay the child's steps until it ends; kill it past the time budget or the memory limit."""
    started = time.monotonic()
    while child.proc.poll() is None:
        child.drain(on_step)
        if _rss_gib(child.proc.pid) > limit_gib:
            child.kill(f"RSS passed {limit_gib:.1f} GiB ({MEMORY_SHARE:.0%} of the memory available)")
        elif time.monotonic() - started > budget_s:
            child.kill(f"ran past the {budget_s:,.0f} s budget")
        time.sleep(POLL_S)
    child.reader.join(timeout=10)
    child.drain(on_step)


# -- figures --------------------------------------------------------------------------------------


def summarise(rows: list[dict], config: dict) -> dict:
    measured = [r for r in rows if "skipped" not in r]
    largest = max(measured, key=lambda r: r["n_products"]) if measured else {}
    compared = [r for r in measured if r.get("blade_vs_sage_epoch_ratio") is not None]
    largest_compared = max(compared, key=lambda r: r["n_products"]) if compared else {}
    return {
        "sizes": rows,
        "time_exponent": time_exponent([r["n_edges"] for r in measured], [r["total_s"] for r in measured]),
        "sampler_edges_per_s": largest.get("sampler_edges_per_s"),
        "blade_vs_sage_epoch_ratio": largest_compared.get("blade_vs_sage_epoch_ratio"),
        "config": config
        | {"largest_run": largest.get("n_products"), "largest_sage_run": largest_compared.get("n_products")},
        "host": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_avg_1m": os.getloadavg()[0],
        },
    }


def _config(params_file: Path, sizes: Iterable[int], sample_sources: int, budget_s: float) -> dict:
    params = read_params(params_file)
    sim, train = params["ingest"]["simulator"], params["train"]
    return {
        "sizes": [int(n) for n in sizes],
        "purchases_per_product": sim["n_purchases"] / sim["n_products"],
        "impressions_per_product": sim["n_impressions"] / sim["n_products"],
        "epochs_timed": 1,
        "batch_size": train["batch_size"],
        "neighbour_history": train["neighbour_history"],
        "uncertainty": train["uncertainty"],
        "top_k": TOP_K,
        "topk_sample_sources": int(sample_sources),
        "budget_s_per_size": budget_s,
        "stage_keys_in_total": list(STAGE_KEYS),
    }


def _reporter(progress: Progress, task: TaskID, n_products: int) -> Callable[[str], None]:
    def on_step(step: str) -> None:
        done = STEPS.index(step) if step in STEPS else 0
        progress.update(task, description=f"{n_products:,} products: {step}", completed=done)

    return on_step


def run(
    out: Path,
    sizes: tuple[int, ...] | str = DEFAULT_SIZES,
    params_file: str = "params.yaml",
    budget_s: float = BUDGET_S,
    sample_sources: int = SAMPLE_SOURCES,
    preset: str | None = None,
) -> dict:
    """Every size in turn (``preset``: a params preset applied over ``params_file`` first, so
    the store's per-product ratios and the training settings are the preset's; ``sizes`` may be
    the command line's comma-separated text)."""
    if isinstance(sizes, str):
        sizes = parse_sizes(sizes)
    if preset is None:
        return _run(
            out, sizes, Path(params_file).resolve(), budget_s, sample_sources, {"params_file": params_file}
        )
    with tempfile.TemporaryDirectory(prefix="nextbuy-bench-scale-") as tmp:
        merged = Path(tmp) / "params.yaml"
        merged.write_text(yaml.safe_dump(presets.params_with(preset, params_file), sort_keys=False))
        # As the user named them: the merged file is a temporary one, the resolved path this checkout's.
        named = {"params_file": params_file, "preset": str(preset)}
        figures = _run(out, sizes, merged, budget_s, sample_sources, named)
    return figures


def _run(
    out: Path,
    sizes: Iterable[int],
    params_path: Path,
    budget_s: float,
    sample_sources: int,
    extra: dict | None = None,
) -> dict:
    config = _config(params_path, sizes, sample_sources, budget_s) | (extra or {})
    console, rows = Console(width=140), list[dict]()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        for n in sorted(int(s) for s in sizes):
            task = progress.add_task(f"{n:,} products", total=len(STEPS))
            on_step = _reporter(progress, task, n)
            measured = [r for r in rows if "skipped" not in r]
            reason = preflight(n, measured, budget_s, available_gib())
            rows.append(
                skipped(n, reason) if reason else run_size(params_path, n, sample_sources, budget_s, on_step)
            )
            progress.update(task, completed=len(STEPS), description=f"{n:,} products: done")
    figures = summarise(rows, config)
    console.print(_table(figures))
    io.write_json(figures, out)
    return figures


def _met(value: float | None, goal: float) -> str:
    if value is None:
        return "[yellow]n/a[/]"
    return "[green]yes[/]" if value <= goal else "[red]no[/]"


TABLE_ROWS = (  # (key, label, format) of the per-size figures shown
    ("n_edges", "edges", "{:,}"),
    *((key, key.removesuffix("_s") + " (s)", "{:.2f}") for key in STAGE_KEYS),
    ("total_s", "total of the stages (s)", "{:.1f}"),
    ("topk_s", f"top-{TOP_K} of the source sample (s)", "{:.2f}"),
    ("topk_all_s_extrapolated", f"top-{TOP_K} of every product, extrapolated (s)", "{:.1f}"),
    ("train_epoch_sampled_s", "BLADE epoch sampling every hop (s)", "{:.2f}"),
    ("sage_epoch_s", "GraphSAGE epoch, same budget (s)", "{:.2f}"),
    ("blade_vs_sage_epoch_ratio", "BLADE / GraphSAGE epoch", "{:.3f}"),
    ("sampler_edges_per_s", "sampler edges/s", "{:,.0f}"),
    ("peak_rss_gib", "peak RSS (GiB)", "{:.2f}"),
)


def _cell(row: dict, key: str, fmt: str) -> str:
    if "skipped" in row:
        return f"[yellow]skipped: {row['skipped']}[/]" if key == "n_edges" else ""
    return "n/a" if row.get(key) is None else fmt.format(row[key])


def _goal_text(value: float | None, key: str) -> str:
    shown = "n/a" if value is None else f"{value:.3f}"
    return f"{shown} (goal ≤ {GOALS[key]}: {_met(value, GOALS[key])})"


def _table(f: dict) -> Table:
    cpus = f["host"]["cpu_count"]
    table = Table(title=f"bench scale: the pipeline's cores by catalogue size, {cpus} cores")
    table.add_column("figure")
    for row in f["sizes"]:
        table.add_column(f"{row['n_products']:,} products", justify="right", max_width=40)
    for key, label, fmt in TABLE_ROWS:
        table.add_row(label, *(_cell(row, key, fmt) for row in f["sizes"]))
    largest = f["config"]["largest_sage_run"]
    table.add_section()
    table.add_row("time exponent (log total vs log edges)", _goal_text(f["time_exponent"], "time_exponent"))
    ratio = _goal_text(f["blade_vs_sage_epoch_ratio"], "blade_vs_sage_epoch_ratio")
    table.add_row(f"BLADE / GraphSAGE epoch at {largest or 0:,}", ratio)
    return table
