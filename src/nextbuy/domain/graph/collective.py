"""What data-parallel training needs from its processes: who this one is, how many there are, and
a few collective operations (sum, broadcast, agree) over ``torch.distributed``.

A :class:`Collective` of one process (:data:`SINGLE`) makes every operation a no-op, so the
trainer runs one code path either way.  With more, ``torch.distributed``'s default process group
must already be initialised: that (and reading torchrun's environment) is the caller's job
(``nextbuy.mlops.distributed``); nothing here reads the environment.

Gradients are summed by hand rather than by ``DistributedDataParallel``: BLADE is driven through
``encode``/``conversion_logit``/``link_score``, not ``forward``; which parameters take part changes
from step to step (a link-only step leaves the conversion head out, a rank whose share of a step
is empty skips its backward pass); and the step's loss is normalised by the whole step's weight,
so the per-rank gradients must be summed, not averaged.  One flat all-reduce per step, as DDP's
buckets would do; the id table's row-sparse gradient rides in it dense, with a mask of the rows
touched (see :meth:`Collective.sum_gradients`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class Collective:
    """The ranks of one training run; ``device`` holds the buffers the backend sends
    (``"cpu"`` for gloo, ``"cuda:<local rank>"`` for NCCL: the model itself stays on the CPU)."""

    rank: int
    world_size: int
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {self.rank} of {self.world_size}")

    def sum_(self, values: Tensor) -> Tensor:
        """``values`` summed over the ranks, in place."""
        if self.world_size > 1:
            buffer = values.to(self.device)
            dist.all_reduce(buffer)
            values.copy_(buffer)
        return values

    def broadcast_(self, values: Tensor) -> Tensor:
        """Rank 0's ``values`` on every rank, in place."""
        if self.world_size > 1:
            buffer = values.to(self.device)
            dist.broadcast(buffer, src=0)
            values.copy_(buffer)
        return values

    def sum_floats(self, *values: float) -> list[float]:
        return self.sum_(torch.tensor(values, dtype=torch.float64)).tolist()

    def broadcast_float(self, value: float) -> float:
        return float(self.broadcast_(torch.tensor([value], dtype=torch.float64))[0])

    def agree(self, values: Sequence[float]) -> bool:
        """Whether every rank passed the same ``values`` (the same answer on every rank)."""
        if self.world_size == 1:
            return True
        v = torch.tensor(values, dtype=torch.float64)
        both = torch.cat([v, -v]).to(self.device)
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        high, neg_low = both.cpu().chunk(2)
        return bool(torch.equal(high, -neg_low))

    def broadcast_parameters(self, module: nn.Module) -> None:
        """Rank 0's weights in every rank's ``module``."""
        if self.world_size == 1:
            return
        params = list(module.parameters())
        flat = self.broadcast_(torch.cat([p.detach().reshape(-1) for p in params]))
        with torch.no_grad():
            for p, part in zip(params, flat.split([p.numel() for p in params]), strict=True):
                p.copy_(part.view_as(p))

    def sum_gradients(self, params: Sequence[nn.Parameter], sparse: Sequence[bool] | None = None) -> None:
        """Each gradient summed over the ranks (a missing one counts as zero); a parameter that no
        rank's loss reached keeps no gradient, as in one process (Adam then leaves it alone).

        ``sparse[i]``: parameter ``i`` takes row-sparse gradients (``nn.Embedding(sparse=True)``);
        its sum is sparse again over the rows any rank touched, so lazy Adam moves the same rows
        as in one process.  It travels dense (one flat all-reduce), so a step's traffic grows with
        the table; fine for the ranks of one host, the all-gather of rows is the next step."""
        if self.world_size == 1:
            return
        sparse = [False] * len(params) if sparse is None else list(sparse)
        grads, touched = [], []
        for p, is_sparse in zip(params, sparse, strict=True):
            grad = p.grad
            if is_sparse:  # every rank sends a row mask, touched rows or not: the layout must agree
                rows = p.new_zeros(p.shape[0])
                if grad is not None:
                    grad = grad.coalesce()
                    rows[grad.indices()[0]] = 1.0
                    grad = grad.to_dense()
                touched.append(rows)
            grads.append(grad.reshape(-1) if grad is not None else p.new_zeros(p.numel()))
        reached = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype)
        flat = self.sum_(torch.cat([*grads, *touched, reached]))
        sizes = [p.numel() for p in params] + [t.numel() for t in touched] + [len(params)]
        parts = flat.split(sizes)
        row_masks = iter(parts[len(params) : len(params) + len(touched)])
        hits = parts[-1].tolist()
        for p, part, hit, is_sparse in zip(params, parts[: len(params)], hits, sparse, strict=True):
            dense = part.view_as(p)
            mask = next(row_masks) if is_sparse else None
            if hit <= 0:
                p.grad = None
            elif mask is not None:
                rows = torch.nonzero(mask > 0).reshape(-1)
                p.grad = torch.sparse_coo_tensor(
                    rows.unsqueeze(0),
                    dense.index_select(0, rows),
                    p.shape,
                    is_coalesced=True,
                    check_invariants=False,
                )
            else:
                p.grad = dense.clone()


SINGLE = Collective(rank=0, world_size=1)  # one process: every operation a no-op
