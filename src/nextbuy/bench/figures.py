"""The pictures of the results page, drawn from the result files (``nextbuy bench report``
writes them as SVG beside the page, ``--check`` compares them as it does the page).

Each picture reads one result file and nothing else; its alt text says what it shows. SVG
output is byte-stable for a given file: text kept as text, ids salted with a constant, no
date in the metadata.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # after the backend is chosen
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from matplotlib.typing import RcKeyType

from nextbuy.constants import WEIGHTING_METHODS

IMAGES = "images"  # beside the page: docs/benchmarks/images/
STYLE: dict[RcKeyType, Any] = {
    "svg.hashsalt": "nextbuy-results",
    "svg.fonttype": "none",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
ENGINE_COLOURS = {"pandas": "#1f77b4", "spark": "#d62728"}
STAGE_MARKERS = {"ingest": "o", "label_delay": "s", "monitor": "^", "batch_topk": "D"}


@dataclass(frozen=True)
class Picture:
    file: str  # its name under IMAGES
    alt: str  # what it shows, for a reader who cannot see it
    svg: str


def _svg(figure: Figure) -> str:
    out = io.StringIO()
    figure.savefig(out, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    return out.getvalue()


def _figure(columns: int = 1, width: float = 6.4, height: float = 3.4) -> tuple[Figure, Any]:
    return plt.subplots(1, columns, figsize=(width, height), squeeze=False)


# ---- one drawing per kind of result file ---------------------------------------------------


def engines(name: str, result: dict) -> list[Picture]:
    """Time and the largest process against impressions, log-log, per engine and stage; a run
    pandas could not finish under the memory cap is marked where it stopped."""
    pictures = []
    for key, label, file in (
        ("stage_s", "seconds", "time"),
        ("peak_process_gib", "largest process, GiB", "memory"),
    ):
        figure, axes = _figure()
        ax = axes[0][0]
        for engine, colour in ENGINE_COLOURS.items():
            for stage, marker in STAGE_MARKERS.items():
                runs = [r for r in result.get("runs", []) if r["engine"] == engine and r["stage"] == stage]
                done = [r for r in runs if r.get(key) is not None and not r.get("exceeded")]
                if done:
                    ax.plot(
                        [r["impressions"] for r in done],
                        [r[key] for r in done],
                        marker=marker,
                        color=colour,
                        linestyle="-" if engine == "spark" else "--",
                        label=f"{engine} {stage}",
                    )
                for r in runs:
                    if r.get("exceeded"):
                        ax.scatter([r["impressions"]], [r.get(key) or 0.0], marker="x", color=colour, s=60)
        stopped = [r for r in result.get("runs", []) if r["engine"] == "pandas" and r.get("exceeded")]
        if stopped:
            size = min(r["impressions"] for r in stopped)
            ax.axvline(size, color=ENGINE_COLOURS["pandas"], alpha=0.4, linestyle=":")
            ax.annotate(
                f"pandas stopped: over {result.get('cap_gib')} GiB ",
                (size, ax.get_ylim()[1]),
                ha="right",
                va="top",
                fontsize=8,
                color=ENGINE_COLOURS["pandas"],
            )
        ax.set(xscale="log", yscale="log", xlabel="impressions", ylabel=label)
        ax.legend(fontsize=7, ncol=2)
        pictures.append(
            Picture(
                f"{name}_{file}.svg",
                f"{label} of each data stage against impressions (log-log), pandas dashed, Spark "
                "solid; pandas' runs stopped at the memory cap are crosses",
                _svg(figure),
            )
        )
    return pictures


def daily_loop(name: str, result: dict) -> list[Picture]:
    """Each next-day candidate's AUC difference from the champion with its 95% CI, and the
    gate's tolerance line."""
    rows = [c for c in result.get("candidates", []) if (c.get("comparison") or {}).get("auc")]
    if not rows:
        return []
    figure, axes = _figure(height=0.5 + 0.45 * len(rows))
    ax = axes[0][0]
    for i, c in enumerate(rows):
        auc = c["comparison"]["auc"]
        colour = "#2ca02c" if c["passed"] else "#d62728"
        ax.errorbar(
            auc["diff"], i, xerr=[[auc["diff"] - auc["lo"]], [auc["hi"] - auc["diff"]]], fmt="o", color=colour
        )
    labels = ["shuffled labels" if c["shuffled_labels"] else f"train.seed {c['train_seed']}" for c in rows]
    ax.set_yticks(range(len(rows)), labels)
    ax.axvline(0.0, color="grey", linewidth=0.8)
    tolerance = result.get("tolerance")
    if tolerance is not None:
        ax.axvline(-tolerance, color="#d62728", linestyle="--", label=f"−tolerance ({tolerance})")
        ax.legend(fontsize=8)
    ax.set(xlabel="test AUC, candidate − champion (95% CI)")
    return [
        Picture(
            f"{name}.svg",
            "each next-day candidate's AUC difference from the champion with its 95% confidence "
            "interval; green released, red refused"
            + ("; the dashed line is minus the gate's tolerance" if tolerance is not None else ""),
            _svg(figure),
        )
    ]


