"""Pair scoring from embedding moments: a hand-computed pair, direction, uncertainty, shapes, bad ids."""

from __future__ import annotations

import numpy as np
import pytest

from nextbuy.domain.graph.scoring import link_scores, pair_logit_moments, score_and_uncertainty


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def tiny() -> dict[str, np.ndarray]:
    """Two products, two dimensions: small enough to score by hand."""
    f32 = np.float32
    return {
        "s_mean": np.array([[1.0, 2.0], [0.5, -1.0]], f32),
        "s_var": np.array([[0.25, 0.5], [0.0, 0.0]], f32),
        "t_mean": np.array([[2.0, 0.0], [3.0, -1.0]], f32),
        "t_var": np.array([[0.0, 0.0], [0.5, 0.0]], f32),
        "head_w": np.array([0.5, 2.0], f32),
        "head_b": np.array([-1.0], f32),
    }


# Pair 0 -> 1 by hand:
#   mean = 0.5*1*3 + 2*2*(-1) - 1 = -3.5
#   var  = 0.25*(1²*0.5 + 3²*0.25 + 0.25*0.5) + 4*(2²*0 + 1²*0.5 + 0.5*0) = 0.71875 + 2 = 2.71875
HAND_MEAN, HAND_VAR = -3.5, 2.71875


def test_moments_of_one_pair_match_a_hand_computation():
    mean, var = pair_logit_moments(tiny(), [0], [1])
    assert mean[0] == pytest.approx(HAND_MEAN)
    assert var[0] == pytest.approx(HAND_VAR)


def test_score_and_uncertainty_of_one_pair_match_a_hand_computation():
    score, unc = score_and_uncertainty(tiny(), [0], [1])
    assert score.dtype == unc.dtype == np.float64
    assert score[0] == pytest.approx(sigmoid(HAND_MEAN / np.sqrt(1 + np.pi * HAND_VAR / 8)), rel=1e-6)
    assert unc[0] == pytest.approx(np.sqrt(HAND_VAR), rel=1e-6)


def test_pairs_are_directed_source_role_then_target_role():
    # 1 -> 0 uses s of 1 and t of 0: mean = 0.5*0.5*2 + 2*(-1)*0 - 1 = -0.5, all variances 0.
    score, unc = score_and_uncertainty(tiny(), [1], [0])
    assert unc[0] == 0.0
    assert score[0] == pytest.approx(sigmoid(-0.5))
    assert score[0] != pytest.approx(score_and_uncertainty(tiny(), [0], [1])[0][0])


def test_zero_variance_gives_zero_uncertainty_and_the_plain_sigmoid():
    m = tiny()
    m["s_var"], m["t_var"] = np.zeros_like(m["s_var"]), np.zeros_like(m["t_var"])
    src, dst = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    score, unc = score_and_uncertainty(m, src, dst)
    assert (unc == 0).all()
    np.testing.assert_allclose(score, sigmoid(pair_logit_moments(m, src, dst)[0]), rtol=1e-6)


def test_variance_of_one_side_alone_counts_through_the_other_sides_mean():
    # s var only, t mean 0 on every dimension: the logit is exactly b, whatever s is.
    m = tiny()
    m["t_mean"] = np.zeros_like(m["t_mean"])
    m["t_var"] = np.zeros_like(m["t_var"])
    score, unc = score_and_uncertainty(m, [0], [1])
    assert unc[0] == 0.0
    assert score[0] == pytest.approx(sigmoid(-1.0))


def test_more_variance_means_more_uncertainty_and_a_score_nearer_one_half():
    m = tiny()
    src, dst = np.array([0, 1, 1]), np.array([1, 1, 0])  # logit means -3.5, 1.75, -0.5
    score, unc = score_and_uncertainty(m, src, dst)
    wider = dict(m, s_var=m["s_var"] * 4 + 0.1, t_var=m["t_var"] * 4 + 0.1)
    score_w, unc_w = score_and_uncertainty(wider, src, dst)
    assert (unc_w > unc).all()
    assert (np.abs(score_w - 0.5) < np.abs(score - 0.5)).all()
    assert (np.sign(score_w - 0.5) == np.sign(score - 0.5)).all()  # shrinks, never flips the side


