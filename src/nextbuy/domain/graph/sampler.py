"""Degree-adaptive neighbourhood sampling for directed graphs (BLADE), in plain torch.

pyg-lib / torch-sparse are not available, so this module replaces
``NeighborLoader`` with a small, fully vectorised sampler over a CSR adjacency.
There are no Python loops over nodes or edges; the only loops run over budget
slots (at most ``fanout_max`` iterations) for sampling without replacement.

BLADE's observation: a high-degree node already has a well-trained embedding
and a representative neighbourhood in a few samples, while a low-degree node
has little of either.  So the per-node budget *shrinks* with degree
(:class:`FanoutRule`, from the degree distribution's power-law exponent) and nodes
below their budget top it up with 2-hop neighbours (neighbours of their neighbours, same direction),
which gives them a larger, *random* neighbourhood.  The randomness is useful
later: repeated stochastic passes give low-degree nodes more variance, which
is the uncertainty signal the pipeline uses.

Direction is whatever the CSR encodes: build it from ``(src, dst)`` for
out-neighbours and from ``(dst, src)`` for in-neighbours.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from nextbuy.domain.graph.fanout import FanoutRule

FALLBACK_FULL = 10  # walks a neighbourless node takes through its group when neighbourhoods are full

__all__ = [
    "CSR",
    "Block",
    "expand",
    "group_members",
    "relabel",
    "sample_blocks",
    "sample_neighbourhood",
]


@dataclass(frozen=True)
class CSR:
    """Adjacency in one direction: the neighbours of row ``i`` are ``col[rowptr[i]:rowptr[i+1]]``."""

    rowptr: Tensor  # int64 [n + 1]
    col: Tensor  # int64 [nnz]

    @classmethod
    def from_edges(cls, src: Tensor, dst: Tensor, n_nodes: int, n_cols: int | None = None) -> CSR:
        """Rows are ``src``; each row's neighbours are sorted by id. Duplicate edges are kept.

        ``n_cols`` (default ``n_nodes``) bounds the column ids, for rectangular maps such as
        group -> members.
        """
        src = torch.as_tensor(src, dtype=torch.long).reshape(-1)
        dst = torch.as_tensor(dst, dtype=torch.long).reshape(-1)
        n_cols = int(n_nodes if n_cols is None else n_cols)
        if src.numel() != dst.numel():
            raise ValueError("src and dst must have the same length")
        if src.numel() and (
            int(src.min()) < 0 or int(dst.min()) < 0 or int(src.max()) >= n_nodes or int(dst.max()) >= n_cols
        ):
            raise ValueError(f"edges must lie in [0, {n_nodes}) x [0, {n_cols})")
        # sort by (src, dst) with one int64 key: exact while n_nodes * n_cols < 9.2e18
        order = torch.argsort(src * n_cols + dst, stable=True)
        col = dst[order].contiguous()
        counts = torch.bincount(src, minlength=n_nodes)
        rowptr = torch.zeros(n_nodes + 1, dtype=torch.long)
        torch.cumsum(counts, dim=0, out=rowptr[1:])
        return cls(rowptr=rowptr, col=col)

    @property
    def n_nodes(self) -> int:
        return self.rowptr.numel() - 1

    def degree(self, nodes: Tensor | None = None) -> Tensor:
        """Number of neighbours of every node (or of ``nodes``), int64."""
        if nodes is None:
            return self.rowptr[1:] - self.rowptr[:-1]
        nodes = torch.as_tensor(nodes, dtype=torch.long)
        return self.rowptr[nodes + 1] - self.rowptr[nodes]


def _rand_below(bound: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform integers in ``[0, bound)`` elementwise (``bound >= 1``)."""
    u = torch.rand(bound.shape, generator=generator, dtype=torch.float64)
    return torch.minimum((u * bound).to(torch.long), bound - 1)


def expand(counts: Tensor) -> tuple[Tensor, Tensor]:
    """For per-row counts, return (row index, position within row) for every slot."""
    rows = torch.repeat_interleave(torch.arange(counts.numel()), counts)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(rows.numel()) - starts[rows]
    return rows, pos


