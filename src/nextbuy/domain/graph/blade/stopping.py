"""A BLADE run's early stopping and the check that the ranks of a distributed run agree."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from nextbuy.domain.graph.blade.model import BladeModel
from nextbuy.domain.graph.blade.structures import Conversions, DirectedGraph, TrainingSchedule
from nextbuy.domain.graph.collective import SINGLE, Collective

Validation = Callable[[BladeModel, DirectedGraph], float]  # higher is better; model in eval mode


class EarlyStopping:
    """Keeps the best weights by ``validate``; says stop after ``patience`` checks without a gain.
    Over several processes rank 0 validates and every rank takes its value: the same decisions."""

    def __init__(
        self,
        validate: Validation | None,
        graph: DirectedGraph,
        schedule: TrainingSchedule,
        collective: Collective = SINGLE,
    ) -> None:
        self.validate, self.graph, self.collective = validate, graph, collective
        self.every, self.patience = max(1, int(schedule.eval_every)), int(schedule.patience)
        self.best, self.stale = -math.inf, 0
        self.best_state: dict[str, Any] | None = None

    def check(self, model: BladeModel, epoch: int, row: dict) -> bool:
        """Validate after ``epoch`` (0-based) when due; True when training should stop."""
        if self.validate is None or (epoch + 1) % self.every:
            return False
        model.eval()
        value = float(self.validate(model, self.graph)) if self.collective.rank == 0 else math.nan
        value = self.collective.broadcast_float(value)
        model.train()
        row["validation"] = value
        if value > self.best:
            self.best, self.best_state, self.stale = value, copy.deepcopy(model.state_dict()), 0
        else:
            self.stale += 1
        return self.stale >= self.patience

    def restore(self, model: BladeModel) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


def check_same_run(
    collective: Collective, graph: DirectedGraph, conv: Conversions, schedule: TrainingSchedule
) -> None:
    """Refuse (on every rank at once) ranks that see different data or schedules: their steps
    would not line up, and training would hang or silently mix two runs."""
    if collective.world_size == 1:
        return
    arrays = (graph.src, graph.dst, conv.src, conv.dst, conv.weight, conv.label)
    sums = [float(x.double().sum()) for x in arrays]
    fingerprint = [graph.n_nodes, graph.n_edges, len(conv), *sums, *map(float, asdict(schedule).values())]
    if not collective.agree(fingerprint):
        raise ValueError("the ranks of a distributed run differ in training data or schedule")
