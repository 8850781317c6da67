"""A model card as text, pure: the Markdown body (one section per thing a release knew, then the
matured metrics; a value nobody recorded reads "unknown"), the YAML front matter in the Hugging
Face model-card layout (``model-index`` / ``datasets`` / ``metrics``, so tools that read cards
can), and the version's Description that fits MLflow's column."""

from __future__ import annotations

import yaml

from nextbuy.domain.replay import REPLAYED_NOTE
from nextbuy.model_card.record import Card, flagged, snapshot_id

UNKNOWN = "unknown"
# MLflow's SQL stores keep a version's description in a 5,000-character column.
DESCRIPTION_LIMIT = 5000
# The card's section of a version's Description: nextbuy rewrites what lies between these
# markers; what people write above or below them is theirs and kept (HTML comments: MLflow's
# Markdown view shows neither).
CARD_START = "<!-- nextbuy model card: rewritten by nextbuy; write your notes above or below -->"
CARD_END = "<!-- end of nextbuy model card -->"
RELEASE_METRICS = ("auc", "recall", "precision", "ece")


def _num(x: float | None, digits: int = 3) -> str:
    return UNKNOWN if x is None else f"{x:.{digits}f}"


def _text(x: object | None) -> str:
    return UNKNOWN if x is None or x == "" else str(x)


def _when(x: str | None) -> str:
    """A timestamp to the second (the record keeps it whole)."""
    return UNKNOWN if not x else x[:19]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _verdict(card: Card) -> str:
    if card.gate is None:
        return f"gate verdict {UNKNOWN}"
    return "passed the release gate" if card.gate.passed else "refused by the release gate"


def _head(card: Card) -> list[str]:
    made = "by deploy at registration" if card.generated == "deploy" else f"by {card.generated}"
    lines = [f"# {card.model_name} v{card.version}", ""]
    if flagged(card):
        lines += [f"> **FLAGGED**: matured metrics below the gate's floors ({'; '.join(flagged(card))})", ""]
    return [
        *lines,
        f"{_verdict(card).capitalize()}; registered {_text(card.registered_at)}; card generated {made}.",
        "",
    ]


def _maturity(card: Card) -> str:
    if card.label_maturity is None:
        return f"**Label maturity at training**: {UNKNOWN}."
    return (
        f"**Label maturity at training**: {card.label_maturity:.1%} of the training impressions' eventual "
        "conversions were still unseen at the snapshot (the delay model's expectation)."
    )


def _data(card: Card) -> list[str]:
    s = card.snapshot
    if s is None:
        return ["## Data", "", f"Snapshot {UNKNOWN}.", "", _maturity(card), ""]
    rows = " / ".join(f"{k} {v:,}" for k, v in (s.rows or {}).items()) or UNKNOWN
    table = _table(
        ["", ""],
        [
            ["dataset", _text(snapshot_id(card))],
            ["snapshot", _text(s.snapshot)],
            ["window (first → last impression)", f"{_when(s.first_shown_at)} → {_when(s.last_shown_at)}"],
            ["impressions", rows],
            ["products", _text(s.products)],
            ["ingested data (DVC md5)", f"`{_text(s.ingested_md5)}`"],
            ["weighted data (DVC md5)", f"`{_text(s.weighted_md5)}`"],
            ["exposures", _text(s.exposures)],
        ],
    )
    replayed = [f"**Replayed exposures**: {REPLAYED_NOTE}.", ""] if s.exposures == "replayed" else []
    return ["## Data", "", *table, "", *replayed, _maturity(card), ""]


def _code(card: Card) -> list[str]:
    lines = [
        "## Code and params",
        "",
        f"Commit `{_text(card.git_commit)}`; "
        f"Airflow run {_text(card.airflow_run_id or 'none (run outside Airflow)')}; "
        f"MLflow run `{_text(card.run_id)}`.",
        "",
    ]
    if card.params_diff is None:
        against = f" v{card.params_against}" if card.params_against else ""
        return [*lines, f"Params changed since the previous champion{against}: {UNKNOWN}.", ""]
    if card.params_against is None:
        return [*lines, "No previous champion: nothing to compare the params with.", ""]
    if not card.params_diff:
        return [*lines, f"Params: the same as champion v{card.params_against}.", ""]
    rows = [[f"`{c.key}`", _text(c.before), _text(c.after)] for c in card.params_diff]
    return [
        *lines,
        f"Params that differ from champion v{card.params_against}:",
        "",
        *_table(["param", f"v{card.params_against}", f"v{card.version}"], rows),
        "",
    ]


