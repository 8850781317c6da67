"""`nextbuy bench engines`: the data stages on the pandas and the Spark engine at growing sizes.

Per size (default 10^6, 10^7 and 10^8 impressions, as many traffic impressions, products and
co-purchase edges in proportion: ``engines_data``), a store is written, and the same history as
a store's raw logs, then each stage (``ingest`` of those logs, ``ingest.source: events``;
``label_delay``; ``monitor``'s scoring and per-window x per-bucket table; ``batch_topk``, the
champion's top-20 of every product with params.yaml's ``deploy.retrieval``) runs on each engine
in a child process of its own (``engines_core``). While it runs, the RSS of every process of the
child's tree (the stage's Python, Spark's JVM, its Python workers) is sampled every
``POLL_S``; the result keeps each run's seconds, the peak RSS of its largest process, of the JVM,
and of the whole tree at once. A run whose tree passes ``--cap-gib`` is stopped and recorded as
not fitting (``"exceeded"``); a larger size is then not tried on that engine.

Across sizes, per engine and stage: the least-squares slope of log seconds and of log peak RSS
against log impressions (growth exponents). The sizing table (``SIZING_STAGES``): impressions per
executor-hour (one core) measured on the largest Spark run, and the executors a day of 10^9
impressions needs to be ingested, weighted and monitored in one hour.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import yaml
from rich.console import Console
from rich.table import Table

from nextbuy.bench import engines_data
from nextbuy.bench.engines_core import RESULT_PREFIX
from nextbuy.config import RetrievalConfig, read_params

DEFAULT_SIZES = (1_000_000, 10_000_000, 100_000_000)
STAGES = ("ingest", "label_delay", "monitor", "batch_topk")
# What a day of impressions costs: its logs ingested (read, attributed, split), its impressions
# weighted and monitored; batch-topk's cost follows the catalogue, not the day's traffic. Ingest
# counts although its reader (parse, check and code the logs) stays in the stage's one process on
# either engine: on Spark only the co-purchase pairs and the attribution spread over executors,
# so executors bought for ingest are an optimistic figure.
SIZING_STAGES = ("ingest", "label_delay", "monitor")
ENGINES = ("spark", "pandas")
POLL_S = 0.5
GIB = 2**30
GOAL_PROCESS_GIB = 8.0  # the Spark engine's goal: no process above this at the largest size
DAY_IMPRESSIONS = 10**9
# What the bench's stores change in params.yaml: the delay fit on a fixed sample (its cost does
# not grow with the log), Spark on this machine's two cores with a 4 GiB heap.
FIT_SAMPLE_ROWS = 200_000
SPARK_MASTER = "local[2]"
SPARK_CONF = {"spark.driver.memory": "4g", "spark.sql.shuffle.partitions": "8"}


def parse_sizes(text: str) -> list[int]:
    """Impressions per store from ``1000000,1e7``; a ValueError naming the bad entry."""
    sizes = []
    for entry in (s.strip() for s in text.split(",")):
        try:
            sizes.append(int(float(entry)))
        except ValueError:
            raise ValueError(f"size {entry!r} is not a number of impressions") from None
    if not sizes or min(sizes) < 1000:
        raise ValueError(f"sizes {text!r}: give numbers of impressions of at least 1000")
    return sizes


def _role(proc: psutil.Process) -> str:
    name = proc.name()
    if name == "java":
        return "jvm"
    return "python"


def measured(cmd: list[str], cap_bytes: int, log_path: Path) -> dict:
    """Run ``cmd`` (its own process group), sampling its tree's RSS; stopped past ``cap_bytes``."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        root = psutil.Process(proc.pid)
        peak = {"process": 0, "jvm": 0, "tree": 0}
        exceeded = False
        start = time.perf_counter()
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                rss = {p.pid: (p.memory_info().rss, _role(p)) for p in tree}
            except psutil.Error:
                time.sleep(POLL_S)
                continue
            total = sum(r for r, _ in rss.values())
            peak["tree"] = max(peak["tree"], total)
            peak["process"] = max([peak["process"], *(r for r, _ in rss.values())])
            peak["jvm"] = max([peak["jvm"], *(r for r, role in rss.values() if role == "jvm")])
            if total > cap_bytes:
                exceeded = True
                os.killpg(proc.pid, 9)
                proc.wait()
                break
            time.sleep(POLL_S)
        wall = time.perf_counter() - start
    text = log_path.read_text(errors="replace")
    lines = [ln for ln in text.splitlines() if ln.startswith(RESULT_PREFIX)]
    out = {
        "wall_s": round(wall, 1),
        "peak_process_gib": round(peak["process"] / GIB, 2),
        "peak_jvm_gib": round(peak["jvm"] / GIB, 2),
        "peak_tree_gib": round(peak["tree"] / GIB, 2),
    }
    if exceeded:
        return out | {
            "exceeded": f"the process tree passed {cap_bytes / GIB:.0f} GiB after {wall:.0f} s: stopped"
        }
    if proc.returncode != 0 or not lines:
        return out | {"failed": f"exit {proc.returncode}: {text[-800:]}"}
    got = json.loads(lines[-1][len(RESULT_PREFIX) :])
    return out | {"stage_s": round(got["seconds"], 1), "rows": got["rows"]}


