"""BLADE: a directed dual-embedding GNN with degree-adaptive neighbourhood sampling.

Every node ``v`` has a *source* vector ``s_v`` (what it leads to) and a *target*
vector ``t_v`` (what leads to it); the directed edge ``u -> v`` is scored from
``s_u . t_v``, so ``u -> v`` and ``v -> u`` score differently.

Model:

* input ``[s0 | t0] = dropout(X W) + id_v``: any node feature matrix ``X``
  (bag-of-words, category one-hots, price, popularity) through a learned
  projection, plus a learned per-node id embedding (its own weight decay), so a
  node never seen in training still gets a vector from its features;
* ``n_layers`` layers; each updates both roles from both directions (as DirGNN
  does) while keeping them apart for scoring:
  ``[s|t]' = [s|t] + W [ [s|t] , mean_out [s|t] , mean_in [s|t] ]`` (ReLU and
  dropout between layers), where ``mean_out`` averages over the node's sampled
  out-neighbours and ``mean_in`` over its in-neighbours: co-citation,
  shared-reference and 2-hop paths all reach both roles, and a node without
  out-edges still gets a source vector from its in-neighbours;
* neighbourhoods are sampled with BLADE's degree-adaptive rule
  (:class:`~nextbuy.domain.graph.fanout.FanoutRule`: low-degree nodes get larger
  budgets, filled from 2 hops) while training and for Monte-Carlo uncertainty,
  and taken in full, with dropout off, for ranking (deterministic scores);
* link score ``s_u . t_v``; conversion head ``logit = (s_u * t_v) . w + b`` on the
  same encoder (multi-task).

Training keeps message edges and supervision edges apart: each epoch a random
``supervision_share`` of the edges is scored and only the rest pass messages, so
an edge is never in its own neighbourhood.  Every positive gets ``n_negatives``
random destinations, and the reversed edge (when it is not itself an edge) counts
as a negative with weight ``reverse_penalty``.  An
optional validation callback drives early stopping (best weights restored).  With
``neighbour_history`` a step samples one hop and reads its neighbours' deeper states from a table
refreshed each epoch (:meth:`BladeModel.encode_with_history`), so an epoch costs
O(impressions x fanout) rather than O(impressions x fanout^layers); over several processes each
rank keeps its own table (the same refresh, its own seeds written back).  Training can run
data-parallel over several processes (a :class:`~nextbuy.domain.graph.collective.Collective`; see
:func:`train_blade`).

Serving needs no torch: :func:`export_moments` writes deterministic means and
the variance over ``mc_samples`` stochastic passes; :func:`pair_logit_moments`
turns them into a logit mean and variance per pair in numpy.

One module per job: ``structures`` (architecture, schedule, conversion examples, graph, index),
``model`` (the network, :func:`embed`), ``trainer`` (a run: :class:`BladeTraining`, its steps and
losses, :func:`train_blade`), ``stopping`` (early stopping), ``export`` (moments of passes and
ensembles). This
package's namespace holds the public names of all of them.
"""

from __future__ import annotations

from nextbuy.domain.graph.blade.export import (
    ensemble_moments,
    export_moments,
)
from nextbuy.domain.graph.blade.model import BladeModel, embed, inverted_dropout
from nextbuy.domain.graph.blade.progress import one_training
from nextbuy.domain.graph.blade.stopping import Validation
from nextbuy.domain.graph.blade.structures import (
    PASS_ESTIMATORS,
    Architecture,
    Conversions,
    DirectedGraph,
    FeatureRows,
    GraphIndex,
    TrainingSchedule,
)
from nextbuy.domain.graph.blade.trainer import BladeTraining, train_blade
from nextbuy.domain.graph.scoring import link_scores, pair_logit_moments, score_and_uncertainty

__all__ = [
    "PASS_ESTIMATORS",
    "Architecture",
    "BladeModel",
    "BladeTraining",
    "Conversions",
    "DirectedGraph",
    "FeatureRows",
    "GraphIndex",
    "TrainingSchedule",
    "Validation",
    "embed",
    "ensemble_moments",
    "export_moments",
    "inverted_dropout",
    "link_scores",
    "one_training",
    "pair_logit_moments",
    "score_and_uncertainty",
    "train_blade",
]