def _gate(card: Card) -> list[str]:
    g = card.gate
    if g is None:
        return ["## Release gate", "", f"Verdict {UNKNOWN}.", ""]
    floors = g.floors or {}
    bound = {
        "auc": f">= {floors['min_auc']}" if "min_auc" in floors else "",
        "recall": f">= {floors['min_recall']}" if "min_recall" in floors else "",
        "precision": f">= {floors['min_precision']}" if "min_precision" in floors else "",
        "ece": f"<= {floors['max_calibration_error']}" if "max_calibration_error" in floors else "",
    }
    level = f"{g.confidence:.0%} " if g.confidence is not None else ""
    rows = []
    for metric in ("auc", "recall", "precision", "ece"):
        ci = (g.comparison or {}).get(metric)
        diff = f"{ci['diff']:+.3f} [{ci['lo']:+.3f}, {ci['hi']:+.3f}]" if ci else "not compared"
        champ = _num((g.champion or {}).get(metric)) if g.champion else "—"
        rows.append([metric, _num(g.candidate.get(metric)), champ, diff, bound[metric] or "—"])
    against = f"champion v{g.champion_version}" if g.champion_version else "no champion"
    lines = [
        "## Release gate",
        "",
        f"**{'PASSED' if g.passed else 'REFUSED'}** against {against} on the test split "
        f"(delay-corrected expected labels, {_rows(g.candidate.get('rows'))} rows).",
        "",
        *_table(["metric", "this version", "champion", f"difference, {level}CI", "floor"], rows),
        "",
    ]
    if g.not_comparable_reason:
        lines += [f"Champion not compared: {g.not_comparable_reason}.", ""]
    return lines + [f"- {r}" for r in g.reasons] + ([""] if g.reasons else [])


def _rows(x: float | None) -> str:
    return UNKNOWN if x is None else f"{int(x):,}"


def _serving(card: Card) -> list[str]:
    buckets = sorted(set(card.ece_by_bucket or {}) | {str(i) for i in range(len(_served(card)))}, key=int)
    rows = [[b, _num((card.ece_by_bucket or {}).get(b)), _threshold(card, int(b))] for b in buckets]
    won = card.thresholds.per_bucket_won if card.thresholds else None
    verdict = {True: "yes: kept per bucket", False: "no: one threshold for every bucket", None: UNKNOWN}[won]
    return [
        "## Calibration and thresholds",
        "",
        *(
            _table(["uncertainty bucket", "ECE (test, calibrated)", "threshold served"], rows)
            if rows
            else [f"Per-bucket calibration and thresholds: {UNKNOWN}."]
        ),
        "",
        f"Per-bucket thresholds beat one threshold out of fold: {verdict}.",
        "",
    ]


ORDER_NAMES = {
    "model": "the model's (accepted first, then calibrated probability)",
    "co_purchase": "co-purchase counts u -> v (popularity breaking ties)",
    "popularity": "popularity",
}


def _top_k_order(card: Card) -> list[str]:
    order = card.top_k_order
    if order is None:
        return [
            "## Top-K order",
            "",
            f"Top-K order: {UNKNOWN} (the model's, for versions before the choice).",
            "",
        ]
    rows = [[name.replace("_", "-"), f"{hits:.4f}"] for name, hits in order.hits.items()]
    priors = [[prior, f"{hits:.4f}"] for prior, hits in order.prior_hits.items()]
    return [
        "## Top-K order",
        "",
        f"Served: **{ORDER_NAMES.get(order.served, order.served)}**: {order.reason}.",
        "",
        *(
            [
                f"Hits@{order.k} on the held-out purchases ({order.judged_on}):",
                "",
                *_table(["ranking", f"Hits@{order.k}"], rows),
                "",
            ]
            if rows
            else []
        ),
        *(
            [
                "Co-purchase scores are c(u, v) + prior x v's popularity share; "
                f"the prior served: {order.prior:g} pseudo-counts (co-purchase's Hits@{order.k} above "
                "is cross-fitted over the priors):",
                "",
                *_table(["prior", f"Hits@{order.k}"], priors),
                "",
            ]
            if priors
            else []
        ),
        "Whatever the order, each answer's score, uncertainty, calibrated probability and decision "
        "are the model's.",
        "",
    ]


def _served(card: Card) -> list[float | None]:
    return card.thresholds.served if card.thresholds else []


def _threshold(card: Card, bucket: int) -> str:
    served = _served(card)
    if bucket >= len(served):
        return UNKNOWN
    return "accepts nothing" if served[bucket] is None else f"{served[bucket]:.4f}"


def _cold_and_cost(card: Card) -> list[str]:
    low, t = card.low_degree, card.training or None
    cold = (
        f"{low.rows:,} test rows from {low.sources:,} sources with out-degree <= {low.max_out_degree}: "
        f"AUC {_num(low.auc)}, recall {_num(low.recall)}."
        if low is not None
        else f"Quality on low out-degree sources: {UNKNOWN}."
    )
    seconds = f"{t.seconds:,.1f} s" if t and t.seconds is not None else UNKNOWN
    memory = f"{t.peak_memory_mb:,.0f} MB" if t and t.peak_memory_mb is not None else UNKNOWN
    return [
        "## Cold sources",
        "",
        cold,
        "",
        "## Training cost",
        "",
        f"Training time {seconds}; peak memory {memory} (the train stage's process).",
        "",
    ]