def test_score_approximates_the_expected_sigmoid_of_a_gaussian_logit():
    m = tiny()
    mean, var = pair_logit_moments(m, [0], [1])
    draws = np.random.default_rng(0).normal(mean[0], np.sqrt(var[0]), 400_000)
    score, _ = score_and_uncertainty(m, [0], [1])
    assert score[0] == pytest.approx(sigmoid(draws).mean(), abs=0.01)


def test_outputs_are_flat_per_pair_for_any_input_shape():
    m = tiny()
    src, dst = np.array([[0, 1], [1, 0]]), np.array([[1, 1], [0, 0]])
    score, unc = score_and_uncertainty(m, src, dst)
    assert score.shape == unc.shape == (4,)
    np.testing.assert_allclose(score, score_and_uncertainty(m, src.ravel(), dst.ravel())[0])
    empty = score_and_uncertainty(m, np.array([], dtype=int), np.array([], dtype=int))
    assert empty[0].shape == empty[1].shape == (0,)


@pytest.mark.parametrize(
    ("src", "dst"),
    [([0, 1], [1]), ([-1], [0]), ([0], [2])],
    ids=["length-mismatch", "negative-id", "id-past-the-end"],
)
def test_bad_pairs_are_refused(src, dst):
    with pytest.raises(ValueError, match=r"same length|node ids must lie in"):
        score_and_uncertainty(tiny(), src, dst)
    with pytest.raises(ValueError, match=r"same length|node ids must lie in"):
        link_scores(tiny(), src, dst)


def test_link_scores_are_the_plain_dot_product_of_source_and_target_means():
    m = tiny()
    # 0 -> 1: [1, 2].[3, -1] = 1; 1 -> 0: [0.5, -1].[2, 0] = 1; 0 -> 0: [1, 2].[2, 0] = 2
    np.testing.assert_allclose(link_scores(m, [0, 1, 0], [1, 0, 0]), [1.0, 1.0, 2.0])
    assert link_scores(m, [0], [1]).dtype == np.float32


def members() -> dict[str, np.ndarray]:
    """Three members of two products in two dimensions, heads folded into t (member form)."""
    rng = np.random.default_rng(0)
    return {
        "s_members": rng.normal(size=(3, 2, 2)).astype(np.float32),
        "t_members": rng.normal(size=(3, 2, 2)).astype(np.float32),
        "b_members": np.array([-1.0, 0.0, 0.5], np.float32),
    }


def test_member_form_gives_the_mean_and_unbiased_variance_of_the_members_logits():
    m = members()
    src, dst = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    s, t = m["s_members"][:, src], m["t_members"][:, dst]
    logits = (s * t).sum(-1) + m["b_members"][:, None]  # [members, pairs]
    mean, var = pair_logit_moments(m, src, dst)
    np.testing.assert_allclose(mean, logits.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, logits.var(0, ddof=1), rtol=1e-5, atol=1e-6)
    score, unc = score_and_uncertainty(m, src, dst)
    np.testing.assert_allclose(unc, np.sqrt(logits.var(0, ddof=1)), rtol=1e-5)
    # Identical members: no spread, the member's own sigmoid.
    same = {k: np.repeat(v[:1], 3, axis=0) for k, v in m.items()}
    score, unc = score_and_uncertainty(same, src, dst)
    assert unc.max() < 1e-3  # float32 rounding of the members' mean
    np.testing.assert_allclose(score, sigmoid(logits[0]), rtol=1e-5)
    with pytest.raises(ValueError, match="node ids"):
        pair_logit_moments(m, [2], [0])
