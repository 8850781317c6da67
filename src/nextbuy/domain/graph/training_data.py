"""The train stage's examples: label_delay's weighted impressions as BLADE's conversion
examples (pairs, the weighting method's targets and weights), the seeded early-stopping split,
its validation score, and the EM step's refitted targets."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from nextbuy.constants import WEIGHTING_METHODS
from nextbuy.domain import delay
from nextbuy.domain.delay import DelayFamily

if TYPE_CHECKING:
    from nextbuy.config import TrainConfig
    from nextbuy.domain.graph.blade import BladeModel, Conversions, DirectedGraph, Validation


def conversion_weights(train_rows: pd.DataFrame, weighting: str) -> np.ndarray:
    return train_rows[f"weight_{weighting}"].to_numpy(dtype=float)


def conversions(rows: pd.DataFrame, weighting: str, resample: np.ndarray | None = None) -> Conversions:
    """The model's conversion examples of ``rows``: their pairs, ``label`` and the weighting
    method's weights (times ``resample``, a bootstrap count per row, when given)."""
    import torch

    # torch: imported where a model is built or trained
    from nextbuy.domain.graph.blade import Conversions

    weight = conversion_weights(rows, weighting)
    return Conversions(
        rows["source_id"].to_numpy(np.int64),
        rows["shown_id"].to_numpy(np.int64),
        rows["label"].to_numpy(np.float32),
        torch.as_tensor(weight if resample is None else weight * resample),
    )


def training_rows(weighted: pd.DataFrame, cfg: TrainConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training impressions, split by a seeded draw into (fit rows, early-stopping rows), their
    ``label`` the weighting method's target (soft for the Rao-Blackwellised importance methods, see
    ``nextbuy.domain.delay``); labels permuted first for the gate drill."""
    rows = weighted[weighted["split"] == "train"]
    rng = np.random.default_rng(cfg.seed)
    if cfg.shuffle_labels:
        permutation = rng.permutation(len(rows))
        shuffled = [
            "label", "p_flip", *(f"{kind}_{m}" for m in WEIGHTING_METHODS for kind in ("target", "weight"))
        ]  # fmt: skip
        rows = rows.assign(**{c: rows[c].to_numpy()[permutation] for c in shuffled})
    rows = rows.assign(label=rows[f"target_{cfg.weighting}"].to_numpy())
    held = rng.random(len(rows)) < cfg.validation_share
    return rows[~held], rows[held]


def conversion_validation(rows: pd.DataFrame, weighting: str, chunk: int) -> Validation | None:
    """Early-stopping score: minus the weighted log loss of the conversion head on ``rows``
    (the same weights as training), from deterministic embeddings; None without rows."""
    import torch
    import torch.nn.functional as F

    # torch: imported where a model is built or trained
    from nextbuy.domain.graph.blade import embed

    weight = torch.as_tensor(conversion_weights(rows, weighting), dtype=torch.float32)
    if not len(rows) or float(weight.sum()) <= 0:
        return None
    src = torch.as_tensor(rows["source_id"].to_numpy(), dtype=torch.int64)
    dst = torch.as_tensor(rows["shown_id"].to_numpy(), dtype=torch.int64)
    label = torch.as_tensor(rows["label"].to_numpy(), dtype=torch.float32)

    @torch.no_grad()
    def validate(model: BladeModel, graph: DirectedGraph) -> float:
        s, t = embed(model, graph, chunk=chunk)
        logit = model.conversion_logit(s[src], t[dst])
        loss = F.binary_cross_entropy_with_logits(logit, label, reduction="none")
        return -float((weight * loss).sum() / weight.sum())

    return validate


def em_targets(weighted: pd.DataFrame, score: np.ndarray, method: str, family: DelayFamily) -> pd.DataFrame:
    """``weighted`` with ``target_<method>`` of the train split recomputed by one EM step
    (``nextbuy.domain.delay.rescored_targets``): the delay model refitted with ``score``, a
    conversion model's logit of each training impression (train-split order), as a feature.
    Any conversion model can take the step (``bench model`` gives its baselines the same)."""

    train = (weighted["split"] == "train").to_numpy()
    rows = weighted[train]
    signals = rows[["elapsed_days", "label", "delay_days", "engaged_days", *delay.ENGAGEMENT]].join(
        rows[[c for c in delay.FEATURES if c in rows]]
    )
    target, _ = delay.rescored_targets(signals, score, np.ones(len(rows), bool), method, family)
    column = weighted[f"target_{method}"].to_numpy(copy=True)
    column[train] = target
    return weighted.assign(**{f"target_{method}": column})


def training_logits(
    model: BladeModel, graph: DirectedGraph, weighted: pd.DataFrame, chunk: int
) -> np.ndarray:
    """The model's deterministic conversion logit of every train-split impression."""
    import torch

    # torch: imported where a model is built or trained
    from nextbuy.domain.graph.blade import embed

    rows = weighted[weighted["split"] == "train"]
    with torch.no_grad():
        s, t = embed(model, graph, chunk=chunk)
        src = torch.as_tensor(rows["source_id"].to_numpy(), dtype=torch.int64)
        dst = torch.as_tensor(rows["shown_id"].to_numpy(), dtype=torch.int64)
        return model.conversion_logit(s[src], t[dst]).double().numpy()