def _matured(card: Card, dropped: int) -> list[str]:
    lines = ["## Metrics as the labels matured", ""]
    if not card.matured:
        return [*lines, "Not re-scored on matured traffic yet (the monitor adds dated rows here).", ""]
    rows = [
        [
            r.checked_at[:10] if r.checked_at.endswith("00:00:00") else _when(r.checked_at),
            f"{r.maturity_days} days",
            f"{r.rows:,}",
            f"{r.conversions:,}",
            f"{_num(r.auc)} ({_num(r.release_auc)})",
            f"{_num(r.recall)} ({_num(r.release_recall)})",
            "BELOW FLOOR: " + "; ".join(r.below_floor) if r.below_floor else "ok",
        ]
        for r in card.matured
    ]
    header = [
        "labels read",
        "maturity",
        "rows",
        "conversions",
        "AUC (at release)",
        "recall (at release)",
        "status",
    ]
    note = [f"{dropped} older rows are in the artifact model_card/README.md.", ""] if dropped else []
    return [*lines, *_table(header, rows), "", *note]


def body(card: Card, dropped: int = 0) -> str:
    """The card's Markdown (no front matter); ``dropped``: older matured rows left out."""
    lines = [
        *_head(card),
        *_data(card),
        *_code(card),
        *_gate(card),
        *_serving(card),
        *_top_k_order(card),
        *_cold_and_cost(card),
        *_matured(card, dropped),
    ]
    if card.unknown:
        lines += ["## Not known", "", *[f"- {u}" for u in card.unknown], ""]
    return "\n".join(lines)


def _hf_metrics(values: dict[str, float | None], label: str) -> list[dict]:
    return [
        {"type": k, "value": round(v, 4), "name": f"{k} ({label})"}
        for k, v in values.items()
        if k in RELEASE_METRICS and v is not None
    ]


def front_matter(card: Card) -> dict:
    """The Hugging Face card metadata: library, tags, datasets, metrics and model-index."""
    dataset = snapshot_id(card) or "unknown snapshot"
    revision = card.snapshot.weighted_md5 if card.snapshot else None
    results = []
    if card.gate is not None:
        results.append(
            {
                "task": {"type": "link-prediction", "name": "next purchase (bought U, recommend V)"},
                "dataset": {
                    "type": "nextbuy-snapshot",
                    "name": dataset,
                    "split": "test",
                    "revision": revision,
                },
                "metrics": _hf_metrics(card.gate.candidate, "release, delay-corrected labels"),
            }
        )
    for row in card.matured:
        values = {"auc": row.auc, "recall": row.recall}
        results.append(
            {
                "task": {"type": "link-prediction", "name": "next purchase (bought U, recommend V)"},
                "dataset": {
                    "type": "nextbuy-traffic",
                    "name": f"traffic up to {row.checked_at}",
                    "split": f"matured {row.maturity_days}d",
                },
                "metrics": _hf_metrics(values, f"{row.maturity_days} days matured"),
            }
        )
    return {
        "library_name": "nextbuy",
        "pipeline_tag": "link-prediction",
        "tags": ["recommendation", "directed-graph", "gnn", "delayed-feedback"],
        "datasets": [dataset],
        "metrics": list(RELEASE_METRICS),
        "model-index": [{"name": f"{card.model_name} v{card.version}", "results": results}],
    }


def render(card: Card) -> str:
    """The card as Markdown with its YAML front matter (the artifact ``model_card/README.md``)."""
    head = yaml.safe_dump(front_matter(card), sort_keys=False, width=10**6)
    return f"---\n{head}---\n\n{body(card)}"


def description(card: Card, limit: int = DESCRIPTION_LIMIT) -> str:
    """The card's Markdown without the front matter, for the version's Description in MLflow:
    oldest matured rows are left out until it fits ``limit`` (the artifact keeps them all)."""
    text, dropped = body(card), 0
    while len(text) > limit and dropped < len(card.matured):
        dropped += 1
        text = body(card.model_copy(update={"matured": card.matured[dropped:]}), dropped)
    return text[:limit]


def people_notes(current: str | None) -> tuple[str, str]:
    """What people wrote in a version's Description, around nextbuy's card section: (above,
    below). A Description without the card's markers is all people's (above)."""
    text = current or ""
    start, end = text.find(CARD_START), text.find(CARD_END)
    if start < 0 or end < start:
        return text.strip(), ""
    return text[:start].strip(), text[end + len(CARD_END) :].strip()


def description_with_notes(card: Card, current: str | None, limit: int = DESCRIPTION_LIMIT) -> str:
    """The version's new Description: people's notes kept where they wrote them, the card
    between its markers replaced (shortened to fit ``limit`` with them)."""
    above, below = people_notes(current)
    room = limit - len(above) - len(below) - len(CARD_START) - len(CARD_END) - 8
    card_text = description(card, max(room, 0))
    parts = [above, f"{CARD_START}\n{card_text}\n{CARD_END}", below]
    return "\n\n".join(p for p in parts if p)
