"""Benchmark results as data: the committed result files and the pages rendered from them.

Every benchmark figure the documentation quotes comes from a JSON file under
``benchmarks/results/``: the JSON the bench wrote (``--out``) plus where it came from —
``command``, ``commit``, ``date``, ``machine``, ``wall_seconds``, ``peak_memory_mb``.
:func:`record` runs a bench command and writes such a file; :func:`render` turns whatever
result files exist into ``docs/benchmarks/results.md`` (``nextbuy bench report``), and
``tests/bench/test_report.py`` fails when the committed page differs from what it renders.

Files with a known layout get their own table; any other file is listed with its
provenance and its scalar figures, so a new result never needs code here to be shown.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nextbuy import yaml_io
from nextbuy.bench import figures

RESULTS_DIR = Path("benchmarks") / "results"
PAGE = Path("docs") / "benchmarks" / "results.md"
PROVENANCE = ("command", "commit", "date", "machine", "wall_seconds", "peak_memory_mb")
MAX_GENERIC_ROWS = 80


# --- recording -----------------------------------------------------------------------------------


def machine_description() -> str:
    """CPU model, cores, memory and OS of this machine (no host name)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    system = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    return f"{cpu}, {os.cpu_count()} cores{memory}, {system}"


def git_commit(root: Path) -> str | None:
    """HEAD's commit, with ``-dirty`` when tracked files differ from it; None outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=root, check=False).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def out_path(argv: Sequence[str]) -> Path:
    """The ``--out`` file of a bench command line."""
    for i, arg in enumerate(argv):
        if arg == "--out" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--out="):
            return Path(arg.split("=", 1)[1])
    raise ValueError("the bench command must write its JSON with --out FILE")


def portable_command(argv: Sequence[str], root: Path) -> str:
    """The command as anyone would type it in the project: a program of the project's venv by
    its name, paths inside the project relative to it (no checkout's absolute path)."""
    base = root.resolve()
    words = []
    for i, word in enumerate(argv):
        path = Path(word)
        if path.is_absolute() and path.is_relative_to(base):
            word = path.name if i == 0 else str(path.relative_to(base))
        words.append(word)
    return " ".join(words)


def record(name: str, argv: Sequence[str], root: Path = Path(".")) -> Path:
    """Run ``argv`` (a bench command with ``--out``), then write ``benchmarks/results/<name>.json``:
    its JSON plus the command, commit, date, machine, wall time and peak memory of the run."""
    out = out_path(argv)
    out = out if out.is_absolute() else root / out
    commit = git_commit(root)
    started_at, start = time.time(), time.perf_counter()
    subprocess.run(list(argv), cwd=root, check=True)
    wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    figures = with_side_files(json.loads(out.read_text()), out, started_at)
    provenance = {
        "command": portable_command(argv, root),
        "commit": commit,
        "date": dt.date.today().isoformat(),
        "machine": machine_description(),
        "wall_seconds": round(wall, 1),
        "peak_memory_mb": round(peak_kib / 1024, 1),
    }
    # The record's own facts win over a bench's keys of the same name (a bench that writes its
    # own date or machine says the same thing, or something else under the wrong name).
    result = provenance | {k: v for k, v in figures.items() if k not in provenance}
    path = root / RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    return path


def with_side_files(figures: Any, out: Path, since: float) -> dict:
    """A bench's JSON with the JSON files it wrote beside it in the same run (``FILE.paired.json``
    under ``paired``, ``FILE.per_seed.json`` under ``per_seed``): the paired CIs and the per-seed
    rows are part of the result. Older files of that name, from another run, are left out."""
    result = dict(figures) if isinstance(figures, dict) else {"results": figures}
    for side in sorted(out.parent.glob(f"{out.stem}.*.json")):
        key = side.name.removeprefix(f"{out.stem}.").removesuffix(".json").replace(".", "_")
        if key not in result and side.stat().st_mtime >= since:
            result[key] = json.loads(side.read_text())
    return result


@dataclass(frozen=True)
class Recording:
    """A committed result file and how to record it again: its own recorded command."""

    name: str
    argv: list[str]
    expected_s: float | None  # the last recording's wall time


# Result files recorded by hand, and why: record-all leaves them as they are.
BY_HAND = {
    "stack_check": "needs the docker stack (make stack-check, docs/how-to/team-stack.md)",
}


def recordings(root: Path) -> tuple[list[Recording], dict[str, str]]:
    """Every committed result file that its recorded command records again, in the order to run
    them (a store's ``real_monitor_`` right after its ``preset_``, which leaves the run it
    reads), and the others with the reason they are not re-run."""
    runnable: list[Recording] = []
    skipped: dict[str, str] = {}
    for name, result in load_results(root).items():
        command = result.get("command")
        if name in BY_HAND or not command:
            skipped[name] = BY_HAND.get(name, "no recorded command (an independent check)")
            continue
        runnable.append(Recording(name, shlex.split(command), result.get("wall_seconds")))
    presets = {r.name.removeprefix("preset_") for r in runnable if r.name.startswith("preset_")}
    monitors = {r.name: r for r in runnable if r.name.removeprefix("real_monitor_") in presets}
    ordered: list[Recording] = []
    for r in runnable:
        if r.name in monitors:
            continue
        ordered.append(r)
        if r.name.startswith("preset_") and f"real_monitor_{r.name.removeprefix('preset_')}" in monitors:
            ordered.append(monitors[f"real_monitor_{r.name.removeprefix('preset_')}"])
    return ordered, skipped


# --- rendering -----------------------------------------------------------------------------------


def load_results(root: Path) -> dict[str, dict]:
    """Every result file, by name (file stem), in name order."""
    folder = root / RESULTS_DIR
    return (
        {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}
    )


def _cell(value: Any) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, float):
        return f"{value:g}"
    return " ".join(str(value).split()).replace("|", "\\|")