# Weightings in the order the pages show them (a real store's benches run no ablations).
DELAY_METHODS = (*WEIGHTING_METHODS, "oracle")


def delay_cost_beyond_noise(result: dict, metric: str) -> bool:
    """Whether oracle − naive (what delay costs) exceeds its seed-to-seed spread: the per-seed
    gap's std for AUC where recorded, else the larger of the two methods' stds. Inside the
    noise an RI (a share of that gap) is a ratio of noise and says nothing."""
    naive, oracle = result["naive"], result["oracle"]
    gap = abs(oracle[metric] - naive[metric])
    noise = result.get("gap_auc_std") if metric == "auc" else None
    if noise is None:
        noise = max(naive["std"][metric], oracle["std"][metric])
    return gap > noise


def delay_weightings(name: str, result: dict) -> list[Picture]:
    """AUC and NLL of each weighting, mean ± std over seeds, with its RI."""
    methods = [m for m in DELAY_METHODS if m in result]
    figure, axes = _figure(columns=2, width=7.2, height=0.8 + 0.3 * len(methods))
    for ax, metric, ri in zip(axes[0], ("auc", "nll"), ("ri_auc", "ri_nll"), strict=True):
        for i, m in enumerate(methods):
            ax.errorbar(result[m][metric], i, xerr=result[m]["std"][metric], fmt="o", color="#1f77b4")
            share = (result.get(ri) or {}).get(m)
            if share is not None and m not in ("naive", "oracle") and delay_cost_beyond_noise(result, metric):
                ax.annotate(
                    f"RI {share:+.2f}", (result[m][metric], i), xytext=(4, 5), textcoords="offset points"
                )
        ax.set_yticks(range(len(methods)), methods if metric == "auc" else [""] * len(methods))
        ax.set(xlabel=f"{metric.upper()} (mean ± std over {result[methods[0]]['seeds']} seeds)")
    return [
        Picture(
            f"{name}.svg",
            "test AUC and NLL of each delay weighting against the eventual labels, mean ± std "
            "over seeds, with RI, the share of the naive-to-oracle gap each closes, where that gap "
            "is beyond the seed noise",
            _svg(figure),
        )
    ]


RANKING_METRICS = ("hits@20", "mrr", "direction")


def real_ranking(name: str, result: dict) -> list[Picture]:
    """Hits@20, MRR and direction AUC per method, mean ± std over seeds."""
    methods = list(result.get("methods", {}))
    figure, axes = _figure(columns=3, width=8.4, height=0.8 + 0.3 * len(methods))
    for ax, metric in zip(axes[0], RANKING_METRICS, strict=True):
        for i, m in enumerate(methods):
            figure_of = result["methods"][m].get(metric)
            if figure_of:
                ax.errorbar(figure_of["mean"], i, xerr=figure_of["std"], fmt="o", color="#1f77b4")
        ax.set_yticks(range(len(methods)), methods if ax is axes[0][0] else [""] * len(methods))
        ax.set(xlabel=f"{metric} (mean ± std)")
    return [
        Picture(
            f"{name}.svg",
            "Hits@20, MRR and direction AUC of each method on the store's next purchases after the "
            "snapshot, mean ± std over seeds",
            _svg(figure),
        )
    ]


