"""One BLADE training run (:class:`BladeTraining`): supervision split, negatives, losses,
optimiser steps and early stopping; :func:`train_blade` runs one to its end."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from nextbuy.domain.graph.blade.model import BladeModel
from nextbuy.domain.graph.blade.progress import ACTIVE_CLOCK, TrainingClock, epoch_bar
from nextbuy.domain.graph.blade.stopping import EarlyStopping, Validation, check_same_run
from nextbuy.domain.graph.blade.structures import (
    Architecture,
    Conversions,
    DirectedGraph,
    GraphIndex,
    TrainingSchedule,
)
from nextbuy.domain.graph.collective import SINGLE, Collective


def _edge_keys(src: Tensor, dst: Tensor, n: int) -> Tensor:
    return torch.unique(src * n + dst)  # sorted


def _is_edge(keys: Tensor, u: Tensor, v: Tensor, n: int) -> Tensor:
    if keys.numel() == 0:
        return torch.zeros(u.shape, dtype=torch.bool)
    q = u * n + v
    pos = torch.searchsorted(keys, q).clamp_max(keys.numel() - 1)
    return keys[pos] == q


def _decay_touched_rows(weight: Tensor, decay: float) -> None:
    """Adam's L2 weight decay (``grad += decay * weight``) on the rows in ``weight``'s sparse
    gradient only: the rows a step touched, as lazy Adam updates them."""
    grad = weight.grad
    if grad is None or decay <= 0.0:
        return
    grad = grad.coalesce()
    rows = grad.indices()[0]
    values = grad.values() + decay * weight.detach().index_select(0, rows)
    weight.grad = torch.sparse_coo_tensor(
        grad.indices(), values, grad.shape, is_coalesced=True, check_invariants=False
    )


@dataclass
class _EpochLosses:
    """Running epoch means: conversion loss weighted by example weight, link loss by step.  Over
    several processes the weights and step counts are the whole run's, the sums this rank's part
    until :meth:`sum_over` adds the parts up at the epoch's end."""

    conv_sum: float = 0.0
    conv_weight: float = 0.0
    link_sum: float = 0.0
    link_count: int = 0

    def record(self, epoch: int) -> dict:
        """The history row of ``epoch`` (0-based); a loss is NaN when it had no data."""
        return {
            "epoch": epoch + 1,
            "conv_loss": self.conv_sum / self.conv_weight if self.conv_weight > 0 else float("nan"),
            "link_loss": self.link_sum / self.link_count if self.link_count else float("nan"),
        }

    def sum_over(self, collective: Collective) -> None:
        if collective.world_size > 1:
            self.conv_sum, self.link_sum = collective.sum_floats(self.conv_sum, self.link_sum)

    def postfix(self) -> dict[str, str]:
        return {
            "conv": f"{self.conv_sum / self.conv_weight:.4f}" if self.conv_weight else "-",
            "link": f"{self.link_sum / self.link_count:.4f}" if self.link_count else "-",
        }


