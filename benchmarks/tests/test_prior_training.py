"""BLADE trained on top of a fixed link prior (nextbuy_lab.prior_training): the prior reads each
epoch's message graph and its logit is added to the scored pairs' link scores."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from nextbuy.domain.graph.blade import BladeTraining, Conversions, DirectedGraph
from nextbuy_lab.prior_training import prior_training
from tests.domain.graph.test_blade import ARCH, SCHEDULE, _no_conversions, _validation_split


class _RecordingPrior:
    """A link prior that logs the message graph of each epoch and the pairs it scores, and says
    +``strength`` for the edges held out of the epoch's messages (its positives), -``strength`` for
    every other pair: an oracle, but for the random negatives that hit a held-out edge."""

    def __init__(self, graph: DirectedGraph, strength: float) -> None:
        self.keys = set(zip(graph.src.tolist(), graph.dst.tolist(), strict=True))
        self.strength, self.message_graphs, self.scored = strength, [], []

    def on(self, edges: np.ndarray):
        self.message_graphs.append({tuple(e) for e in edges.tolist()})
        epoch = len(self.message_graphs) - 1

        held_out = self.keys - self.message_graphs[-1]

        def logit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
            self.scored.append((epoch, src.copy(), dst.copy()))
            pairs = zip(src.tolist(), dst.tolist(), strict=True)
            return np.where([pair in held_out for pair in pairs], self.strength, -self.strength)

        return logit


def test_a_link_prior_reads_each_epochs_message_graph_and_scores_the_edges_held_out_of_it():
    graph, _ = _validation_split(80, seed=13)
    prior = _RecordingPrior(graph, 0.0)
    prior_training(graph, Conversions(*_no_conversions()), architecture=ARCH,
                   schedule=replace(SCHEDULE, epochs=3), link_prior=prior).advance(3)  # fmt: skip
    assert len(prior.message_graphs) == 3
    scored = [set() for _ in prior.message_graphs]
    for epoch, src, dst in prior.scored:
        scored[epoch] |= set(zip(src.tolist(), dst.tolist(), strict=True))
    for message, pairs in zip(prior.message_graphs, scored, strict=True):
        assert message < prior.keys  # a share of the edges is held out of the messages ...
        assert prior.keys - message <= pairs  # ... and each of them is scored with the prior


def test_an_oracle_prior_leaves_the_embedding_nothing_to_learn():
    """The prior's logit is added to the link score: where it already separates the pairs, little
    loss is left for the embedding from the first epoch."""
    graph, _ = _validation_split(80, seed=13)
    schedule = replace(SCHEDULE, epochs=3)
    plain = BladeTraining(graph, Conversions(*_no_conversions()), architecture=ARCH, schedule=schedule)
    plain.advance(3)
    oracle = prior_training(graph, Conversions(*_no_conversions()), architecture=ARCH, schedule=schedule,
                            link_prior=_RecordingPrior(graph, 12.0))  # fmt: skip
    oracle.advance(3)
    plain_loss = [h["link_loss"] for h in plain.history]
    oracle_loss = [h["link_loss"] for h in oracle.history]
    assert max(oracle_loss) < min(plain_loss) / 3, (oracle_loss, plain_loss)