def _signed(value: float) -> str:
    return f"{value:+.1f}".replace("-", "−")


def _ci(low: float, high: float) -> str:
    return f"[{_signed(low)}, {_signed(high)}]"


def _table(header: str) -> list[str]:
    """A Markdown table's ``header`` row and its rule, one ``---`` per column."""
    return [header, "|" + "---|" * (header.count("|") - 1)]


def provenance(result: dict) -> list[str]:
    rows = _table("| recorded | |")
    for key in ("date", "source", "command", "commit", "machine", "wall_seconds", "peak_memory_mb"):
        if key == "source" and key not in result:
            continue
        value = result.get(key)
        shown = f"`{value}`" if key in ("command", "commit") and value else _cell(value)
        rows.append(f"| {key.replace('_', ' ')} | {shown} |")
    return rows


def render_external_linkpred(name: str, result: dict) -> list[str]:
    """An independent link-prediction check of BLADE on a graph nobody here tuned on."""
    blade = result["blade"]
    lines = [
        f"BLADE on {result['graph']}, {result['protocol']} protocol, {result['seeds']} seeds. "
        "Differences are BLADE minus the method named, in points, with paired 95% confidence "
        "intervals.\n",
        *_table("| figure | BLADE | against | difference [95% CI] |"),
    ]
    hits = blade["hits_at_20"]
    for row in result["paired"]:
        mine = f"{hits['mean']:.1f} ± {hits['std']:.1f}" if row["metric"] == "hits_at_20" else ""
        lines.append(
            f"| {_METRIC_NAMES.get(row['metric'], row['metric'])} | {mine} | `{row['against']}` "
            f"({row['role']}) | {_signed(row['difference'])} {_ci(*row['ci95'])} |"
        )
    lead = result["direction_auc_lead"]
    lines.append(
        f"| direction AUC | {blade['direction_auc']:.3f} | every baseline | first, by "
        f"{_signed(lead['min_points'])} to {_signed(lead['max_points'])} points |"
    )
    lines.append("")
    lines.append(result.get("reading", ""))
    return lines


def render_daily_loop(name: str, result: dict) -> list[str]:
    """The daily loop: a champion released at the store's origin snapshot, candidates of the
    next day's snapshot judged against it (same config over training seeds; shuffled labels)."""
    release = result["release"]["candidate"]
    lines = [
        f"A champion released at the origin snapshot {result['origin_snapshot']} (its test AUC "
        f"{release['auc']:.4f} on {int(release['rows']):,} rows), then candidates trained on the "
        f"snapshot one day later ({result['next_snapshot']}), each judged against that champion on "
        "the new test split. *champion AUC* is the champion's score there; *overlap* the test rows "
        "it had learned from.\n",
        *_table("| candidate | verdict | candidate AUC | champion AUC | AUC difference [95% CI] | overlap |"),
    ]
    for c in result["candidates"]:
        who = "shuffled labels" if c["shuffled_labels"] else f"same config, train.seed {c['train_seed']}"
        auc = (c.get("comparison") or {}).get("auc")
        diff = f"{auc['diff']:+.4f} [{auc['lo']:+.4f}, {auc['hi']:+.4f}]".replace("-", "−") if auc else "n/a"
        champion = (c.get("champion") or {}).get("auc")
        lines.append(
            f"| {who} | {'released' if c['passed'] else 'refused'} | {c['candidate']['auc']:.4f} | "
            f"{_cell(champion if champion is None else round(champion, 4))} | {diff} | "
            f"{_cell(c.get('champion_training_overlap'))} |"
        )
    return lines


# bench engines' stages as the results page names them
ENGINE_STAGES = {
    "ingest": "ingest (the raw logs to the graph and the labelled impressions)",
    "monitor": "monitor (scoring and the per-window × per-bucket table)",
    "batch_topk": "batch-topk (the champion's top 20 of every product)",
}


