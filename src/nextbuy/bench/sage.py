"""The GraphSAGE baseline `nextbuy bench scale` trains beside BLADE: torch-geometric's
``GraphSAGE`` between BLADE's inputs and heads, on neighbourhoods sampled as
NeighborLoader samples them (in plain torch)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from nextbuy.domain.graph.blade import Architecture, BladeModel, DirectedGraph, FeatureRows, GraphIndex
from nextbuy.domain.graph.fanout import FanoutRule
from nextbuy.domain.graph.sampler import CSR, sample_neighbourhood


@dataclass(frozen=True)
class SageIndex:
    out_csr: CSR
    in_csr: CSR


def sage_subgraph(
    index: GraphIndex | SageIndex,
    seeds: Tensor,
    hops: int,
    rule: FanoutRule | None,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """NeighborLoader's sampling in plain torch: per hop, every newly reached node samples up to
    ``rule``'s fanout of its out- and of its in-neighbours (``None``: all), which send it messages.
    Returns the sorted node ids, the subgraph's ``edge_index`` over their positions, and the
    seeds' positions."""
    n_nodes = index.out_csr.n_nodes
    reached = torch.zeros(n_nodes, dtype=torch.bool)  # a marker per id, as sampler.relabel: no sort
    reached[seeds] = True
    frontier, src, dst = seeds, [], []
    for _ in range(hops):
        for csr in (index.out_csr, index.in_csr):
            centre, neighbour = sample_neighbourhood(csr, frontier, rule, generator)
            src.append(neighbour)
            dst.append(frontier[centre])
        found = torch.zeros(n_nodes, dtype=torch.bool)
        found[torch.cat(src[-2:])] = True
        found &= ~reached
        frontier = torch.nonzero(found).reshape(-1)
        reached |= found
    position = torch.cumsum(reached, 0) - 1
    edge_index = position[torch.stack([torch.cat(src), torch.cat(dst)])]
    return torch.nonzero(reached).reshape(-1), edge_index, position[seeds]


class SageModel(BladeModel):
    """torch-geometric's ``GraphSAGE`` (``n_layers`` SAGEConv layers, hidden and output size
    ``2 x embedding_dim``, ReLU and dropout between layers) between BLADE's inputs (id embedding
    plus feature projection) and heads, so ``blade.train_blade(..., initial=SageModel(...))``
    trains it with BLADE's loop: same batches, losses and optimiser. Neighbourhoods: the
    ``fixed`` rule at ``fanout_max`` per direction (GraphSAGE's uniform sampling; never less
    than BLADE's budget, without its 2-hop fill), sampled as :func:`sage_subgraph`."""

    def __init__(self, n_nodes: int, n_features: int, architecture: Architecture) -> None:
        from torch_geometric.nn.models import GraphSAGE

        super().__init__(n_nodes, n_features, replace(architecture, n_layers=0))
        self.hops = int(architecture.n_layers)
        self.rule = FanoutRule("fixed", architecture.fanout_min, architecture.fanout_max)
        width = 2 * self.dim
        self.sage = GraphSAGE(width, width, num_layers=self.hops, out_channels=width, dropout=self.dropout)

    # The model builds the index its own encode() reads; the loop only hands it back.
    def index(self, graph: DirectedGraph) -> SageIndex:  # type: ignore[override]
        return SageIndex(
            CSR.from_edges(graph.src, graph.dst, graph.n_nodes),
            CSR.from_edges(graph.dst, graph.src, graph.n_nodes),
        )

    # Any index with both adjacencies will do: the model's own (SageIndex) is what the loop passes.
    def encode(
        self,
        index: GraphIndex | SageIndex,
        features: FeatureRows | None,
        seeds: Tensor,
        generator: torch.Generator | None = None,
        stochastic: bool = True,
        resample: bool | None = None,
    ) -> tuple[Tensor, Tensor]:
        sampled = stochastic if resample is None else resample
        rule = self.rule if sampled else None
        nodes, edge_index, at = sage_subgraph(index, seeds, self.hops, rule, generator)
        h = self.sage(self.inputs(features, nodes, generator, stochastic), edge_index).index_select(0, at)
        return h[:, : self.dim], h[:, self.dim :]
