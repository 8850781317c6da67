"""The threshold study's classic deep ensemble (nextbuy_lab.deep_ensemble): members trained from
scratch on their own seeds and bootstraps, their moments kept per member."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nextbuy.config import IngestConfig, LabelDelayConfig, TrainConfig, with_changes
from nextbuy.domain.graph.blade import embed, pair_logit_moments
from nextbuy.stages import ingest, label_delay, train
from nextbuy_lab.deep_ensemble import independent_members, member_moments
from tests.domain.graph import test_blade
from tests.domain.graph.test_blade import EXPORT

link_only = test_blade.link_only  # the trained link-only model of the BLADE tests


@pytest.fixture(scope="module")
def tiny_weighted():
    from tests.conftest import TINY_PARAMS

    data = ingest.ingest(IngestConfig.model_validate(TINY_PARAMS["ingest"]))
    weighted, models = label_delay.weigh(
        data.impressions, data.snapshot, LabelDelayConfig.model_validate(TINY_PARAMS["label_delay"]),
        data.products, data.edges,
    )  # fmt: skip
    return data, weighted, models["importance"].family


def test_independent_members_are_the_model_then_fresh_fits_on_their_own_seeds_and_bootstraps(
    tiny_weighted, tiny_params, monkeypatch
):
    """A classic deep ensemble: the trained model first, then each member trained from scratch with
    its own seed and a Poisson(1) resample of the training impressions (the same in every round)."""
    from nextbuy.domain.graph import blade

    data, weighted, family = tiny_weighted
    cfg = TrainConfig.model_validate(
        {**tiny_params["train"], "uncertainty": "mc_dropout", "ensemble_members": 3, "epochs": 1}
    )
    fits = []
    training = blade.BladeTraining

    def recorded(graph, conv, **kwargs):
        fits.append((conv.weight.numpy().copy(), kwargs["schedule"].seed, kwargs["initial"]))
        return training(graph, conv, **kwargs)

    monkeypatch.setattr(blade, "BladeTraining", recorded)
    architecture = blade.Architecture.from_config(cfg)
    graph = train.build_graph(data.products, data.edges)
    base = object()  # never trained on: the first member is the model as given
    members = list(independent_members(base, graph, weighted, cfg, architecture,
                                       delay_family=family, progress=False))  # fmt: skip
    assert len(members) == 3
    assert members[0] is base
    assert members[1] is not members[2]
    rounds = cfg.em_rounds + 1
    assert len(fits) == 2 * rounds
    first_rounds = fits[::rounds]
    assert first_rounds[0][2] is None
    assert first_rounds[1][2] is None
    assert first_rounds[0][1] != first_rounds[1][1]  # own seeds
    first_member_rows, _ = train.training_rows(weighted, with_changes(cfg, seed=cfg.seed + 7919))
    plain = train.conversion_weights(first_member_rows, cfg.weighting)
    counts = first_rounds[0][0] / np.where(plain > 0, plain, 1.0)
    resampled = counts[plain > 0]
    assert np.allclose(resampled, np.round(resampled))
    assert (resampled == 0).mean() == pytest.approx(np.exp(-1), abs=0.05)
    # Each member still fits: its own parameters, not the others'.
    a, b = (m.state_dict() for m in members[1:])
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_member_moments_keep_each_members_embeddings_with_its_head_folded_in(link_only):
    import copy

    model, graph = link_only["model"], link_only["graph"]
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.head_w.mul_(-2.0)
        twin.head_b.add_(1.0)
    moments = member_moments(iter([model, twin]), graph, chunk=EXPORT["chunk"])
    assert moments["s_members"].shape == (2, graph.n_nodes, model.dim) == moments["t_members"].shape
    u, v = np.arange(0, 50), np.arange(50, 100)
    s, t = embed(model, graph, chunk=EXPORT["chunk"])
    logits = [m.conversion_logit(s[u], t[v]).detach().numpy() for m in (model, twin)]
    mean, var = pair_logit_moments(moments, u, v)
    # Unaligned members are never averaged per coordinate: each member's own logit, then the spread.
    np.testing.assert_allclose(mean, np.mean(logits, axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(var, np.var(logits, axis=0, ddof=1), rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match=">= 2 members"):
        member_moments([model], graph, chunk=EXPORT["chunk"])