def _listed(items: list[str]) -> str:
    if not items:
        return "The stages"
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def render_engines(name: str, result: dict) -> list[str]:
    """The data stages on pandas and on Spark at growing sizes: time, the largest process, the
    JVM and the whole process tree at their peaks; growth exponents; a sizing table."""
    stages = list(dict.fromkeys(r["stage"] for r in result.get("runs", [])))
    lines = [
        f"{_listed([ENGINE_STAGES.get(st, st) for st in stages])} on each engine, "
        f"Spark on `{result.get('spark_master')}`, the delay models fitted on "
        f"{_cell(result.get('fit_sample_rows'))} train rows; a run whose processes passed "
        f"{_cell(result.get('cap_gib'))} GiB together was stopped.\n",
        *_table(
            "| impressions | engine | stage | seconds | largest process GiB | JVM GiB | all processes GiB "
            "| note |"
        ),
    ]
    for r in result.get("runs", []):
        note = r.get("exceeded") or r.get("skipped") or ("failed" if "failed" in r else "")
        lines.append(
            f"| {r['impressions']:,} | {r['engine']} | {r['stage']} | {_cell(r.get('stage_s'))} | "
            f"{_cell(r.get('peak_process_gib'))} | {_cell(r.get('peak_jvm_gib'))} | "
            f"{_cell(r.get('peak_tree_gib'))} | {_cell(note)} |"
        )
    lines += ["", *_engines_goal(result)]
    lines += ["", *_table("| engine.stage | time exponent | memory exponent | sizes fitted |")]
    for key, fit in result.get("exponents", {}).items():
        sizes = ", ".join(f"{n:.0e}" for n in fit["sizes"])
        lines.append(f"| {key} | {_cell(fit['time'])} | {_cell(fit['peak_tree_memory'])} | {sizes} |")
    sizing = result.get("sizing")
    if sizing:
        lines += [
            "",
            *_table("| sizing (from the largest Spark run) | |"),
            *[f"| {k.replace('_', ' ')} | {_cell(v)} |" for k, v in sizing.items()],
        ]
    return lines


def _engines_goal(result: dict) -> list[str]:
    """Whether Spark ran the largest size with no process above the goal, and the size at which
    each stage's pandas run first did not fit under the cap."""
    largest = max(result.get("sizes") or [0])
    not_fitting = result.get("pandas_first_not_fitting") or {}
    stopped = [f"{stage} at {size:,}" for stage, size in not_fitting.items() if size is not None]
    pandas = ", ".join(stopped) or "every size fitted"
    goal = f"no process above {_cell(result.get('goal_process_gib'))} GiB"
    return [
        *_table(f"| goal: Spark at {largest:,} impressions, {goal} | |"),
        f"| Spark completed every stage | {'yes' if result.get('spark_largest_completed') else 'no'} |",
        f"| its largest process GiB | {_cell(result.get('spark_largest_process_gib'))} |",
        f"| pandas first passed the {_cell(result.get('cap_gib'))} GiB cap | {pandas} |",
    ]


def render_events_scale(name: str, result: dict) -> list[str]:
    """bench events: build time and the size's own peak RSS per orders:impressions size."""
    rules = ", ".join(f"`{k}` {v}" for k, v in result.get("rules", {}).items())
    lines = [
        "The directed graph and the attributed labels built from synthetic raw logs held in memory "
        f"(`domain.events.build_from_logs`; rules of `ingest.events`: {rules}). Each size runs in a "
        "process of its own: *peak RSS* is that process's, the logs themselves (*inputs*) included; "
        "reading the files is not timed.\n",
        *_table(
            "| orders | impressions | interactions | edges | conversions | build (s) | inputs (GiB) "
            "| peak RSS (GiB) |"
        ),
    ]
    for row in result["sizes"]:
        if "failed" in row:
            lines.append(
                f"| {row['orders']:,} | {row['impressions']:,} | failed: {row['failed']} | | | | | |"
            )
            continue
        lines.append(
            f"| {row['orders']:,} | {row['impressions']:,} | {row['interactions']:,} | {row['edges']:,} | "
            f"{row['conversions_attributed']:,} | {row['build_s']:.1f} | {row['inputs_gib']:.2f} | "
            f"{row['peak_rss_gib']:.2f} |"
        )
    return lines


def render_scale(name: str, result: dict) -> list[str]:
    """bench scale: each size's stage seconds, total and peak memory; a skipped size with its
    reason; the time exponent and BLADE's epoch against GraphSAGE's at the largest size run."""
    config = result.get("config", {})
    lines = [
        "The pipeline's cores on the simulated store at growing catalogue sizes "
        f"({config.get('purchases_per_product', '?'):g} purchases and "
        f"{config.get('impressions_per_product', '?'):g} impressions per product), each size in a "
        "process of its own: *peak RSS* is that process's. *total* sums "
        + ", ".join(f"`{k}`" for k in config.get("stage_keys_in_total", []))
        + "; top-K for every product is extrapolated from "
        f"{config.get('topk_sample_sources', '?')} sampled sources.\n",
        *_table(
            "| products | edges | "
            + " | ".join(f"{label} (s)" for _, label in figures.SCALE_STAGES)
            + " | total (s) | top-K all (s) | peak RSS (GiB) |"
        ),
    ]
    for row in result.get("sizes", []):
        if row.get("skipped"):
            cells = " | ".join([f"skipped: {row['skipped']}"] + [""] * (len(figures.SCALE_STAGES) + 3))
            lines.append(f"| {row['n_products']:,} | {cells} |")
            continue
        stages = " | ".join(f"{row[key]:.1f}" for key, _ in figures.SCALE_STAGES)
        lines.append(
            f"| {row['n_products']:,} | {row['n_edges']:,} | {stages} | {row['total_s']:.1f} | "
            f"{row['topk_all_s_extrapolated']:.1f} | {row['peak_rss_gib']:.2f} |"
        )
    figures_ = (
        ("time_exponent", "slope of log total against log edges (goal ≤ 1.1: near-linear)"),
        ("blade_vs_sage_epoch_ratio", "one BLADE epoch over one GraphSAGE epoch, same loop (goal ≤ 1.5)"),
        ("sampler_edges_per_s", "message edges per second of BLADE's neighbour sampler"),
    )
    lines += ["", *_table("| figure | value | what |")]
    for key, what in figures_:
        value = result.get(key)
        lines.append(f"| `{key}` | {_cell(value if value is None else round(value, 3))} | {what} |")
    return lines


