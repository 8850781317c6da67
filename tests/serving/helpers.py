"""What the serving tests share: a refusal's message, pair requests, retrieval settings and
top-K answers compared up to float32 rounding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException


def refusal(call, *args, **kwargs) -> str:
    """The message of the HTTP-400 MlflowException that ``call`` must raise."""
    with pytest.raises(MlflowException) as err:
        call(*args, **kwargs)
    assert err.value.get_http_status_code() == 400
    return err.value.message


def pairs(source, candidate=(1,)) -> pd.DataFrame:
    return pd.DataFrame({"source_id": list(source), "candidate_id": list(candidate) * len(source)})


def retrieval_settings(**changes):
    from tests.helpers import config

    return config("deploy.retrieval", **changes)


def assert_same_top_k(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Same rows, columns and types; scores equal up to float32 rounding (summed in another
    order), which the calibration can amplify near a steep isotonic step."""
    assert list(got.columns) == list(want.columns)
    assert got.dtypes.to_dict() == want.dtypes.to_dict()
    exact_columns = ["source_id", "rank", "candidate_id", "bucket", "decision", "cold_start"]
    pd.testing.assert_frame_equal(got[exact_columns], want[exact_columns])
    np.testing.assert_allclose(got[["score", "uncertainty"]], want[["score", "uncertainty"]], rtol=1e-5)
    np.testing.assert_allclose(got["prob_calibrated"], want["prob_calibrated"], atol=1e-3)
