"""Data-parallel training over processes and hosts: torchrun's environment to a
:class:`~nextbuy.domain.graph.collective.Collective`.

``torchrun`` starts one process per rank with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`collective` joins them into
``torch.distributed``'s default process group for the duration of a ``with`` block.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from nextbuy.domain.graph.collective import SINGLE, Collective

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launched_ranks(environ: Mapping[str, str] = os.environ) -> int:
    """How many processes torchrun started for this run (1 without torchrun)."""
    return int(environ["WORLD_SIZE"]) if all(k in environ for k in TORCHRUN_ENV) else 1


def backend_name(backend: str) -> str:
    """``auto``: NCCL where CUDA is, else gloo."""
    if backend != "auto":
        return backend
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


@contextmanager
def collective(enabled: bool, backend: str, environ: Mapping[str, str] = os.environ) -> Iterator[Collective]:
    """This process's rank among torchrun's when ``enabled`` (one process otherwise, no process
    group).  Several ranks without ``enabled`` are refused: each would train alone and write
    the same outputs."""
    ranks = launched_ranks(environ)
    if not enabled or ranks == 1:
        if ranks > 1:
            raise RuntimeError(
                f"this process is one of {ranks} torchrun ranks but train.distributed is false: "
                "set it to true, or run the stage without torchrun"
            )
        yield SINGLE
        return
    import torch
    import torch.distributed as dist

    name, local = backend_name(backend), int(environ["LOCAL_RANK"])
    device = "cpu"
    if name == "nccl":  # the model trains on the CPU; NCCL carries its gradients through this GPU
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group(name, rank=int(environ["RANK"]), world_size=ranks)
    try:
        yield Collective(int(environ["RANK"]), ranks, device)
    finally:
        dist.destroy_process_group()