def render_model(name: str, result: dict) -> list[str]:
    """bench model: each conversion model's test AUC, PR-AUC and NLL against the simulator's
    eventual labels (mean ± std over seeds), BLADE's paired AUC lead over each with its CI,
    and the oracle rows (the truth's own probabilities: a ceiling, not a model)."""
    gaps = result.get("paired_auc_gap_vs_blade", {})
    methods = [k for k, v in result.items() if isinstance(v, dict) and "auc" in v and "std" in v]
    lines = [
        f"Conversions of the test period's {result.get('test_impressions', 0):,} impressions, "
        "scored against the simulator's eventual labels; *BLADE − method* is BLADE's AUC minus "
        "the method's, paired by seed, with its 95% CI (a CI across 0: inside the seed noise).\n",
        *_table("| method | seeds | AUC | PR-AUC | NLL | BLADE − method (AUC) |"),
    ]
    for m in methods:
        row, gap = result[m], gaps.get(m)
        lead = _gap(gap, 1.0, 4)
        cells = " | ".join(
            _mean_std({"mean": row[k], "std": row["std"][k]}, digits=4) for k in ("auc", "pr_auc", "nll")
        )
        lines.append(f"| `{m}` | {row.get('seeds', '')} | {cells} | {lead} |")
    return lines


def _gap(gap: dict | None, scale: float = 100.0, digits: int = 1) -> str:
    """A paired gap ``{"mean", "ci95"}`` as "+1.2 [+0.4, +2.0]" (``scale``: 100 for points)."""
    if gap is None:
        return ""
    low, high = (scale * x for x in gap["ci95"])
    return f"{scale * gap['mean']:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]".replace("-", "−")


def render_linkpred(name: str, result: dict) -> list[str]:
    """bench linkpred: each method's test figures, mean ± std over seeds, then BLADE's paired
    lead over each with its 95% CI (from the run's paired gaps)."""
    methods = figures.linkpred_methods(result)
    paired = result.get("paired") or {}
    seeds = result[methods[0]]["seeds"] if methods else 0
    lines = [
        f"Directed link prediction on the graph and split the command names (by default Cora-ML "
        f"with DirLinkBench's split 0), {seeds} seeds, every trained method tuned on validation "
        "with the same budget. Hits@20 and MRR in points, mean ± std over seeds.\n",
        *_table("| method | Hits@20 | MRR | direction AUC | low-degree Hits@20 |"),
    ]
    for m in methods:
        row = result[m]
        cells = [
            _mean_std({"mean": row[k], "std": row["std"][k]}, *scale)
            for k, scale in (
                ("hits@20", (100.0, 1)),
                ("mrr", (100.0, 1)),
                ("direction_auc", (1.0, 3)),
                ("lowdeg_hits@20", (100.0, 1)),
            )
        ]
        lines.append(f"| `{m}` | {' | '.join(cells)} |")
    compared = [m for m in methods if m in (paired.get("hits@20") or {})]
    if compared:
        lines += [
            "",
            "BLADE's figure minus each method's, paired by seed, with its 95% CI (a CI across 0: "
            "inside the seed noise):\n",
            *_table("| BLADE − | Hits@20 | MRR | direction AUC |"),
        ]
        for m in compared:
            gaps = [_gap(paired[k].get(m)) for k in ("hits@20", "mrr")]
            gaps.append(_gap((paired.get("direction_auc") or {}).get(m), 1.0, 3))
            lines.append(f"| `{m}` | {' | '.join(gaps)} |")
    return lines


METRICS_DELAY = ("auc", "nll", "pr_auc", "ece")  # the delay bench's figures, in its table's order