FAULT_OUTCOMES = (
    ("clear", "refused clearly / recovered", "#2ca02c"),
    ("silent", "silent accept", "#ff7f0e"),
    ("traceback", "traceback or 5xx", "#d62728"),
    ("unclear", "unclear", "#9467bd"),
    ("lost", "outputs lost", "#8c564b"),
)


def faults(name: str, result: dict) -> list[Picture]:
    """The fault matrix's cases per class, stacked by outcome."""
    rows = result.get("rows", [])
    groups = list(dict.fromkeys(r["group"] for r in rows))
    figure, axes = _figure(height=0.6 + 0.35 * len(groups))
    ax = axes[0][0]
    left = [0] * len(groups)
    for key, label, colour in FAULT_OUTCOMES:
        counts = [
            sum(
                1
                for r in rows
                if r["group"] == g
                and (r.get(key) or (key == "clear" and r.get("recovered") and not r.get("lost")))
            )
            for g in groups
        ]
        ax.barh(range(len(groups)), counts, left=left, color=colour, label=label)
        left = [a + b for a, b in zip(left, counts, strict=True)]
    ax.set_yticks(range(len(groups)), groups)
    ax.set(xlabel=f"cases ({len(rows)} in all)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18 - 0.6 / len(groups)), ncol=3)
    return [
        Picture(
            f"{name}.svg",
            "the fault matrix's cases per class, each bar split by outcome: refused clearly or "
            "recovered, silent accept, traceback, unclear, outputs lost",
            _svg(figure),
        )
    ]


def events_scale(name: str, result: dict) -> list[Picture]:
    """Build time and peak memory against impressions, log-log."""
    sizes = result.get("sizes", [])
    figure, axes = _figure(columns=2, width=7.2, height=2.8)
    x = [s["impressions"] for s in sizes]
    for ax, key, label in zip(
        axes[0], ("build_s", "peak_rss_gib"), ("build seconds", "peak RSS, GiB"), strict=True
    ):
        y = [s[key] for s in sizes]
        ax.plot(x, y, marker="o")
        ax.set(xscale="log", yscale="log", xlabel="impressions", ylabel=label)
        for axis in (ax.xaxis, ax.yaxis):  # under a decade log axes label minor ticks: too many
            axis.set_minor_formatter(NullFormatter())
        ax.set_xticks(x, [f"{v / 1e6:g}M" for v in x])
        for xi, yi in zip(x, y, strict=True):  # each size's figure, read off the point
            ax.annotate(f"{yi:g}", (xi, yi), xytext=(4, -10), textcoords="offset points", fontsize=8)
    return [
        Picture(
            f"{name}.svg",
            "time to build the graph and the labels from raw logs, and the peak memory, against "
            "impressions (log-log)",
            _svg(figure),
        )
    ]


# The stages of bench scale drawn and tabled, each size's JSON key and its label.
SCALE_STAGES = (
    ("ingest_s", "ingest"),
    ("label_delay_s", "label_delay"),
    ("train_epoch_s", "train epoch"),
    ("export_s", "export"),
    ("calibrate_s", "calibrate"),
)


def scale(name: str, result: dict) -> list[Picture]:
    """Stage seconds and peak memory against the graph's edges, log-log; sizes skipped by the
    bench's budget named under the plots."""
    run = [s for s in result.get("sizes", []) if not s.get("skipped")]
    figure, axes = _figure(columns=2, width=7.2, height=2.8)
    times, memory = axes[0]
    x = [s["n_edges"] for s in run]
    for key, label in (*SCALE_STAGES, ("total_s", "total")):
        times.plot(x, [s[key] for s in run], marker="o", label=label, lw=2.5 if key == "total_s" else 1.2)
    memory.plot(x, [s["peak_rss_gib"] for s in run], marker="o")
    times.set(xscale="log", yscale="log", xlabel="edges", ylabel="seconds")
    memory.set(xscale="log", xlabel="edges", ylabel="peak RSS, GiB")
    for ax in (times, memory):
        ax.set_xticks(x, [f"{s['n_edges']:,}\n({s['n_products'] / 1000:g}k products)" for s in run])
        ax.xaxis.set_minor_formatter(NullFormatter())
    figure.subplots_adjust(wspace=0.35)
    times.legend(fontsize=7, ncol=3, frameon=False, loc="upper left", bbox_to_anchor=(0, -0.3))
    skipped = [s for s in result.get("sizes", []) if s.get("skipped")]
    if skipped:
        said = "; ".join(f"{s['n_products']:,} products: {s['skipped']}" for s in skipped)
        figure.text(0.5, -0.32, said, ha="center", fontsize=7)
    return [
        Picture(
            f"{name}.svg",
            "seconds per stage and in total, and the peak memory, against the graph's edges at each "
            "catalogue size run (log-log)",
            _svg(figure),
        )
    ]


SERVE_PATHS = (
    ("load_levels", "nextbuy serve (pair fast path)", "#1f77b4"),
    ("load_levels_mlflow_path", "through MLflow's scoring server", "#7f7f7f"),
)


def serve(name: str, result: dict) -> list[Picture]:
    """REST latency percentiles (p50 solid, p99 dashed) and throughput against concurrent
    clients, as `nextbuy serve` answers and through MLflow's own scoring path."""
    figure, axes = _figure(columns=2, width=7.2, height=2.8)
    latency, throughput = axes[0]
    for key, label, colour in SERVE_PATHS:
        levels = [lv for lv in result.get(key, []) if lv.get("p50_ms") is not None]
        if not levels:
            continue
        clients = [lv["clients"] for lv in levels]
        for percentile, style in (("p50", "-"), ("p99", "--")):
            values = [lv[f"{percentile}_ms"] for lv in levels]
            latency.plot(clients, values, marker="o", color=colour, ls=style, label=f"{label}: {percentile}")
        throughput.plot(clients, [lv["rps"] for lv in levels], marker="o", color=colour, label=label)
    goal = (result.get("goals") or {}).get("load_p99_ms_16")
    if goal is not None:
        latency.axhline(goal, color="#d62728", alpha=0.5, linestyle=":")
        note = f"p99 goal at 16 clients: {goal:g} ms"
        latency.annotate(
            note, (1, goal), xytext=(2, 3), textcoords="offset points", fontsize=7, color="#d62728"
        )
    latency.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="latency, ms")
    throughput.set(xscale="log", xlabel="concurrent clients", ylabel="requests per second")
    for ax in (latency, throughput):
        ax.xaxis.set_minor_formatter(NullFormatter())
    figure.subplots_adjust(wspace=0.35)  # the right plot's axis label clear of the left plot
    # Below both plots: inside, the legend would cover the lowest lines.
    latency.legend(fontsize=7, ncol=2, frameon=False, loc="upper left", bbox_to_anchor=(0, -0.2))
    workers = result.get("load_workers")
    return [
        Picture(
            f"{name}.svg",
            "REST latency p50 and p99 and the requests per second of 100-candidate requests against "
            f"concurrent clients ({workers} server workers), as nextbuy serve answers them and "
            "through MLflow's own scoring path",
            _svg(figure),
        )
    ]