def _store(root: Path, n: int) -> dict:
    """The store of ``n`` impressions and its raw logs (with a params.yaml that ingests them), with
    params.yaml's knobs but ``FIT_SAMPLE_ROWS`` and Spark's ``SPARK_MASTER`` and ``SPARK_CONF``."""
    params = read_params(Path("params.yaml"))
    params["label_delay"]["fit_sample_rows"] = FIT_SAMPLE_ROWS
    spark = params["engine"]["spark"]
    params["engine"]["spark"] = spark | {"master": SPARK_MASTER, "conf": spark["conf"] | SPARK_CONF}
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    start = time.perf_counter()
    retrieval = RetrievalConfig.model_validate(params["deploy"]["retrieval"])
    counts = engines_data.write_store(root, n, retrieval=retrieval)
    written = time.perf_counter()
    logs: dict[str, float] = dict(engines_data.write_logs(root / engines_data.LOGS, n))
    (root / engines_data.LOGS / "params.yaml").write_text(yaml.safe_dump(engines_data.logs_params(params)))
    logs["write_s"] = round(time.perf_counter() - written, 1)
    return counts | {"write_s": round(written - start, 1), "logs": logs}


def slope(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 2:
        return None
    return round(float(np.polyfit(np.log(xs), np.log(ys), 1)[0]), 3)


def exponents(runs: list[dict]) -> dict:
    out: dict = {}
    for engine in ENGINES:
        for stage in STAGES:
            done = [r for r in runs if r["engine"] == engine and r["stage"] == stage and "stage_s" in r]
            n = [r["impressions"] for r in done]
            out[f"{engine}.{stage}"] = {
                "time": slope(n, [r["stage_s"] for r in done]),
                "peak_tree_memory": slope(n, [r["peak_tree_gib"] for r in done]),
                "sizes": n,
            }
    return out


def sizing(runs: list[dict], cores: int) -> dict | None:
    """Impressions per executor-hour on the largest Spark size where ``SIZING_STAGES`` ran, and the
    executors (of one core and the largest process measured here) a 10^9-impression day needs
    to be weighted and monitored within an hour."""
    sizes = sorted({r["impressions"] for r in runs if r["engine"] == "spark" and "stage_s" in r})
    for n in reversed(sizes):
        both = [
            r
            for r in runs
            if r["engine"] == "spark"
            and r["impressions"] == n
            and r["stage"] in SIZING_STAGES
            and "stage_s" in r
        ]
        if len(both) == len(SIZING_STAGES):
            seconds = sum(r["stage_s"] for r in both)
            per_hour = n / (seconds * cores) * 3600.0
            return {
                "measured_at_impressions": n,
                "stages": list(SIZING_STAGES),
                "stage_seconds": round(seconds, 1),
                "executor_cores_here": cores,
                "impressions_per_executor_hour": round(per_hour),
                "executors_for_1e9_a_day_in_1_hour": int(np.ceil(DAY_IMPRESSIONS / per_hour)),
                "executors_for_1e9_a_day_in_4_hours": int(np.ceil(DAY_IMPRESSIONS / per_hour / 4)),
                "largest_process_gib": max(r["peak_process_gib"] for r in both),
            }
    return None


def run(out: Path, sizes: str | list[int], cap_gib: float = 16.0, work: Path | None = None) -> dict:
    sizes = parse_sizes(sizes) if isinstance(sizes, str) else sizes
    console = Console()
    runs: list[dict] = []
    stores: dict[int, dict] = {}
    stopped: set[tuple[str, str]] = set()
    with tempfile.TemporaryDirectory(prefix="nextbuy-engines-", dir=work) as tmp:
        for n in sorted(sizes):
            root = Path(tmp) / f"store-{n}"
            stores[n] = _store(root, n)
            console.print(
                f"store of {n:,} impressions written in {stores[n]['write_s']} s, "
                f"its raw logs in {stores[n]['logs']['write_s']} s"
            )
            for stage in STAGES:
                for engine in ENGINES:
                    row = {"impressions": n, "engine": engine, "stage": stage}
                    if (engine, stage) in stopped:
                        runs.append(row | {"skipped": "a smaller size did not fit"})
                        continue
                    cmd = [sys.executable, "-m", "nextbuy.bench.engines_core", str(root), engine, stage]
                    got = measured(cmd, int(cap_gib * GIB), root / f"{engine}-{stage}.log")
                    if "exceeded" in got:
                        stopped.add((engine, stage))
                    runs.append(row | got)
                    console.print(json.dumps(runs[-1]))
            shutil.rmtree(root, ignore_errors=True)
    largest = max(sizes)
    spark_largest = [r for r in runs if r["engine"] == "spark" and r["impressions"] == largest]
    figures = {
        "sizes": sorted(sizes),
        "stores": {str(n): v for n, v in stores.items()},
        "cap_gib": cap_gib,
        "fit_sample_rows": FIT_SAMPLE_ROWS,
        "spark_master": SPARK_MASTER,
        "spark_conf": SPARK_CONF,
        "cpu_cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / GIB, 1),
        "python": platform.python_version(),
        "runs": runs,
        "exponents": exponents(runs),
        "spark_largest_completed": all("stage_s" in r for r in spark_largest)
        and len(spark_largest) == len(STAGES),
        "spark_largest_process_gib": max(
            (r.get("peak_process_gib", 0.0) for r in spark_largest), default=None
        ),
        "goal_process_gib": GOAL_PROCESS_GIB,
        "pandas_first_not_fitting": {
            stage: min(
                (
                    r["impressions"]
                    for r in runs
                    if r["engine"] == "pandas" and r["stage"] == stage and "exceeded" in r
                ),
                default=None,
            )
            for stage in STAGES
        },
        "sizing": sizing(runs, cores=2),
    }
    out.write_text(json.dumps(figures, indent=2) + "\n")
    table = Table(
        "impressions", "engine", "stage", "stage s", "largest process GiB", "JVM GiB", "tree GiB", "note"
    )
    for r in runs:
        note = r.get("exceeded") or r.get("skipped") or (r.get("failed", "")[:40])
        table.add_row(
            f"{r['impressions']:,}",
            r["engine"],
            r["stage"],
            str(r.get("stage_s", "-")),
            str(r.get("peak_process_gib", "-")),
            str(r.get("peak_jvm_gib", "-")),
            str(r.get("peak_tree_gib", "-")),
            note,
        )
    console.print(table)
    return {
        k: figures[k]
        for k in (
            "spark_largest_completed",
            "spark_largest_process_gib",
            "pandas_first_not_fitting",
            "exponents",
        )
    }