def render_delay(name: str, result: dict) -> list[str]:
    """bench delay: each weighting's test figures against the simulator's eventual labels, its
    RI, the served weighting's paired NLL lead, and how well each delay model predicts the
    training negatives that did convert later."""
    data, naive = result["data"], result["naive"]
    beyond = {m: figures.delay_cost_beyond_noise(result, m) for m in ("auc", "nll")}
    methods = [m for m in figures.DELAY_METHODS if m in result]
    lines = [
        "The simulated store of the params file the command names (params.yaml by default), "
        f"{naive['seeds']} training seeds. Trained on "
        f"{data['train_impressions']:,} impressions up to the snapshot, "
        f"{data['share_of_positives_unseen']:.1%} of whose eventual conversions had not happened by "
        f"then; scored on {data['test_impressions']:,} impressions of the days after it against their "
        f"eventual labels (the simulator's truth). Oracle − naive AUC per seed "
        f"{result['gap_auc']:+.4f} ± {result['gap_auc_std']:.4f}: "
        + ("beyond" if beyond["auc"] else "inside")
        + " the seed noise. RI is the share of the naive-to-oracle gap a weighting closes; "
        "*importance − method* is the served weighting's NLL minus the method's, paired by seed, "
        "with its 95% CI (negative: importance is better).\n",
        *_table("| weighting | AUC | NLL | PR-AUC | ECE | RI-AUC | RI-NLL | importance − method (NLL) |"),
    ]
    nll_gaps = result["paired_vs_importance"]["nll"]
    for m in methods:
        row = result[m]
        cells = " | ".join(_mean_std({"mean": row[k], "std": row["std"][k]}, digits=4) for k in METRICS_DELAY)
        ri = [_ri_cell(result[f"ri_{k}"].get(m), beyond[k]) if m != "oracle" else "" for k in ("auc", "nll")]
        lines.append(f"| `{m}` | {cells} | {ri[0]} | {ri[1]} | {_gap(nll_gaps.get(m), 1.0, 5)} |")
    flips = result.get("flip_scores") or {}
    if flips:
        lines += [
            "",
            "Each delay model's probability that a training negative converts later, against the "
            "negatives that did (the simulator's truth):\n",
            *_table(
                "| delay model of | AUC | NLL | estimated flips | true flips | AUC on carted negatives |"
            ),
        ]
        for m, score in flips.items():
            negatives, carted = score["negatives"], score["carted_negatives"]
            lines.append(
                f"| `{m}` | {negatives['auc']:.3f} | {negatives['nll']:.4f} | "
                f"{negatives['estimated_flips']:,.0f} | {negatives['flips']:,} | {carted['auc']:.3f} |"
            )
    sweep = result.get("sweep") or {}
    if sweep:
        lines += ["", *_table("| regime | oracle − naive AUC | importance RI-AUC | importance RI-NLL |")]
        for regime, figures_ in sweep.items():
            ri = [_ri_cell(figures_[f"ri_{k}"].get("importance"), True) for k in ("auc", "nll")]
            gap = f"{figures_['gap_auc']:+.4f} ± {figures_['gap_auc_std']:.4f}"
            lines.append(f"| {regime.replace('_', ' ')} | {gap} | {ri[0]} | {ri[1]} |")
    return lines


def render_thresholds(name: str, result: dict) -> list[str]:
    """bench thresholds: per uncertainty estimator, how well its uncertainty marks the model's
    errors, and per precision target the recall gain of per-bucket thresholds over one."""
    estimators = figures.threshold_estimators(result)
    lines = [
        f"The simulated store of the params file the command names (params.yaml by default), "
        f"{result['seeds']} training seeds. Thresholds are "
        "fitted on the calibration split's matured rows and judged on "
        f"{result['test_impressions']:,} impressions after the snapshot against their eventual "
        "labels. The uncertainty's coefficient at equal score and its rank correlation with the "
        "size of the score's true logit error are means over seeds with their 95% CI. "
        "`oracle_error` is a reference, not an estimator: the true size of the error as its "
        "uncertainty.\n",
        *_table("| estimator | uncertainty coefficient at equal score | rank correlation with the error |"),
    ]
    for m in estimators:
        coef, rho = result["coefficient"].get(m), result["error_rho"].get(m)
        cells = [
            "" if f is None else _gap({"mean": f["mean"], "ci95": f["ci95_over_seeds"]}, 1.0, 3)
            for f in (coef, rho)
        ]
        lines.append(f"| `{m}` | {cells[0]} | {cells[1]} |")
    lines += [
        "",
        "Recall of per-bucket thresholds over one threshold − 1 at each precision target (a "
        "multiple of the fit rows' positive rate), mean over seeds with its t-based 95% CI; "
        "*infeasible*: the target was out of reach on the fit rows in some seed.\n",
        *_table("| target × positive rate | " + " | ".join(f"`{m}`" for m in estimators) + " |"),
    ]
    for i, row in enumerate(result[estimators[0]] if estimators else []):
        cells = []
        for m in estimators:
            r = result[m][i]
            gain = _gap({"mean": r["gain"], "ci95": [r["gain_ci_low"], r["gain_ci_high"]]}, 100.0, 1)
            cells.append(f"{gain} %" + ("" if r["feasible"] else " (infeasible)"))
        lines.append(f"| {row['target_lift']:g} | {' | '.join(cells)} |")
    return lines


def render_stack_check(name: str, result: dict) -> list[str]:
    """``make stack-check``: the team stack built, run and torn down, step by step, with the
    training DAG's tasks as Airflow timed them on a Celery worker."""
    verdict = f"failed: {result['failed']}" if result.get("failed") else "passed"
    lines = [
        f"The docker compose stack end to end ({verdict}; project image "
        f"{_cell(result.get('image_size_gib'))} GiB). Peak memory is the check's own "
        "processes, not the containers'.\n",
        *_table("| step | seconds |"),
    ]
    lines += [f"| {_cell(step)} | {_cell(seconds)} |" for step, seconds in result.get("steps_s", {}).items()]
    lines.append(f"| **in all** | {_cell(result.get('total_s'))} |")
    tasks = result.get("training_tasks_s") or {}
    if tasks:
        lines += ["", *_table("| training task (Celery) | seconds |")]
        lines += [f"| `{task}` | {_cell(seconds)} |" for task, seconds in tasks.items()]
    return lines


