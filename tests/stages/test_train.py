"""train stage core: deterministic, and importance weighting uses the delay-corrected weights."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd

from nextbuy.config import IngestConfig, LabelDelayConfig, TrainConfig
from nextbuy.stages import ingest, label_delay, train
from tests.helpers import config


def test_same_inputs_same_embeddings(tiny_params):
    data = ingest.ingest(IngestConfig.model_validate(tiny_params["ingest"]))
    weighted, _ = label_delay.weigh(
        data.impressions, data.snapshot, LabelDelayConfig.model_validate(tiny_params["label_delay"])
    )
    cfg = TrainConfig.model_validate(tiny_params["train"])
    _, a, history = train.fit(data.products, data.edges, weighted, cfg, progress=False)
    _, b, _ = train.fit(data.products, data.edges, weighted, cfg, progress=False)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert len(history) == cfg.epochs and np.isfinite(history[-1]["conv_loss"])
    assert a["s_mean"].shape == (len(data.products), cfg.embedding_dim)


def test_weighting_choice_selects_the_weight_column():
    rows = pd.DataFrame({"weight_iw": [0.5, 2.0], "weight_naive": [1.0, 1.0]})
    np.testing.assert_array_equal(train.conversion_weights(rows, "importance"), [0.5, 2.0])
    np.testing.assert_array_equal(train.conversion_weights(rows, "naive"), [1.0, 1.0])


def test_blade_arguments_carry_every_model_knob_of_the_train_section():
    cfg = config(
        "train",
        embedding_dim=24,
        fanout_min=3,
        dropout=0.1,
        epochs=7,
        lr=0.02,
        mc_samples=5,
        export_chunk=99,
        seed=11,
    )
    architecture, schedule, export = train.blade_arguments(cfg)
    for name, value in {**asdict(architecture), **asdict(schedule)}.items():
        assert value == getattr(cfg, name), name
    assert export == {"mc_samples": 5, "chunk": 99, "seed": 11}
    # The rest choose the training data, in fit.
    used = set(asdict(architecture)) | set(asdict(schedule)) | {"mc_samples", "export_chunk"}
    assert set(TrainConfig.model_fields) - used == {"weighting", "shuffle_labels"}