def _rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s per-step draws in a run of several processes."""
    return (int(seed) * 1_000_003 + 7_919 * (rank + 1)) % 2**63


def _linear_warmup(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate ramps linearly to its set value over the first ``steps`` optimiser steps
    (step ``i``, 0-based, runs at ``(i + 1) / steps`` of it), then stays there; ``steps == 0``: none."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: min(1.0, (i + 1) / steps) if steps else 1.0)


class BladeTraining:
    """One training run, advanced a budget of epochs at a time and paused between budgets
    (successive halving over configs advances many runs in turns); :func:`train_blade` runs one
    to its end.  ``best`` is the best validation so far (-inf before the first).

    A single seeded generator drives, in this order, each epoch's supervision split and
    shuffles, then per step the negatives, the neighbourhood samples and the dropout masks:
    reordering any of these changes the trained numbers.  Over several processes
    (``collective``) every rank makes the same epoch draws from that generator (same split, same
    order), takes its share of each step's examples and edges, and draws its own negatives,
    samples and masks from a generator of its own; gradients are summed over the ranks before
    each (identical) optimiser step."""

    def __init__(
        self,
        graph: DirectedGraph,
        conv: Conversions,
        *,
        architecture: Architecture,
        schedule: TrainingSchedule,
        validate: Validation | None = None,
        initial: BladeModel | None = None,
        collective: Collective = SINGLE,
    ) -> None:
        conv.check_nodes(graph.n_nodes)
        if not len(conv) and graph.n_edges == 0:
            raise ValueError("nothing to train on: no conversion examples and no edges")
        check_same_run(collective, graph, conv, schedule)
        self.graph, self.conv, self.schedule, self.collective = graph, conv, schedule, collective
        self.generator = torch.Generator().manual_seed(int(schedule.seed))
        self.step_generator = (
            self.generator
            if collective.world_size == 1
            else torch.Generator().manual_seed(_rank_seed(schedule.seed, collective.rank))
        )
        self.model = self._seeded_model(architecture) if initial is None else copy.deepcopy(initial)
        collective.broadcast_parameters(self.model)
        self.params = list(self.model.parameters())
        self.sparse = [p is self.model.id_emb.weight for p in self.params]
        self.keys = _edge_keys(graph.src, graph.dst, graph.n_nodes)
        rest = [p for name, p in self.model.named_parameters() if not name.startswith("id_emb")]
        self.opt = torch.optim.Adam(rest, lr=schedule.lr, weight_decay=schedule.weight_decay)
        # Lazy Adam on the id table: only the rows a step touched move (dense Adam would move all
        # n x 2d weights every step: 64 M floats per step at a million products).
        self.id_opt = torch.optim.SparseAdam([self.model.id_emb.weight], lr=schedule.lr)
        self.warmups = [_linear_warmup(o, schedule.warmup_steps) for o in (self.opt, self.id_opt)]
        self.batch_size = int(schedule.batch_size)
        self.uses_history = bool(schedule.neighbour_history) and len(self.model.layers) >= 2
        self.neighbour_states: list[Tensor] = []  # per-layer states (neighbour_history)
        self.stopping = EarlyStopping(validate, graph, schedule, collective)
        self.max_epochs = int(schedule.epochs)
        self.history: list[dict] = []  # one row per epoch
        # What the progress bar says of time spent and left: the whole training's clock when
        # this run is one phase of it (an EM round, an ensemble member: ``one_training``).
        self.clock = ACTIVE_CLOCK.get() or TrainingClock(schedule.epochs)
        self.stopped = self.max_epochs <= 0

    def _seeded_model(self, architecture: Architecture) -> BladeModel:
        """Weights drawn from the schedule's seed (the global torch RNG is left untouched); the
        head bias starts at the log-odds of the weighted base rate so early steps learn pairs
        rather than the overall rate."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.schedule.seed))
            model = BladeModel(self.graph.n_nodes, self.graph.n_features, architecture)
        rate = self.conv.base_rate()
        if rate is not None:
            with torch.no_grad():
                model.head_b.fill_(math.log(rate / (1 - rate)))
        return model

    @property
    def best(self) -> float:
        return self.stopping.best

    def advance(self, until: int, progress: bool | str = False) -> bool:
        """Train up to epoch ``until`` (at most ``schedule.epochs``) unless early stopping ends the
        run first; returns whether the run is over."""
        self.model.train()
        while not self.stopped and len(self.history) < min(int(until), self.max_epochs):
            epoch = len(self.history)
            self.history.append(self.epoch(epoch, progress))
            self.clock.tick()
            self.stopped = self.stopping.check(self.model, epoch, self.history[-1])
        self.stopped = self.stopped or len(self.history) >= self.max_epochs
        return self.stopped

    def complete(self, progress: bool | str = False) -> tuple[BladeModel, list[dict]]:
        """Train to the end of the schedule (or early stopping), then :meth:`finish`."""
        self.advance(self.max_epochs, progress)
        self.clock.skip(self.max_epochs - len(self.history))  # stopped early: not run
        return self.finish()

    def finish(self) -> tuple[BladeModel, list[dict]]:
        """The model with its best validated weights (eval mode) and the per-epoch history."""
        self.stopping.restore(self.model)
        self.model.eval()
        return self.model, self.history

    def _supervision(self) -> tuple[DirectedGraph, Tensor]:
        """This epoch's message graph and its supervision edges (shuffled), disjoint."""
        m = self.graph.n_edges
        share = self.schedule.supervision_share if self.schedule.link_loss_weight > 0 else 0.0
        scored = torch.rand(m, generator=self.generator) < share
        if m and not bool(scored.any()) and self.schedule.link_loss_weight > 0:
            scored[int(torch.randint(0, m, (1,), generator=self.generator))] = True
        sup = torch.nonzero(scored).reshape(-1)
        sup = sup[torch.randperm(sup.numel(), generator=self.generator)]
        return self.graph.message_edges(scored), sup

    def epoch(self, epoch: int, progress: bool | str) -> dict:
        message, sup = self._supervision()
        index = self.model.index(message)
        if self.uses_history:  # refreshed from this epoch's message graph; steps write seeds back
            depth = len(self.model.layers) - 1
            self.neighbour_states = self.model.layer_states(
                index, self.graph.feature_rows, self.schedule.export_chunk, depth
            )
        perm_c = torch.randperm(len(self.conv), generator=self.generator)
        bs = self.batch_size * self.collective.world_size  # one step's examples over all ranks
        steps = max(1, math.ceil(max(len(self.conv), sup.numel()) / bs))
        link_bs = math.ceil(sup.numel() / steps)
        losses = _EpochLosses()
        # ``progress`` may name the phase (EM round, ensemble member): each phase counts its epochs.
        phase = f"{progress}: " if isinstance(progress, str) else "blade "
        desc = f"{phase}epoch {epoch + 1}/{self.schedule.epochs} ({self.clock.describe()})"
        bar = epoch_bar(steps, desc, bool(progress))
        for step in bar:
            edges = self._share(sup[step * link_bs : (step + 1) * link_bs])
            self._step(index, self._share(perm_c[step * bs : (step + 1) * bs]), edges, losses)
            if progress:
                bar.set_postfix(**losses.postfix(), refresh=False)  # mininterval paces the output
        bar.close()
        losses.sum_over(self.collective)
        return losses.record(epoch)

    def _share(self, items: Tensor) -> Tensor:
        """This rank's contiguous slice of one step's ``items`` (all of them in one process)."""
        part = math.ceil(items.numel() / self.collective.world_size)
        return items[self.collective.rank * part : (self.collective.rank + 1) * part]

    def _link_pairs(self, edges: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Pairs and labels/weights: positives, ``n_negatives`` random destinations each, reversed
        edges (when not edges themselves) weighted ``reverse_penalty``."""
        u, v = self.graph.src[edges], self.graph.dst[edges]
        k, n = int(self.schedule.n_negatives), self.graph.n_nodes
        neg_u = u.repeat(k)
        neg_v = torch.randint(0, n, (neg_u.numel(),), generator=self.step_generator)
        one_way = ~_is_edge(self.keys, v, u, n) & (u != v)
        rev_u, rev_v = v[one_way], u[one_way]
        m, r = u.numel(), rev_u.numel()
        y = torch.cat([torch.ones(m), torch.zeros(neg_u.numel() + r)])
        # positives and random negatives weigh as in plain BCE (negatives averaged per positive)
        w = torch.cat([torch.ones(m), torch.full((neg_u.numel(),), 1.0 / max(k, 1)),
                       torch.full((r,), float(self.schedule.reverse_penalty))])  # fmt: skip
        return torch.cat([u, neg_u, rev_u]), torch.cat([v, neg_v, rev_v]), y, w

    def _step(self, index: GraphIndex, cb: Tensor, edges: Tensor, losses: _EpochLosses) -> None:
        """One optimiser step on conversion examples ``cb`` and supervision ``edges`` (one shared pass),
        this rank's share of the step: the losses are normalised by the whole step's totals."""
        wsum, n_pos = self.collective.sum_floats(float(self.conv.weight[cb].sum()), float(edges.numel()))
        losses.conv_weight += wsum
        linked = n_pos > 0 and self.schedule.link_loss_weight > 0
        losses.link_count += int(linked)
        loss = self._loss(index, cb, edges, wsum, n_pos if linked else 0.0, losses)
        self.opt.zero_grad(set_to_none=True)
        self.id_opt.zero_grad(set_to_none=True)
        if loss is not None and loss.requires_grad:
            loss.backward()
        self.collective.sum_gradients(self.params, self.sparse)
        _decay_touched_rows(self.model.id_emb.weight, self.schedule.id_weight_decay)
        # Without a gradient (e.g. a step of zero-weight examples only) Adam leaves a parameter
        # alone: no step, not even weight decay.
        self.opt.step()
        self.id_opt.step()
        for warmup in self.warmups:
            warmup.step()

    def _loss(
        self, index: GraphIndex, cb: Tensor, edges: Tensor, wsum: float, n_pos: float, losses: _EpochLosses
    ) -> Tensor | None:
        """This rank's part of the step's loss (None when its share is empty): conversion
        ``sum(w * bce) / wsum``, plus ``link_loss_weight`` x link when ``n_pos``."""
        nc = cb.numel()
        if not nc and not edges.numel():
            return None
        lu, lv, ly, lw = self._link_pairs(edges) if edges.numel() else (torch.zeros(0, dtype=torch.long),) * 4
        src, dst = torch.cat([self.conv.src[cb], lu]), torch.cat([self.conv.dst[cb], lv])
        seeds, inv = torch.unique(torch.cat([src, dst]), return_inverse=True)
        features = self.graph.feature_rows
        if self.uses_history:
            s_all, t_all = self.model.encode_with_history(
                index, features, seeds, self.neighbour_states, self.step_generator
            )
        else:
            s_all, t_all = self.model.encode(index, features, seeds, self.step_generator, stochastic=True)
        s, t = s_all.index_select(0, inv[: src.numel()]), t_all.index_select(0, inv[src.numel() :])
        loss = s.new_zeros(())
        if nc and wsum > 0:
            loss = loss + self._conversion_loss(s[:nc], t[:nc], cb, losses) / wsum
        if ly.numel() and n_pos > 0:
            link = self._link_loss(s[nc:], t[nc:], ly, lw, n_pos, losses)
            loss = loss + self.schedule.link_loss_weight * link
        return loss

    def _conversion_loss(self, s: Tensor, t: Tensor, cb: Tensor, losses: _EpochLosses) -> Tensor:
        """``sum(w * bce)`` over the examples ``cb``."""
        w = self.conv.weight[cb]
        bce = F.binary_cross_entropy_with_logits(
            self.model.conversion_logit(s, t), self.conv.label[cb], reduction="none"
        )
        wb = (w * bce).sum()
        losses.conv_sum += float(wb.detach())
        return wb

    def _link_loss(
        self, s: Tensor, t: Tensor, y: Tensor, w: Tensor, n_pos: float, losses: _EpochLosses
    ) -> Tensor:
        """``sum(w * bce) / n_pos`` over the pairs (``n_pos``: the whole step's positives)."""
        logit = self.model.link_score(s, t)
        bce = F.binary_cross_entropy_with_logits(logit, y, reduction="none")
        loss = (w * bce).sum() / n_pos
        losses.link_sum += float(loss.detach())
        return loss


def train_blade(
    graph: DirectedGraph,
    conv: Conversions,
    *,
    architecture: Architecture,
    schedule: TrainingSchedule,
    validate: Validation | None = None,
    progress: bool | str = True,
    initial: BladeModel | None = None,
    collective: Collective = SINGLE,
) -> tuple[BladeModel, list[dict]]:
    """Train a :class:`BladeModel` on weighted conversion examples (``conv``) plus the directed link loss.

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
        graph, conv, architecture=architecture, schedule=schedule, validate=validate, initial=initial,
        collective=collective,
    )  # fmt: skip
    return run.complete(progress)