_METRIC_NAMES = {"hits_at_20": "Hits@20", "mrr": "MRR", "direction_auc": "direction AUC"}


def _figure_value(value: Any) -> Any:
    """A leaf of a result file as one cell: a short list of scalars joined, a longer one counted."""
    if not isinstance(value, list):
        return value
    if all(isinstance(v, (int, float, str, bool)) or v is None for v in value) and len(value) <= 8:
        return ", ".join(_cell(v) for v in value)
    return f"{len(value)} entries"


def render_generic(name: str, result: dict) -> list[str]:
    """Any result file: its scalar figures, dotted, in file order."""
    scalars = {k: v for k, v in result.items() if k not in PROVENANCE}
    figures = [(k, _figure_value(v)) for k, v in yaml_io.dotted_leaves(scalars)]
    lines = _table("| figure | value |")
    for key, value in figures[:MAX_GENERIC_ROWS]:
        lines.append(f"| `{key}` | {_cell(value)} |")
    if len(figures) > MAX_GENERIC_ROWS:
        lines.append(f"| … | {len(figures) - MAX_GENERIC_ROWS} more in the file |")
    return lines


def _store_line(result: dict) -> str:
    data = result.get("data", {})
    return (
        f"Real store `{data.get('store')}` (presets/{data.get('store')}.yaml), snapshot "
        f"{data.get('snapshot')}, exposures **{data.get('exposures')}** from its orders "
        f"(next-purchase prediction, not the effect of showing), {result.get('seeds')} seeds.\n"
    )


def _mean_std(figure: dict, scale: float = 1.0, digits: int = 3) -> str:
    return f"{figure['mean'] * scale:.{digits}f} ± {figure['std'] * scale:.{digits}f}"


def render_real_ranking(name: str, result: dict) -> list[str]:
    """A real store's next purchases after its snapshot, ranked by each method."""
    data = result["data"]
    metrics = ("hits@10", "hits@20", "ndcg@10", "mrr", "direction")
    lines = [
        _store_line(result) + f"\n{data['test_pairs']:,} test pairs (u, v): v bought after u within "
        f"{data['horizon_days']} days after the snapshot, ranked among {data['products']:,} products. "
        "Mean ± std over seeds.\n",
        *_table("| method | " + " | ".join(metrics) + " |"),
    ]
    for method, figs in result["methods"].items():
        lines.append(f"| `{method}` | " + " | ".join(_mean_std(figs[m]) for m in metrics) + " |")
    names = {"blade": "BLADE", "served": "The served order"}
    for method in ("blade", "served"):
        paired = result[f"paired_{method}_minus"]
        over_pairs = result[f"pairs_{method}_minus_best"]
        lines += ["", f"{names[method]} minus the best baseline of each figure:\n"]
        lines += _table(
            "| figure | best baseline | difference | 95% CI over seeds | 95% CI over test pairs |"
        )
        for metric, pairs in over_pairs.items():
            baseline = pairs["baseline"]
            gap = paired[metric][baseline]
            low, high = gap["ci95"]
            lines.append(
                f"| {metric} | `{baseline}` | {gap['mean']:+.4f} | [{low:+.4f}, {high:+.4f}] | "
                f"[{pairs['ci95'][0]:+.4f}, {pairs['ci95'][1]:+.4f}] |"
            )
        below = result[f"{method}_below_best_baseline_on"]
        verdict = f"**yes**, on {', '.join(below)}" if below else "**no**"
        lines += ["", f"{names[method]} below the best baseline beyond its CI (over test pairs): {verdict}."]
    served = result["served_ranking_per_seed"]
    counted = ", ".join(f"`{name}` {served.count(name)}" for name in dict.fromkeys(served))
    priors = ", ".join(f"{p:g}" for p in result["served_prior_per_seed"])
    lines += [
        "",
        "The served order is what the pipeline would serve with each seed's model: calibrate's "
        "out-of-fold choice on the calibration split's next purchases before the snapshot "
        f"(seeds: {counted}; co-purchase's popularity prior, in pseudo-counts: {priors}).",
    ]
    return lines


