"""torchrun's environment to a collective: one process unless torchrun started several and the
params ask for it; several without ``train.distributed`` are refused."""

from __future__ import annotations

import pytest
import torch

from nextbuy.domain.graph.collective import SINGLE, Collective
from nextbuy.mlops import distributed

TORCHRUN = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}


@pytest.mark.parametrize(
    ("enabled", "environ"),
    [(False, {}), (True, {}), (True, {**TORCHRUN, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"})],
)
def test_one_process_gets_the_single_collective_and_no_process_group(enabled, environ):
    with distributed.collective(enabled, "gloo", environ) as group:
        assert group is SINGLE
        assert not torch.distributed.is_initialized()


def test_several_ranks_without_distributed_training_are_refused():
    refused = pytest.raises(RuntimeError, match=r"one of 2 torchrun ranks but train.distributed is false")
    with refused, distributed.collective(False, "auto", TORCHRUN):
        pass


def test_torchrun_env_counts_only_when_complete():
    assert distributed.launched_ranks(TORCHRUN) == 2
    assert distributed.launched_ranks({"WORLD_SIZE": "4"}) == 1


def test_auto_backend_is_nccl_only_where_cuda_is(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.backend_name("auto") == "gloo"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert distributed.backend_name("auto") == "nccl"
    assert distributed.backend_name("gloo") == "gloo"


def test_a_single_collective_changes_nothing():
    values = torch.tensor([1.5, -2.0])
    assert SINGLE.sum_(values) is values
    assert values.tolist() == [1.5, -2.0]
    assert SINGLE.broadcast_float(3.25) == 3.25
    assert SINGLE.sum_floats(1.0, 2.0) == [1.0, 2.0]
    assert SINGLE.agree([1.0, 2.0])
    with pytest.raises(ValueError, match="rank"):
        Collective(rank=2, world_size=2)