LINKPRED_METRICS = (("hits@20", "Hits@20"), ("mrr", "MRR"), ("direction_auc", "direction AUC"))


def linkpred_methods(result: dict) -> list[str]:
    """The methods of a linkpred result (its other keys: provenance, paired gaps), best Hits@20 first."""
    return sorted(
        (k for k, v in result.items() if isinstance(v, dict) and "hits@20" in v and "std" in v),
        key=lambda k: -result[k]["hits@20"],
    )


def threshold_estimators(result: dict) -> list[str]:
    """The uncertainty estimators of a thresholds result: each a list of rows per target."""
    return [k for k, v in result.items() if isinstance(v, list) and v and "gain" in v[0]]


def linkpred(name: str, result: dict) -> list[Picture]:
    """Hits@20, MRR and direction AUC per method, mean ± std over seeds, BLADE highlighted."""
    methods = linkpred_methods(result)[::-1]  # the best at the top
    figure, axes = _figure(columns=3, width=8.4, height=0.8 + 0.25 * len(methods))
    for ax, (metric, label) in zip(axes[0], LINKPRED_METRICS, strict=True):
        for i, m in enumerate(methods):
            colour = "#d62728" if m.startswith("blade") else "#1f77b4"
            ax.errorbar(result[m][metric], i, xerr=result[m]["std"][metric], fmt="o", color=colour)
        ax.set_yticks(range(len(methods)), methods if ax is axes[0][0] else [""] * len(methods))
        seeds = result[methods[0]]["seeds"] if methods else 0
        ax.set(xlabel=f"{label} (mean ± std, {seeds} seeds)")
    return [
        Picture(
            f"{name}.svg",
            "test Hits@20, MRR and direction AUC of each link-prediction method, mean ± std over "
            "seeds, BLADE in red, methods ordered by Hits@20",
            _svg(figure),
        )
    ]


