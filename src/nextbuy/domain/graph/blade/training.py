"""BLADE training runs: early stopping, :func:`train_blade` and the resumable
:class:`BladeTraining`."""

from __future__ import annotations

import copy
import math
from dataclasses import asdict

from torch import Tensor

from nextbuy.domain.graph.blade.model import BladeModel
from nextbuy.domain.graph.blade.structures import Architecture, DirectedGraph, TrainingSchedule
from nextbuy.domain.graph.blade.trainer import Validation, _Conversions, _Trainer
from nextbuy.domain.graph.collective import SINGLE, Collective


class _EarlyStopping:
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
        self.best, self.best_state, self.stale = -math.inf, None, 0

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


def _check_same_run(collective: Collective, graph: DirectedGraph, conv: _Conversions, schedule) -> None:
    """Refuse (on every rank at once) ranks that see different data or schedules: their steps
    would not line up, and training would hang or silently mix two runs."""
    if collective.world_size == 1:
        return
    arrays = (graph.src, graph.dst, conv.src, conv.dst, conv.weight, conv.label)
    sums = [float(x.double().sum()) for x in arrays]
    fingerprint = [graph.n_nodes, graph.n_edges, len(conv), *sums, *map(float, asdict(schedule).values())]
    if not collective.agree(fingerprint):
        raise ValueError("the ranks of a distributed run differ in training data or schedule")


def train_blade(
    graph: DirectedGraph,
    conv_src: Tensor,
    conv_dst: Tensor,
    conv_label: Tensor,
    conv_weight: Tensor,
    *,
    architecture: Architecture,
    schedule: TrainingSchedule,
    validate: Validation | None = None,
    progress: bool | str = True,
    initial: BladeModel | None = None,
    collective: Collective = SINGLE,
) -> tuple[BladeModel, list[dict]]:
    """Train a :class:`BladeModel` on weighted conversion examples plus the directed link loss.

    One step = a batch of ``schedule.batch_size`` conversion examples (loss
    ``sum(w * bce) / sum(w)``) and a slice of this epoch's supervision edges (see
    the module docstring); total loss = conv + ``link_loss_weight`` * link.  An epoch is
    one pass over the conversion examples, or over the supervision edges when there
    are none.  With ``validate`` (called every ``eval_every`` epochs on the model in
    eval mode, higher is better) training stops after ``patience`` checks without a
    gain and the best weights are restored.  Deterministic for a given seed; the global
    torch RNG is left untouched.  ``initial``: continue from a copy of this model's weights
    (ensemble members) instead of fresh seeded ones.  Returns the model (eval mode) and per-epoch
    ``{"epoch", "conv_loss", "link_loss"[, "validation"]}``; a loss is NaN without data.

    ``collective``: data-parallel training over its ranks (every rank calls this with the same
    data and schedule).  A step then covers ``batch_size`` examples *per rank*, each rank taking
    its slice of the step's shuffled examples and edges; losses are normalised by the whole
    step's totals and gradients summed, so the weights move as one process's would with
    ``batch_size x world_size``.  The epoch draws are shared; negatives, neighbourhood samples
    and dropout masks come from a per-rank stream, so runs with and without sampling noise only
    match where a step draws nothing.  ``validate`` runs on rank 0 only.
    """
    run = BladeTraining(
        graph, conv_src, conv_dst, conv_label, conv_weight, architecture=architecture,
        schedule=schedule, validate=validate, initial=initial, collective=collective,
    )  # fmt: skip
    run.advance(int(schedule.epochs), progress)
    return run.finish()


class BladeTraining:
    """:func:`train_blade` as a run that can be advanced a budget at a time and paused between
    budgets (successive halving over configs advances many runs in turns).  Arguments as
    :func:`train_blade`; ``best`` is the best validation so far (-inf before the first)."""

    def __init__(
        self,
        graph: DirectedGraph,
        conv_src: Tensor,
        conv_dst: Tensor,
        conv_label: Tensor,
        conv_weight: Tensor,
        *,
        architecture: Architecture,
        schedule: TrainingSchedule,
        validate: Validation | None = None,
        initial: BladeModel | None = None,
        collective: Collective = SINGLE,
    ) -> None:
        conv = _Conversions.checked(graph.n_nodes, conv_src, conv_dst, conv_label, conv_weight)
        if not len(conv) and graph.n_edges == 0:
            raise ValueError("nothing to train on: no conversion examples and no edges")
        _check_same_run(collective, graph, conv, schedule)
        self.trainer = _Trainer(graph, conv, architecture, schedule, initial, collective)
        self.stopping = _EarlyStopping(validate, graph, schedule, collective)
        self.max_epochs = int(schedule.epochs)
        self.history: list[dict] = []
        self.stopped = self.max_epochs <= 0

    @property
    def best(self) -> float:
        return self.stopping.best

    def advance(self, until: int, progress: bool | str = False) -> bool:
        """Train up to epoch ``until`` (at most ``schedule.epochs``) unless early stopping ends the
        run first; returns whether the run is over."""
        model = self.trainer.model
        model.train()
        while not self.stopped and len(self.history) < min(int(until), self.max_epochs):
            epoch = len(self.history)
            self.history.append(self.trainer.epoch(epoch, progress))
            self.stopped = self.stopping.check(model, epoch, self.history[-1])
        self.stopped = self.stopped or len(self.history) >= self.max_epochs
        return self.stopped

    def finish(self) -> tuple[BladeModel, list[dict]]:
        """The model with its best validated weights (eval mode) and the per-epoch history."""
        model = self.trainer.model
        self.stopping.restore(model)
        model.eval()
        return model, self.history