def _subset_without_replacement(
    n: Tensor, k: Tensor, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Uniform random k-subsets of ``range(n)`` per row (requires n >= k >= 0).

    Robert Floyd's algorithm run for all rows at once; loops over slots only.
    Returns (row, position) for every chosen element.
    """
    rows_n = n.numel()
    kmax = int(k.max()) if rows_n else 0
    chosen = torch.full((rows_n, max(kmax, 1)), -1, dtype=torch.long)
    for i in range(kmax):
        active = i < k
        j = n - k + i  # Floyd: j runs over n-k .. n-1
        t = _rand_below((j + 1).clamp_min(1), generator)
        seen = (chosen[:, :i] == t.unsqueeze(1)).any(dim=1) if i else torch.zeros_like(active)
        pick = torch.where(seen, j, t)
        chosen[:, i] = torch.where(active, pick, chosen[:, i])
    mask = chosen[:, :kmax] >= 0
    rows = torch.arange(rows_n).unsqueeze(1).expand(-1, kmax)[mask]
    return rows, chosen[:, :kmax][mask]


def group_members(group: Tensor, eligible: Tensor, n_groups: int | None = None) -> CSR:
    """CSR from group id to its eligible member nodes (e.g. category -> products with neighbours).

    ``group`` is int64 [n] with -1 for "no group"; ``eligible`` is a bool mask [n].
    Used as the cold-start fallback of :func:`sample_neighbourhood`.
    """
    group = torch.as_tensor(group, dtype=torch.long)
    keep = (group >= 0) & torch.as_tensor(eligible, dtype=torch.bool)
    nodes = torch.nonzero(keep).reshape(-1)
    if n_groups is None:
        n_groups = int(group.max()) + 1 if group.numel() and int(group.max()) >= 0 else 0
    return (
        CSR.from_edges(group[nodes], nodes, n_groups, group.numel())
        if n_groups
        else CSR(rowptr=torch.zeros(1, dtype=torch.long), col=torch.zeros(0, dtype=torch.long))
    )


def sample_neighbourhood(
    csr: CSR,
    centres: Tensor,
    rule: FanoutRule | None,
    generator: torch.Generator | None = None,
    *,
    fallback: tuple[Tensor, CSR] | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample a neighbourhood for every centre; ``rule=None`` takes every neighbour (deterministic).

    Returns ``(centre_pos, neighbour)``: ``centre_pos`` indexes into ``centres``
    (so duplicate centres are sampled independently), ``neighbour`` is a node
    id.  Pairs are grouped by ``centre_pos`` in increasing order.

    For a centre ``c`` with degree ``d`` and budget ``k = rule.budget(d)``:

    * ``d <= k``: all ``d`` neighbours are taken (without replacement, exact);
    * ``d > k``: a uniform random ``k``-subset of the neighbours (without
      replacement);
    * ``0 < d < k`` and ``rule.two_hop``: the remaining ``k - d`` slots are filled with
      2-hop neighbours, each drawn by a 2-step random walk (uniform neighbour,
      then a uniform neighbour of it).  Walks that hit a dead end or return to
      ``c`` itself are dropped, so a centre may get fewer than ``k`` pairs.
    * ``d == 0``: no pairs — unless ``fallback = (group, members)`` is given
      (``group`` int64 [n] with -1 = none, ``members`` a :func:`group_members`
      CSR of nodes that have neighbours): then the ``k`` slots are 2-step walks
      through the group, i.e. neighbours of random products of the same group.
      With ``rule=None`` the fallback takes ``FALLBACK_FULL`` walks from a generator seeded 0.
    """
    centres = torch.as_tensor(centres, dtype=torch.long).reshape(-1)
    if centres.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty.clone()
    start = csr.rowptr[centres]
    deg = csr.rowptr[centres + 1] - start
    k = deg if rule is None else rule.budget(deg)
    # Each part is grouped by centre; the order of the draws fixes what a seed samples.
    parts = list(_one_hop(csr, start, deg, k, generator))
    if rule is not None and rule.two_hop:
        parts.append(_two_hop_fill(csr, centres, start, deg, k, generator))
    if fallback is not None and fallback[1].n_nodes > 0:
        parts.append(_group_fallback(csr, centres, deg, k, rule is None, fallback, generator))
    return _merge_by_centre([c for c, _ in parts], [n for _, n in parts], centres.numel())


def _one_hop(
    csr: CSR, start: Tensor, deg: Tensor, k: Tensor, generator: torch.Generator | None
) -> Iterator[tuple[Tensor, Tensor]]:
    """Every neighbour of the centres whose neighbourhood fits the budget; a uniform
    ``k``-subset without replacement of the others'."""
    full = deg <= k
    rows, pos = expand(torch.where(full, deg, torch.zeros_like(deg)))
    yield rows, csr.col[start[rows] + pos]
    big = torch.nonzero(~full).reshape(-1)
    if big.numel():
        r, p = _subset_without_replacement(deg[big], k[big], generator)
        rows = big[r]
        yield rows, csr.col[start[rows] + p]


def _two_hop_fill(
    csr: CSR, centres: Tensor, start: Tensor, deg: Tensor, k: Tensor, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """The ``k - d`` free slots of a centre with ``0 < d < k`` neighbours, as 2-step walks
    (walks that return to the centre are dropped)."""
    n_fill = torch.where((deg > 0) & (deg < k), k - deg, torch.zeros_like(deg))
    rows, _ = expand(n_fill)
    if not rows.numel():
        return rows, rows.clone()
    mid = csr.col[start[rows] + _rand_below(deg[rows], generator)]
    rows, nb = _walk_step(csr, rows, mid, generator)
    keep = nb != centres[rows]
    return rows[keep], nb[keep]


def _group_fallback(
    csr: CSR,
    centres: Tensor,
    deg: Tensor,
    k: Tensor,
    full: bool,
    fallback: tuple[Tensor, CSR],
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """Cold start: ``k`` 2-step walks through the group of each centre without neighbours
    (``full``: ``FALLBACK_FULL`` walks, each drawn from a hash of the centre's id and slot)."""
    if full:
        k = torch.full_like(deg, FALLBACK_FULL)
    group, members = fallback
    g = torch.as_tensor(group, dtype=torch.long)[centres]
    has_group = (deg == 0) & (g >= 0) & (g < members.n_nodes)
    gsafe = torch.where(has_group, g, torch.zeros_like(g))
    gsize = torch.where(has_group, members.degree(gsafe), torch.zeros_like(g))
    rows, slot = expand(torch.where(gsize > 0, k, torch.zeros_like(k)))
    if not rows.numel():
        return rows, rows.clone()
    gr = gsafe[rows]
    if full:
        key = centres[rows] * FALLBACK_FULL + slot
        mid = members.col[members.rowptr[gr] + _hash_below(key, gsize[rows], 1)]
        rows, nb = _walk_step(csr, rows, mid, None, key=key)
    else:
        mid = members.col[members.rowptr[gr] + _rand_below(gsize[rows], generator)]
        rows, nb = _walk_step(csr, rows, mid, generator)
    keep = nb != centres[rows]
    return rows[keep], nb[keep]


def _merge_by_centre(parts_c: list[Tensor], parts_n: list[Tensor], n_centres: int) -> tuple[Tensor, Tensor]:
    """Concatenate parts that are each grouped by centre into one grouped by centre, part order
    kept within a centre: what a stable argsort of the concatenation gives, by counting
    (O(n_centres + pairs), no sort; the sort was a sixth of a training step's sampling)."""
    counts = [torch.bincount(c, minlength=n_centres) for c in parts_c]
    total = torch.stack(counts).sum(0)
    offset = torch.cumsum(total, 0) - total  # where each centre's pairs start, then its next free slot
    neighbour = torch.empty(int(total.sum()), dtype=torch.long)
    for centre, nb, count in zip(parts_c, parts_n, counts, strict=True):
        part_start = torch.cumsum(count, 0) - count
        neighbour[offset[centre] + torch.arange(centre.numel()) - part_start[centre]] = nb
        offset += count
    return torch.repeat_interleave(torch.arange(n_centres), total), neighbour


def relabel(parts: list[Tensor], n_nodes: int) -> tuple[Tensor, list[Tensor]]:
    """The sorted distinct ids of ``parts`` (ids in ``[0, n_nodes)``) and each part's positions
    among them: ``torch.unique`` then ``torch.searchsorted``, computed without sorting (a marker
    per id, then its running count) once the parts hold more than ``n_nodes / 8`` ids; sorting
    took two thirds of a training step's sampling at 10^5 products."""
    size = sum(p.numel() for p in parts)
    if 8 * size < n_nodes:
        nodes = torch.unique(torch.cat(parts))
        return nodes, [torch.searchsorted(nodes, p) for p in parts]
    mark = torch.zeros(n_nodes, dtype=torch.bool)
    for p in parts:
        mark[p] = True
    position = torch.cumsum(mark, 0) - 1
    return torch.nonzero(mark).reshape(-1), [position[p] for p in parts]


@dataclass(frozen=True)
class Block:
    """One message-passing hop of a sampled computation graph.

    The layer computes new states for ``n_dst`` nodes from the states of the previous layer's
    nodes (``src`` positions index those); ``self_pos`` is each destination node's own position
    there.  ``out_*`` pairs carry messages along out-edges (centre -> neighbour), ``in_*`` pairs
    along in-edges; ``*_dst`` index the destination nodes.
    """

    n_dst: int
    self_pos: Tensor
    out_dst: Tensor
    out_src: Tensor
    in_dst: Tensor
    in_src: Tensor


def sample_blocks(
    out_csr: CSR,
    in_csr: CSR,
    seeds: Tensor,
    n_layers: int,
    rules: tuple[FanoutRule, FanoutRule] | None,
    generator: torch.Generator | None = None,
    *,
    fallbacks: tuple[tuple[Tensor, CSR] | None, tuple[Tensor, CSR] | None] = (None, None),
) -> tuple[Tensor, list[Block]]:
    """The ``n_layers``-hop computation graph of ``seeds`` (unique ids), both directions per hop.

    Returns ``(input_nodes, blocks)``: the sorted ids whose layer-0 states are needed, and the
    blocks from the input layer up to the seeds (apply them in order).  Memory is bounded by the
    seeds and the budgets, not by the graph.  ``rules=None``: full neighbourhoods.
    """
    nodes = torch.as_tensor(seeds, dtype=torch.long).reshape(-1)
    blocks: list[Block] = []
    for _ in range(int(n_layers)):
        co, no = sample_neighbourhood(out_csr, nodes, None if rules is None else rules[0], generator,
                                      fallback=fallbacks[0])  # fmt: skip
        ci, ni = sample_neighbourhood(in_csr, nodes, None if rules is None else rules[1], generator,
                                      fallback=fallbacks[1])  # fmt: skip
        below, (self_pos, out_src, in_src) = relabel([nodes, no, ni], out_csr.n_nodes)
        blocks.append(
            Block(
                n_dst=nodes.numel(), self_pos=self_pos, out_dst=co, out_src=out_src, in_dst=ci, in_src=in_src
            )
        )
        nodes = below
    return nodes, blocks[::-1]


def _walk_step(
    csr: CSR, rows: Tensor, mid: Tensor, generator: torch.Generator | None, key: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """One uniform random-walk step from ``mid`` (drawn from ``key`` by hash when given, so the
    step does not depend on which other walkers share the call); drops walkers at dead ends."""
    mdeg = csr.rowptr[mid + 1] - csr.rowptr[mid]
    alive = mdeg > 0
    rows, mid, mdeg = rows[alive], mid[alive], mdeg[alive]
    step = _rand_below(mdeg, generator) if key is None else _hash_below(key[alive], mdeg, 2)
    return rows, csr.col[csr.rowptr[mid] + step]


def _hash_below(key: Tensor, bound: Tensor, salt: int) -> Tensor:
    """A fixed pseudo-random integer in ``[0, bound)`` per ``key`` (splitmix-style mixing, int64)."""
    mask = (1 << 31) - 1
    x = (key * 2654435761 + salt * 40503) & mask
    x = ((x ^ (x >> 15)) * 2246822519) & mask
    x = x ^ (x >> 13)
    return x % bound