def threshold_gains(name: str, result: dict) -> list[Picture]:
    """Per uncertainty estimator, the recall gain of per-bucket thresholds over one threshold
    against the precision target, with its 95% CI over seeds and the no-gain line."""
    estimators = threshold_estimators(result)
    figure, axes = _figure(width=6.4, height=3.4)
    ax = axes[0][0]
    ax.axhline(0.0, color="black", linewidth=0.8)
    for i, m in enumerate(estimators):
        rows = result[m]
        lifts = np.array([r["target_lift"] for r in rows]) * (1 + 0.015 * (i - len(estimators) / 2))
        gain = np.array([100 * r["gain"] for r in rows])
        low = gain - np.array([100 * r["gain_ci_low"] for r in rows])
        high = np.array([100 * r["gain_ci_high"] for r in rows]) - gain
        style = {"linestyle": "--", "color": "grey"} if m == "oracle_error" else {}
        ax.errorbar(lifts, gain, yerr=[low, high], marker="o", markersize=3, capsize=2, label=m, **style)
    targets = [r["target_lift"] for r in result[estimators[0]]] if estimators else []
    ax.set(
        xscale="log",
        xlabel="precision target, a multiple of the positive rate (log scale)",
        ylabel=f"recall gain, % (mean, 95% CI, {result.get('seeds')} seeds)",
    )
    ax.set_xticks(targets, [f"{t:g}×" for t in targets])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=7, loc="best")
    return [
        Picture(
            f"{name}.svg",
            "recall gain of per-bucket thresholds over one threshold at each precision target, per "
            "uncertainty estimator, mean with its 95% CI over seeds; above the zero line "
            "per-bucket thresholds kept more conversions",
            _svg(figure),
        )
    ]


# Result files with pictures: a name, or a prefix for the files of each real store.
DRAWINGS: dict[str, Callable[[str, dict], list[Picture]]] = {
    "engines": engines,
    "daily_loop": daily_loop,
    "faults": faults,
    "events_scale": events_scale,
    "real_delay_": delay_weightings,
    "delay": delay_weightings,
    "thresholds": threshold_gains,
    "real_ranking_": real_ranking,
    "serve": serve,
    "scale": scale,
    "linkpred": linkpred,
    "linkpred_": linkpred,
}


def pictures(name: str, result: dict) -> list[Picture]:
    """The pictures of result file ``name`` (none for a kind without a drawing)."""
    draw = DRAWINGS.get(name) or next(
        (d for p, d in DRAWINGS.items() if p.endswith("_") and name.startswith(p)), None
    )
    if draw is None:
        return []
    with plt.rc_context(STYLE):
        return draw(name, result)