def render_real_delay(name: str, result: dict) -> list[str]:
    """Delay correction on a real store: each weighting against labels matured by the log's end."""
    data = result["data"]
    lines = [
        _store_line(result) + f"\nTraining exposures up to the snapshot: {data['train_impressions']:,}; "
        f"{data['share_of_positives_unseen_at_snapshot']:.1%} of their conversions had not happened "
        f"by the snapshot. Scored on {data['test_impressions']:,} exposures after it whose labels "
        "matured by the log's end (the real oracle).\n",
        *_table("| weighting | AUC | NLL | RI-AUC | RI-NLL |"),
    ]
    shown = {m: figures.delay_cost_beyond_noise(result, m) for m in ("auc", "nll")}
    for method in ("naive", "wait", "importance", "importance_ipw", "oracle"):
        if method not in result:
            continue
        row = result[method]
        ri = [_ri_cell(result[f"ri_{m}"].get(method), shown[m]) for m in ("auc", "nll")]
        lines.append(
            f"| `{method}` | {row['auc']:.4f} ± {row['std']['auc']:.4f} | {row['nll']:.4f} ± "
            f"{row['std']['nll']:.4f} | {ri[0]} | {ri[1]} |"
        )
    inside = [m.upper() for m, beyond in shown.items() if not beyond]
    if inside:
        gaps = ", ".join(
            f"{m} {result['oracle'][m.lower()] - result['naive'][m.lower()]:+.5f}" for m in inside
        )
        lines.append(
            f"\nRI ({' and '.join(m.upper() for m in inside)}): none, since oracle − naive ({gaps}) "
            "is inside the seed-to-seed spread: on this store's delays there was no delay cost to recover."
        )
    lines += ["", "Served weighting (`importance`) minus `naive`, paired over seeds:\n"]
    lines += _table("| figure | difference | 95% CI |")
    for metric, gap in result["paired_importance_minus_naive"].items():
        low, high = gap["ci95"]
        lines.append(f"| {metric} | {gap['mean']:+.5f} | [{low:+.5f}, {high:+.5f}] |")
    return lines


def _ri_cell(share: float | None, beyond_noise: bool) -> str:
    if not beyond_noise:
        return "none"
    return "not recorded" if share is None else f"{share + 0.0:.3f}"  # + 0.0: no "-0.000"


def render_real_thresholds(name: str, result: dict) -> list[str]:
    """Per-bucket against one threshold on a real store, out of sample."""
    data = result["data"]
    rows = next(v for k, v in result.items() if isinstance(v, list))
    lines = [
        _store_line(result)
        + f"\nJudged on {data['test_impressions']:,} exposures after the snapshot with matured labels "
        f"({data['test_positives']:,} converted). Targets are multiples of the fit rows' positive rate.\n",
        *_table("| target | feasible | recall: single | per bucket (served) | gain [95% CI] | kept |"),
    ]
    for row in rows:
        low, high = row["gain_ci_low"], row["gain_ci_high"]
        gain = "n/a" if row["gain"] is None else f"{row['gain']:+.3f}"
        ci = "" if low is None else f" [{low:+.3f}, {high:+.3f}]"
        lines.append(
            f"| {row['target']:.3f} | {'yes' if row['feasible'] else 'no'} | {row['single_recall']:.3f} | "
            f"{row['bucket_recall']:.3f} | {gain}{ci} | {row['kept']:.0%} |"
        )
    below = result["served_below_single_beyond_ci"]
    verdict = "yes" if below else "no"
    lines += ["", f"Served per-bucket policy below one threshold beyond its CI: **{verdict}**."]
    return lines


def render_real_monitor(name: str, result: dict) -> list[str]:
    """The monitor on a real store's months after its snapshot."""
    data = result["data"]
    lines = [
        f"Real store `{data['store']}`: the champion (v{result['model_version']}) of its preset's "
        f"pipeline run, monitoring the months after the snapshot {data['snapshot']} on exposures "
        f"**{data['exposures']}** from its orders. Positivity is volume-weighted over each month's "
        "windows and uncertainty buckets; an alert is one window and bucket whose estimate's CI "
        "leaves the tolerance around the predicted rate.\n",
        *_table("| month | windows | exposures | predicted | corrected | naive | alerts | naive alerts |"),
    ]
    for row in result["months"]:
        lines.append(
            f"| {row['month']} | {row['windows']} | {row['exposures']:,} | {row['predicted']:.2%} | "
            f"{row['estimated']:.2%} | {row['naive']:.2%} | {row['alerts']} | {row['naive_alerts']} |"
        )
    lines += ["", f"In all: {result['alerts']} alerts (naive positivity: {result['naive_alerts']})."]
    return lines


def render_preset(name: str, result: dict) -> list[str]:
    """The whole pipeline on a preset's store: what it read and cleaned, trained, released, saw."""
    data, train, deploy, monitor = result["data"], result["train"], result["deploy"], result["monitor"]
    test = deploy.get("test") or {}
    lines = [
        f"`make run-preset PRESET={result['preset']}` as one recorded run: the wall time and peak "
        "memory below are the whole pipeline's, the peak being its largest single process. One "
        "training seed: the gate's figures are this run's, not a mean.\n",
        *_table("| figure | value |"),
        f"| snapshot | {data['snapshot']} |",
        f"| exposures | {data['exposures']} |",
        f"| products, co-purchase edges | {data['products']:,}, {data['edges']:,} |",
        "| exposures train / calib / test | "
        + " / ".join(f"{data['impressions'][s]:,}" for s in ("train", "calib", "test"))
        + " |",
        f"| training | {train['train_seconds']:.0f} s, {train['epochs_run']} epochs, "
        f"{train['peak_memory_mb']:,.0f} MB |",
        f"| gate | {_cell(deploy['action'])} |",
    ]
    if test:
        lines.append(
            f"| test AUC, recall, precision, ECE | {test['auc']:.3f}, {test['recall']:.3f}, "
            f"{test['precision']:.3f}, {test['ece']:.4f} ({int(test['rows']):,} rows) |"
        )
    lines.append(
        f"| monitor | {monitor['windows']} windows, {monitor['alerts']} alerts "
        f"(naive positivity: {monitor['naive_alerts']}) |"
    )
    dropped = {k: n for k, n in data["cleaning"].items() if k.endswith("_dropped") and n}
    if dropped:
        lines += [
            "",
            "Lines ingest dropped, each counted: " + ", ".join(f"`{k}` {n:,}" for k, n in dropped.items()),
        ]
    return lines


