"""Degree-adaptive neighbourhood sampler: what a caller relies on."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nextbuy.domain.graph.fanout import FanoutRule, power_law_exponent
from nextbuy.domain.graph.sampler import (
    CSR,
    FALLBACK_FULL,
    group_members,
    relabel,
    sample_blocks,
    sample_neighbourhood,
)

FMIN, FMAX = 4, 20
POWER = FanoutRule("power_law", FMIN, FMAX, exponent=2.0)
FIXED = FanoutRule("fixed", FMIN, FMAX)


def _star_graph() -> tuple[torch.Tensor, torch.Tensor, int]:
    """Node 0 is a hub (0 -> 1..40); 1 -> 2; 2 -> 3, 4; 3 -> 0; 50 is isolated; 41..45 form a chain."""
    src = [0] * 40 + [1, 2, 2, 3] + [41, 42, 43, 44]
    dst = [*list(range(1, 41)), 2, 3, 4, 0, 42, 43, 44, 45]
    return torch.tensor(src), torch.tensor(dst), 51


def _star_csr() -> CSR:
    src, dst, n = _star_graph()
    return CSR.from_edges(src, dst, n)


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


# -- CSR ----------------------------------------------------------------------


def test_csr_from_edges_rows_are_sources_and_degrees_match():
    src, dst, n = _star_graph()
    csr = CSR.from_edges(src, dst, n)
    assert csr.rowptr.dtype == torch.long
    assert csr.col.dtype == torch.long
    assert csr.rowptr.shape == (n + 1,)
    assert csr.col.shape == (src.numel(),)
    nbrs = _neighbours(src, dst, n)
    for u in range(n):
        row = csr.col[csr.rowptr[u] : csr.rowptr[u + 1]].tolist()
        assert row == sorted(nbrs[u])
    assert csr.degree().tolist() == [len(x) for x in nbrs]
    assert csr.degree(torch.tensor([0, 2, 50])).tolist() == [40, 2, 0]
    # the in-direction is the same constructor with the roles swapped
    in_csr = CSR.from_edges(dst, src, n)
    assert in_csr.degree()[2].item() == 2
    assert in_csr.degree()[0].item() == 1


def test_csr_rejects_out_of_range_edges():
    with pytest.raises(ValueError, match="edges must lie in"):
        CSR.from_edges(torch.tensor([0, 5]), torch.tensor([1, 2]), 5)
    with pytest.raises(ValueError, match="edges must lie in"):
        CSR.from_edges(torch.tensor([0, -1]), torch.tensor([1, 2]), 5)


# -- the fanout rule ----------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    fmin=st.integers(1, 30),
    extra=st.integers(0, 40),
    exponent=st.floats(1.05, 6.0, allow_nan=False),
)
def test_power_law_budget_is_non_increasing_within_bounds_and_largest_for_isolated_nodes(
    fmin, extra, exponent
):
    rule = FanoutRule("power_law", fmin, fmin + extra, exponent)
    deg = torch.cat([torch.arange(0, 5000), torch.tensor([10**6, 10**9, 10**12])])
    k = rule.budget(deg)
    assert k.dtype == torch.long
    assert k.shape == deg.shape
    assert int(k.min()) >= fmin
    assert int(k.max()) <= fmin + extra
    assert bool((k[1:] <= k[:-1]).all()), "budget must be non-increasing in degree"
    assert int(k[0]) == fmin + extra  # a node with no neighbours gets the largest budget
    assert rule.two_hop


@pytest.mark.parametrize("exponent", [1.5, 2.0, 3.0])
def test_hubs_get_fanout_min_and_the_thinner_the_tail_the_faster_the_budget_falls(exponent):
    rule = FanoutRule("power_law", FMIN, FMAX, exponent)
    assert int(rule.budget(torch.tensor([10**12]))) == FMIN
    assert int(rule.budget(torch.tensor([1]))) < FMAX
    # a larger exponent (fewer hubs) shrinks the budget sooner
    deg = torch.arange(0, 200)
    steeper = FanoutRule("power_law", FMIN, FMAX, exponent + 1.0).budget(deg)
    assert bool((steeper <= rule.budget(deg)).all())


def test_fixed_rule_gives_every_node_fanout_max_and_no_two_hop_fill():
    deg = torch.tensor([0, 1, 5, 10**6])
    assert FIXED.budget(deg).tolist() == [FMAX] * 4
    assert not FIXED.two_hop
    assert FanoutRule("power_law", 7, 7).budget(deg).tolist() == [7] * 4


@pytest.mark.parametrize(
    "args",
    [("uniform", 1, 5, 3.0), ("power_law", 0, 5, 3.0), ("power_law", 6, 5, 3.0), ("power_law", 1, 5, 1.0)],
)
def test_fanout_rule_rejects_bad_settings(args):
    with pytest.raises(ValueError, match=r"fanout rule must be|fanout_min <= fanout_max|exponent must be >"):
        FanoutRule(*args)


# -- the power-law exponent -----------------------------------------------------


@pytest.mark.parametrize("alpha", [1.8, 2.2, 2.6, 3.0])
def test_power_law_exponent_recovers_the_exponent_of_a_discrete_power_law(alpha):
    degree = np.random.default_rng(0).zipf(alpha, 100_000)  # P(d) ~ d^-alpha, d >= 1
    # the exact discrete likelihood: unbiased from degree_min = 1 (what GraphIndex uses) on
    assert power_law_exponent(torch.as_tensor(degree)) == pytest.approx(alpha, abs=0.05)
    fitted = power_law_exponent(torch.as_tensor(degree), degree_min=6)
    assert fitted == pytest.approx(alpha, abs=0.1)
    # nodes below degree_min (isolated ones included) do not move the fit
    with_zeros = torch.as_tensor(np.concatenate([degree, np.zeros(5000, dtype=np.int64), [1, 2, 3]]))
    assert power_law_exponent(with_zeros, degree_min=6) == fitted


def test_power_law_exponent_is_a_valid_exponent_on_degenerate_input():
    assert power_law_exponent(torch.tensor([], dtype=torch.long)) == 3.0
    assert power_law_exponent(torch.tensor([0, 0, 7])) == 3.0  # fewer than two qualify
    for degree in (torch.ones(10, dtype=torch.long), torch.tensor([1, 1, 2, 50, 10**6])):
        alpha = power_law_exponent(degree)
        assert np.isfinite(alpha)
        assert alpha > 1.0
        FanoutRule("power_law", FMIN, FMAX, alpha)  # always usable by the rule
    with pytest.raises(ValueError, match="degree_min must be >= 1"):
        power_law_exponent(torch.tensor([1, 2, 3]), degree_min=0)


# -- sample_neighbourhood -------------------------------------------------------


def test_hub_gets_a_small_distinct_subset_of_real_neighbours():
    csr = _star_csr()
    g = torch.Generator().manual_seed(0)
    for rule in (POWER, FanoutRule("fixed", 3, 7)):
        cp, nb = sample_neighbourhood(csr, torch.tensor([0]), rule, g)
        k = int(rule.budget(torch.tensor([40])))
        assert nb.numel() == k < 40
        assert len(set(nb.tolist())) == k, "sampling from a large neighbourhood is without replacement"
        assert set(nb.tolist()) <= set(range(1, 41))
        assert cp.tolist() == [0] * k


def test_low_degree_nodes_see_more_than_their_degree_via_two_hops_under_power_law():
    csr = _star_csr()
    g = torch.Generator().manual_seed(1)
    # node 1 has one neighbour (2), whose neighbours are 3 and 4
    _, nb = sample_neighbourhood(csr, torch.tensor([1]), POWER, g)
    assert 1 < nb.numel() <= int(POWER.budget(torch.tensor([1])))
    assert nb.tolist().count(2) >= 1  # the 1-hop neighbour is always kept
    assert set(nb.tolist()) <= {2, 3, 4}
    # node 3 -> 0 (a hub): its 2-hop pool is the hub's neighbours; the walk never returns to 3 itself
    _cp, nb = sample_neighbourhood(csr, torch.tensor([3]), POWER, g)
    assert nb.numel() > 5
    assert 3 not in nb.tolist()
    assert set(nb.tolist()) <= set(range(0, 41))


def test_fixed_rule_and_full_neighbourhoods_never_fill_from_two_hops():
    csr = _star_csr()
    g = torch.Generator().manual_seed(2)
    for rule in (FIXED, None):
        cp, nb = sample_neighbourhood(csr, torch.tensor([1, 2, 3]), rule, g)
        assert _by_centre(cp, nb, 3) == [[2], [3, 4], [0]]


def test_full_neighbourhoods_are_every_neighbour_in_order_and_need_no_generator():
    src, dst, n = _star_graph()
    csr = CSR.from_edges(src, dst, n)
    nbrs = _neighbours(src, dst, n)
    centres = torch.tensor([0, 2, 50, 0, 44])
    cp, nb = sample_neighbourhood(csr, centres, None)
    assert _by_centre(cp, nb, 5) == [sorted(nbrs[int(c)]) for c in centres]
    again = sample_neighbourhood(csr, centres, None, torch.Generator().manual_seed(123))
    assert torch.equal(cp, again[0])
    assert torch.equal(nb, again[1])


def test_nodes_without_neighbours_get_no_pairs_and_dead_ends_are_dropped():
    csr = _star_csr()
    g = torch.Generator().manual_seed(3)
    cp, nb = sample_neighbourhood(csr, torch.tensor([50, 45, 44]), POWER, g)
    per = _by_centre(cp, nb, 3)
    assert per[0] == []
    assert per[1] == []
    assert per[2] == [45]  # 44 -> 45, and 45 is a dead end: no 2-hop pairs
    cp, nb = sample_neighbourhood(csr, torch.tensor([], dtype=torch.long), POWER, g)
    assert cp.numel() == 0
    assert nb.numel() == 0


def _star_fallback(csr: CSR) -> tuple[torch.Tensor, CSR]:
    n = csr.n_nodes
    group = torch.full((n,), -1, dtype=torch.long)
    group[[50, 1, 2]] = 0  # isolated node 50 shares group 0 with nodes 1 and 2
    group[45] = 1  # node 45 (a sink) is alone in group 1: nothing to borrow
    return group, group_members(group, csr.degree() > 0, 2)


def test_cold_start_fallback_samples_neighbours_of_same_group_products():
    csr = _star_csr()
    fallback = _star_fallback(csr)
    g = torch.Generator().manual_seed(4)
    centres = torch.tensor([50, 45, 41, 50])
    for rule in (POWER, FIXED):
        cp, nb = sample_neighbourhood(csr, centres, rule, g, fallback=fallback)
        per = _by_centre(cp, nb, 4)
        assert len(per[0]) == FMAX
        assert set(per[0]) <= {2, 3, 4}
        assert per[1] == []  # no other member of its group has neighbours
        assert 42 in per[2]
        assert set(per[2]) <= {42, 43}
        assert len(per[3]) == FMAX
        assert set(per[3]) <= {2, 3, 4}
    # without a fallback the same centres get nothing
    cp, nb = sample_neighbourhood(csr, torch.tensor([50]), POWER, g)
    assert nb.numel() == 0


def test_full_neighbourhoods_use_a_fixed_fallback_draw():
    csr = _star_csr()
    fallback = _star_fallback(csr)
    a = sample_neighbourhood(csr, torch.tensor([50, 2]), None, fallback=fallback)
    b = sample_neighbourhood(
        csr, torch.tensor([50, 2]), None, torch.Generator().manual_seed(7), fallback=fallback
    )
    assert torch.equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    per = _by_centre(*a, 2)
    assert len(per[0]) == FALLBACK_FULL
    assert set(per[0]) <= {2, 3, 4}
    assert per[1] == [3, 4]


def test_seeded_generator_makes_sampling_reproducible():
    csr = _star_csr()
    centres = torch.tensor([0, 1, 3, 0, 2])
    a = sample_neighbourhood(csr, centres, POWER, torch.Generator().manual_seed(9))
    b = sample_neighbourhood(csr, centres, POWER, torch.Generator().manual_seed(9))
    c = sample_neighbourhood(csr, centres, POWER, torch.Generator().manual_seed(10))
    assert torch.equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    # duplicate centres are sampled independently (hub 0 appears twice)
    per = _by_centre(*a, 5)
    assert per[0] != per[3]


def test_hub_sampling_is_uniform_over_its_neighbours():
    csr = _star_csr()
    reps = 2000
    g = torch.Generator().manual_seed(5)
    _, nb = sample_neighbourhood(csr, torch.zeros(reps, dtype=torch.long), POWER, g)
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
    seed = draw(st.integers(0, 2**31 - 1))
    return n, src, dst, seed


@st.composite
def _rules(draw):
    """A fanout rule, or None (full neighbourhoods)."""
    kind = draw(st.sampled_from(["power_law", "fixed", None]))
    if kind is None:
        return None
    fmin = draw(st.integers(1, 6))
    fmax = draw(st.integers(fmin, 12))
    return FanoutRule(kind, fmin, fmax, draw(st.floats(1.1, 4.0)))


def _multisets(n: int, src: list[int], dst: list[int]) -> list[Counter]:
    nbrs = [Counter() for _ in range(n)]
    for u, v in zip(src, dst, strict=False):
        nbrs[u][v] += 1
    return nbrs


@settings(max_examples=200, deadline=None)
@given(_graphs(), st.lists(st.integers(0, 24), max_size=30), _rules())
def test_sampler_invariants_on_random_graphs(case, raw_centres, rule):
    n, src, dst, seed = case
    centres = [c % n for c in raw_centres]
    csr = CSR.from_edges(torch.tensor(src, dtype=torch.long), torch.tensor(dst, dtype=torch.long), n)
    nbrs = _multisets(n, src, dst)
    c = torch.tensor(centres, dtype=torch.long)
    cp, nb = sample_neighbourhood(csr, c, rule, torch.Generator().manual_seed(seed))
    assert cp.dtype == torch.long
    assert nb.dtype == torch.long
    assert cp.shape == nb.shape
    assert bool((cp[1:] >= cp[:-1]).all())
    if cp.numel():
        assert int(cp.min()) >= 0
        assert int(cp.max()) < len(centres)
        assert int(nb.min()) >= 0
        assert int(nb.max()) < n
    again = sample_neighbourhood(csr, c, rule, torch.Generator().manual_seed(seed))
    assert torch.equal(cp, again[0])
    assert torch.equal(nb, again[1])
    per = _by_centre(cp, nb, len(centres))
    for pos, u in enumerate(centres):
        got = Counter(per[pos])
        one_hop = nbrs[u]
        d = sum(one_hop.values())
        if rule is None:
            assert per[pos] == sorted(one_hop.elements())  # exactly every neighbour, in order
            continue
        k = int(rule.budget(torch.tensor([d])))
        assert sum(got.values()) <= k
        if d == 0:
            assert not got
        elif d >= k or not rule.two_hop:
            # only real neighbours, min(d, k) of them, never more copies than edges
            assert sum(got.values()) == min(d, k)
            assert all(got[v] <= one_hop[v] for v in got)
        else:
            # power law, below budget: all 1-hop neighbours plus a 2-hop fill (same direction, never u)
            two_hop = {w for v in one_hop for w in nbrs[v]} - {u}
            assert all(got[v] >= one_hop[v] for v in one_hop)
            extra = got - one_hop
            assert set(extra) <= two_hop
            if not two_hop:
                assert got == one_hop


# -- sample_blocks ----------------------------------------------------------------


def _check_blocks(n, src, dst, seeds, n_layers, rules, input_nodes, blocks):
    """Every invariant a layer relies on; returns the node ids of every layer (input first)."""
    nbrs_out, nbrs_in = _multisets(n, src, dst), _multisets(n, dst, src)
    edges = set(zip(src, dst, strict=False))
    paths2 = {(u, w) for u, v in edges for (x, w) in edges if x == v and w != u}
    assert len(blocks) == n_layers
    assert bool((input_nodes[1:] > input_nodes[:-1]).all()), "input nodes are sorted and unique"
    layers = [input_nodes.tolist()]
    for block in blocks:
        below = layers[-1]
        assert block.self_pos.shape == (block.n_dst,)
        for name in ("self_pos", "out_src", "in_src"):
            idx = getattr(block, name)
            assert idx.dtype == torch.long
            assert idx.numel() == 0 or 0 <= int(idx.min()) <= int(idx.max()) < len(below)
        for name in ("out_dst", "in_dst"):
            idx = getattr(block, name)
            assert idx.numel() == 0 or 0 <= int(idx.min()) <= int(idx.max()) < block.n_dst
        here = [below[i] for i in block.self_pos.tolist()]
        # the layer below holds exactly the destinations and the neighbours they read from
        used = (
            set(here) | {below[i] for i in block.out_src.tolist()} | {below[i] for i in block.in_src.tolist()}
        )
        assert used == set(below)
        for direction, dsts, srcs in (
            ("out", block.out_dst, block.out_src),
            ("in", block.in_dst, block.in_src),
        ):
            for d_pos, s_pos in zip(dsts.tolist(), srcs.tolist(), strict=True):
                centre, neighbour = here[d_pos], below[s_pos]
                pair = (centre, neighbour) if direction == "out" else (neighbour, centre)
                if rules is None or not rules[0 if direction == "out" else 1].two_hop:
                    assert pair in edges, (direction, pair)
                else:
                    assert pair in edges or pair in paths2, (direction, pair)
        if rules is not None and not rules[0].two_hop:  # fixed: min(d, k) real out-neighbours each
            counts = torch.bincount(block.out_dst, minlength=block.n_dst).tolist()
            k = rules[0].fanout_max
            assert counts == [min(sum(nbrs_out[v].values()), k) for v in here]
        if rules is None:
            counts = torch.bincount(block.in_dst, minlength=block.n_dst).tolist()
            assert counts == [sum(nbrs_in[v].values()) for v in here]
        layers.append(here)
    assert layers[-1] == list(seeds), "the last block's destinations are the seeds, in order"
    return layers


@settings(max_examples=120, deadline=None)
@given(
    _graphs(),
    st.lists(st.integers(0, 24), max_size=8, unique=True),
    st.integers(1, 3),
    _rules(),
    _rules(),
)
def test_blocks_pass_messages_along_real_edges_between_the_right_nodes(
    case, raw_seeds, n_layers, rule_out, rule_in
):
    n, src, dst, seed = case
    seeds = [s for s in raw_seeds if s < n]
    rules = None if rule_out is None or rule_in is None else (rule_out, rule_in)
    out_csr = CSR.from_edges(torch.tensor(src, dtype=torch.long), torch.tensor(dst, dtype=torch.long), n)
    in_csr = CSR.from_edges(torch.tensor(dst, dtype=torch.long), torch.tensor(src, dtype=torch.long), n)
    g = torch.Generator().manual_seed(seed)
    input_nodes, blocks = sample_blocks(
        out_csr, in_csr, torch.tensor(seeds, dtype=torch.long), n_layers, rules, g
    )
    _check_blocks(n, src, dst, seeds, n_layers, rules, input_nodes, blocks)


def test_full_blocks_on_a_small_graph_are_the_full_neighbourhoods():
    src, dst, n = _star_graph()
    out_csr, in_csr = CSR.from_edges(src, dst, n), CSR.from_edges(dst, src, n)
    seeds = [3, 41, 50]
    input_nodes, blocks = sample_blocks(out_csr, in_csr, torch.tensor(seeds), 2, None)
    layers = _check_blocks(n, src.tolist(), dst.tolist(), seeds, 2, None, input_nodes, blocks)
    # 3 -> 0; 0 -> 3 and 2 -> 3; 41 -> 42; 50 is isolated
    assert layers[1] == [0, 2, 3, 41, 42, 50]
    assert layers[0] == sorted({*range(0, 5), *range(5, 41), 41, 42, 43, 50})
    top = blocks[-1]
    assert top.out_dst.tolist() == [0, 1]
    assert [layers[1][i] for i in top.out_src.tolist()] == [0, 42]
    assert top.in_dst.tolist() == [0, 0]
    assert [layers[1][i] for i in top.in_src.tolist()] == [0, 2]
    again = sample_blocks(out_csr, in_csr, torch.tensor(seeds), 2, None, torch.Generator().manual_seed(1))
    assert torch.equal(input_nodes, again[0])
    for a, b in zip(blocks, again[1], strict=True):
        assert a.n_dst == b.n_dst
        for name in ("self_pos", "out_dst", "out_src", "in_dst", "in_src"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_blocks_use_the_cold_start_fallback_per_direction():
    src, dst, n = _star_graph()
    out_csr, in_csr = CSR.from_edges(src, dst, n), CSR.from_edges(dst, src, n)
    fallback = _star_fallback(out_csr)
    rules = (POWER, POWER)
    g = torch.Generator().manual_seed(6)
    input_nodes, blocks = sample_blocks(
        out_csr, in_csr, torch.tensor([50]), 1, rules, g, fallbacks=(fallback, None)
    )
    (block,) = blocks
    assert block.out_dst.numel() == FMAX
    assert block.in_dst.numel() == 0
    assert {input_nodes[i].item() for i in block.out_src.tolist()} <= {2, 3, 4}


@settings(max_examples=60, deadline=None)
@given(
    n_nodes=st.integers(1, 300),
    parts=st.lists(st.lists(st.integers(0, 10**6), max_size=120), min_size=1, max_size=4),
)
def test_relabel_is_unique_then_searchsorted_on_both_paths(n_nodes, parts):
    # both of its paths (sorting for few ids, a marker per id for many) give the same answer
    tensors = [torch.tensor([i % n_nodes for i in p], dtype=torch.long) for p in parts]
    nodes, positions = relabel(tensors, n_nodes)
    expected = torch.unique(torch.cat(tensors))
    assert torch.equal(nodes, expected)
    for part, position in zip(tensors, positions, strict=True):
        assert torch.equal(position, torch.searchsorted(expected, part))
        assert torch.equal(nodes[position], part)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n_centres=st.integers(1, 40))
def test_sampled_pairs_are_grouped_by_centre_in_part_order(seed, n_centres):
    # the merge of the sampler's parts (1-hop, subsets, 2-hop fill, fallback) keeps each centre's
    # pairs together and in increasing centre order, as the aggregation expects
    src, dst, n = _star_graph()
    csr = CSR.from_edges(src, dst, n)
    members = group_members(torch.arange(n) % 3, csr.degree() > 0)
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randint(0, n, (n_centres,), generator=generator)
    centre_pos, neighbour = sample_neighbourhood(
        csr, centres, POWER, generator, fallback=(torch.arange(n) % 3, members)
    )
    assert bool((centre_pos[1:] >= centre_pos[:-1]).all())
    degree = csr.degree(centres)
    budget = POWER.budget(degree)
    for c in range(n_centres):  # a centre's whole 1-hop neighbourhood comes first, then its fill
        d = int(degree[c])
        mine = neighbour[centre_pos == c].tolist()
        if 0 < d <= int(budget[c]):
            assert mine[:d] == sorted(_neighbours(src, dst, n)[int(centres[c])])
