"""Degree-adaptive neighbourhood sampler: what a caller relies on."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nextbuy.domain.graph.sampler import CSR, adaptive_fanout, group_members, sample_neighbourhood

FMIN, FMAX, TWO_HOP = 4, 20, 5


def _star_graph() -> tuple[torch.Tensor, torch.Tensor, int]:
    """Node 0 is a hub (0 -> 1..40); 1 -> 2; 2 -> 3, 4; 3 -> 0; 50 is isolated; 41..45 form a chain."""
    src = [0] * 40 + [1, 2, 2, 3] + [41, 42, 43, 44]
    dst = list(range(1, 41)) + [2, 3, 4, 0] + [42, 43, 44, 45]
    return torch.tensor(src), torch.tensor(dst), 51


def _neighbours(src: torch.Tensor, dst: torch.Tensor, n: int) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(n)]
    for u, v in zip(src.tolist(), dst.tolist(), strict=False):
        out[u].append(v)
    return out


def _by_centre(centre_pos: torch.Tensor, neighbour: torch.Tensor, n_centres: int) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(n_centres)]
    for c, v in zip(centre_pos.tolist(), neighbour.tolist(), strict=False):
        out[c].append(v)
    return out


def test_csr_from_edges_rows_are_sources_and_degrees_match():
    src, dst, n = _star_graph()
    csr = CSR.from_edges(src, dst, n)
    assert csr.rowptr.dtype == torch.long and csr.col.dtype == torch.long
    assert csr.rowptr.shape == (n + 1,) and csr.col.shape == (src.numel(),)
    nbrs = _neighbours(src, dst, n)
    for u in range(n):
        row = csr.col[csr.rowptr[u] : csr.rowptr[u + 1]].tolist()
        assert row == sorted(nbrs[u])
    assert csr.degree().tolist() == [len(x) for x in nbrs]
    assert csr.degree(torch.tensor([0, 2, 50])).tolist() == [40, 2, 0]
    # the in-direction is the same constructor with the roles swapped
    in_csr = CSR.from_edges(dst, src, n)
    assert in_csr.degree()[2].item() == 2 and in_csr.degree()[0].item() == 1  # 0->2, 1->2; 3->0


def test_csr_rejects_out_of_range_edges():
    with pytest.raises(ValueError):
        CSR.from_edges(torch.tensor([0, 5]), torch.tensor([1, 2]), 5)


def test_adaptive_fanout_bounds_and_monotonicity():
    deg = torch.arange(0, 100_000)
    k = adaptive_fanout(deg, FMIN, FMAX)
    assert k.dtype == torch.long
    assert int(k.min()) >= FMIN and int(k.max()) <= FMAX
    assert bool((k[1:] <= k[:-1]).all()), "budget must be non-increasing in degree"
    assert int(k[0]) == FMAX  # a node with no neighbours gets the largest budget
    assert int(adaptive_fanout(torch.tensor([10**9]), FMIN, FMAX)) <= FMIN + 1  # hubs approach fanout_min
    assert adaptive_fanout(deg[:10], 7, 7).unique().tolist() == [7]
    with pytest.raises(ValueError):
        adaptive_fanout(deg, 10, 5)


def test_hub_gets_a_small_distinct_subset_of_real_neighbours():
    src, dst, n = _star_graph()
    csr = CSR.from_edges(src, dst, n)
    g = torch.Generator().manual_seed(0)
    cp, nb = sample_neighbourhood(csr, torch.tensor([0]), FMIN, FMAX, TWO_HOP, g)
    k = int(adaptive_fanout(torch.tensor([40]), FMIN, FMAX))
    assert nb.numel() == k < 40
    assert len(set(nb.tolist())) == k, "sampling from a large neighbourhood is without replacement"
    assert set(nb.tolist()) <= set(range(1, 41))
    assert cp.tolist() == [0] * k


def test_low_degree_nodes_see_more_than_their_degree_via_two_hops():
    src, dst, n = _star_graph()
    csr = CSR.from_edges(src, dst, n)
    g = torch.Generator().manual_seed(1)
    # node 1 has one neighbour (2), whose neighbours are 3 and 4
    cp, nb = sample_neighbourhood(csr, torch.tensor([1]), FMIN, FMAX, TWO_HOP, g)
    assert nb.numel() > 1
    assert 2 in nb.tolist()  # the 1-hop neighbour is always kept
    assert set(nb.tolist()) <= {2, 3, 4}
    # node 3 -> 0 (a hub): its 2-hop pool is the hub's neighbours; the walk never returns to 3 itself
    cp, nb = sample_neighbourhood(csr, torch.tensor([3]), FMIN, FMAX, TWO_HOP, g)
    assert nb.numel() > 5 and 3 not in nb.tolist()
    assert set(nb.tolist()) <= set(range(0, 41))


def test_two_hop_fill_is_only_for_low_degree_centres():
    src, dst, n = _star_graph()
    csr = CSR.from_edges(src, dst, n)
    g = torch.Generator().manual_seed(2)
    # with two_hop_degree=0 nobody extends: node 1 sees exactly its one neighbour
    cp, nb = sample_neighbourhood(csr, torch.tensor([1, 2]), FMIN, FMAX, 0, g)
    assert _by_centre(cp, nb, 2) == [[2], [3, 4]]
    # two_hop_degree=2: node 1 (deg 1) extends, node 2 (deg 2) does not
    cp, nb = sample_neighbourhood(csr, torch.tensor([1, 2]), FMIN, FMAX, 2, g)
    per = _by_centre(cp, nb, 2)
    assert len(per[0]) > 1 and sorted(per[1]) == [3, 4]


def test_nodes_without_neighbours_get_no_pairs_and_dead_ends_are_dropped():
    src, dst, n = _star_graph()
    csr = CSR.from_edges(src, dst, n)
    g = torch.Generator().manual_seed(3)
    cp, nb = sample_neighbourhood(csr, torch.tensor([50, 45, 44]), FMIN, FMAX, TWO_HOP, g)
    per = _by_centre(cp, nb, 3)
    assert per[0] == [] and per[1] == []  # isolated / sink nodes
    assert per[2] == [45]  # 44 -> 45, and 45 is a dead end: no 2-hop pairs
    cp, nb = sample_neighbourhood(csr, torch.tensor([], dtype=torch.long), FMIN, FMAX, TWO_HOP, g)
    assert cp.numel() == 0 and nb.numel() == 0


def test_cold_start_fallback_samples_neighbours_of_same_group_products():
    src, dst, n = _star_graph()
    csr = CSR.from_edges(src, dst, n)
    group = torch.full((n,), -1, dtype=torch.long)
    group[[50, 1, 2]] = 0  # isolated node 50 shares group 0 with nodes 1 and 2
    group[45] = 1  # node 45 (a sink) is alone in group 1: nothing to borrow
    members = group_members(group, csr.degree() > 0, 2)
    g = torch.Generator().manual_seed(4)
    cp, nb = sample_neighbourhood(
        csr, torch.tensor([50, 45]), FMIN, FMAX, TWO_HOP, g, fallback=(group, members)
    )
    per = _by_centre(cp, nb, 2)
    assert len(per[0]) == FMAX and set(per[0]) <= {2, 3, 4}  # out-neighbours of 1 and 2
    assert per[1] == []


def test_seeded_generator_makes_sampling_reproducible():
    src, dst, n = _star_graph()
    csr = CSR.from_edges(src, dst, n)
    centres = torch.tensor([0, 1, 3, 0, 2])
    a = sample_neighbourhood(csr, centres, FMIN, FMAX, TWO_HOP, torch.Generator().manual_seed(9))
    b = sample_neighbourhood(csr, centres, FMIN, FMAX, TWO_HOP, torch.Generator().manual_seed(9))
    c = sample_neighbourhood(csr, centres, FMIN, FMAX, TWO_HOP, torch.Generator().manual_seed(10))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    # duplicate centres are sampled independently (hub 0 appears twice)
    per = _by_centre(*a, 5)
    assert per[0] != per[3]


def test_hub_sampling_is_uniform_over_its_neighbours():
    src, dst, n = _star_graph()
    csr = CSR.from_edges(src, dst, n)
    reps = 2000
    g = torch.Generator().manual_seed(5)
    _, nb = sample_neighbourhood(csr, torch.zeros(reps, dtype=torch.long), FMIN, FMAX, TWO_HOP, g)
    counts = torch.bincount(nb, minlength=41)[1:].double()
    expected = nb.numel() / 40
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 80, chi2  # 39 dof: the 99.99% quantile is ~80


@st.composite
def _graphs(draw):
    n = draw(st.integers(1, 25))
    m = draw(st.integers(0, 80))
    src = draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m))
    dst = draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m))
    centres = draw(st.lists(st.integers(0, n - 1), min_size=0, max_size=30))
    fmin = draw(st.integers(1, 6))
    fmax = draw(st.integers(fmin, 12))
    two_hop = draw(st.integers(0, 8))
    seed = draw(st.integers(0, 2**31 - 1))
    return n, src, dst, centres, fmin, fmax, two_hop, seed


@settings(max_examples=150, deadline=None)
@given(_graphs())
def test_sampler_invariants_on_random_graphs(case):
    n, src, dst, centres, fmin, fmax, two_hop, seed = case
    csr = CSR.from_edges(torch.tensor(src, dtype=torch.long), torch.tensor(dst, dtype=torch.long), n)
    nbrs = [Counter() for _ in range(n)]
    for u, v in zip(src, dst, strict=False):
        nbrs[u][v] += 1
    c = torch.tensor(centres, dtype=torch.long)
    cp, nb = sample_neighbourhood(csr, c, fmin, fmax, two_hop, torch.Generator().manual_seed(seed))
    assert cp.dtype == torch.long and nb.dtype == torch.long and cp.shape == nb.shape
    assert bool((cp[1:] >= cp[:-1]).all())
    if cp.numel():
        assert int(cp.min()) >= 0 and int(cp.max()) < len(centres)
        assert int(nb.min()) >= 0 and int(nb.max()) < n
    per = _by_centre(cp, nb, len(centres))
    for pos, u in enumerate(centres):
        got = Counter(per[pos])
        one_hop = nbrs[u]
        d = sum(one_hop.values())
        k = int(adaptive_fanout(torch.tensor([d]), fmin, fmax))
        assert sum(got.values()) <= max(k, 0)
        if d == 0:
            assert not got
        elif d >= two_hop:
            # only real neighbours, min(d, k) of them, never more copies than edges
            assert sum(got.values()) == min(d, k)
            assert all(got[v] <= one_hop[v] for v in got)
        else:
            # low degree: 1-hop neighbours (all of them when they fit the budget) plus 2-hop fill
            two_hop_set = {w for v in one_hop for w in nbrs[v]} - {u}
            assert set(got) <= set(one_hop) | two_hop_set
            if d <= k:
                assert all(got[v] >= one_hop[v] for v in one_hop)