# Result files of one kind per real store: the name's prefix chooses the layout.
KNOWN_PREFIXES: dict[str, tuple[str, Callable[[str, dict], list[str]]]] = {
    "real_ranking_": ("Recommendation quality on a real store's next purchases", render_real_ranking),
    "real_delay_": ("Delay correction on a real store's delays", render_real_delay),
    "real_thresholds_": ("Per-bucket thresholds on a real store", render_real_thresholds),
    "real_monitor_": ("Monitoring a real store's months", render_real_monitor),
    "preset_": ("The whole pipeline on a store", render_preset),
}


def layout(name: str) -> tuple[str, Callable[[str, dict], list[str]]]:
    """The title and renderer of result file ``name``."""
    if name in KNOWN:
        return KNOWN[name]
    for prefix, (title, renderer) in KNOWN_PREFIXES.items():
        if name.startswith(prefix):
            return f"{title}: {name.removeprefix(prefix).replace('_', ' ')}", renderer
    return name.replace("_", " "), render_generic


# Result files with a layout of their own; every other file is rendered by render_generic.
KNOWN: dict[str, tuple[str, Callable[[str, dict], list[str]]]] = {
    "engines": ("The data stages on pandas and on Spark at growing sizes", render_engines),
    "daily_loop": ("The daily loop: next-day candidates against the champion", render_daily_loop),
    "dag": ("Airflow's cost: the training DAG against dvc repro of its stages (tiny store)", render_generic),
    "monitor": ("The monitor on one simulated month of traffic with an injected drift", render_generic),
    "events_scale": ("Graph and labels from raw logs at scale", render_events_scale),
    "scale": ("The pipeline's cores at growing catalogue sizes", render_scale),
    "model": ("The conversion model against the simulator's eventual labels", render_model),
    "linkpred": ("BLADE against link-prediction baselines on Cora-ML", render_linkpred),
    "delay": ("Delay correction against the simulator's eventual labels", render_delay),
    "thresholds": ("Per-bucket thresholds by uncertainty estimator, simulated store", render_thresholds),
    "external_dirlinkbench_blade": (
        "BLADE on an independent directed citation graph",
        render_external_linkpred,
    ),
    "stack_check": ("The team stack end to end (make stack-check)", render_stack_check),
}


def build(root: Path) -> tuple[str, list[figures.Picture]]:
    """The page and its pictures, from the result files under ``root``."""
    results = load_results(root)
    lines = [
        "<!-- Generated by `nextbuy bench report` from benchmarks/results/*.json: do not edit by hand. -->\n",
        "# Benchmark results\n",
        "Every figure on this page is read from a committed result file under "
        "`benchmarks/results/`, which records the command, commit, date, machine, wall time and "
        "peak memory of the run. [Benchmarks](index.md) says how to add one. "
        "[The glossary](../reference/glossary.md) defines every figure.\n",
    ]
    if not results:
        lines.append("No result files are committed yet.\n")
        return "\n".join(lines), []
    lines.append("\n".join(_table("| result file | what | date | machine |")))
    for name, result in results.items():
        title = layout(name)[0]
        lines.append(
            f"| [`{name}.json`](#{name.replace('_', '-')}) | {_cell(title)} | {_cell(result.get('date'))} "
            f"| {_cell(result.get('machine'))} |"
        )
    drawn: list[figures.Picture] = []
    for name, result in results.items():
        title, renderer = layout(name)
        lines.append(f"\n## {title} {{#{name.replace('_', '-')}}}\n")
        lines.append(f"From `benchmarks/results/{name}.json`.\n")
        for picture in figures.pictures(name, result):
            lines.append(f"![{picture.alt}]({figures.IMAGES}/{picture.file})\n")
            drawn.append(picture)
        lines += renderer(name, result)
        lines.append("")
        lines += provenance(result)
    return "\n".join(lines).rstrip() + "\n", drawn


def render(root: Path) -> str:
    return build(root)[0]


def stale(root: Path) -> list[Path]:
    """The page and pictures that differ from what the result files render (or are missing)."""
    text, drawn = build(root)
    folder = (root / PAGE).parent / figures.IMAGES
    files = {root / PAGE: text, **{folder / p.file: p.svg for p in drawn}}
    return [path for path, content in files.items() if not path.exists() or path.read_text() != content]


def write(root: Path) -> bool:
    """Write the page and its pictures under ``root`` (pictures no result file draws any more
    go); True when anything changed."""
    text, drawn = build(root)
    folder = (root / PAGE).parent / figures.IMAGES
    files = {root / PAGE: text, **{folder / p.file: p.svg for p in drawn}}
    changed = False
    for path, content in files.items():
        if path.exists() and path.read_text() == content:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        changed = True
    for old in folder.glob("*.svg") if folder.is_dir() else ():
        if old not in files:
            old.unlink()
            changed = True
    return changed
