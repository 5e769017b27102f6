"""What several training processes share: gradient averaging through DDP, sums and decisions."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def step_fn(model: torch.nn.Module, loss: Callable[[pa.Table], torch.Tensor], world_size: int) -> Callable:
    """The batch objective; across ranks it runs through DDP, whose backward averages the gradients."""
    if world_size == 1:
        return loss
    return DistributedDataParallel(Objective(model, loss), forward_sync_buffers=False)  # buffers: constants


def sum_over_ranks(world_size: int, *values: float) -> list[float]:
    """Sums over ranks (identity in one process)."""
    if world_size == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def from_rank0(world_size: int, value: float) -> float:
    """Rank 0's value on every rank: rank 0 validates, every rank then takes the same decision."""
    if world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.broadcast(t, src=0)
    return float(t.item())


class Objective(torch.nn.Module):
    """The trainer's batch loss as a module, so DistributedDataParallel can wrap it: DDP hooks the
    model's parameters (registered here) and its forward is the objective, Eq. 1 or Eq. 3."""

    def __init__(self, model: torch.nn.Module, loss: Callable[[pa.Table], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self._loss = loss  # a bound method, not a module: nothing else is registered

    def forward(self, table: pa.Table) -> torch.Tensor:
        return self._loss(table)
