"""Index arithmetic the training terms share."""

from __future__ import annotations

import torch


def first_occurrences(values: torch.Tensor) -> torch.Tensor:
    """[n] bool: True where a value appears for the first time in the 1-D `values` (deterministic:
    the smallest position of each value, by a scatter of positions onto the distinct values)."""
    distinct, inverse = torch.unique(values, return_inverse=True)
    positions = torch.arange(len(values), device=values.device)
    first = torch.full((len(distinct),), len(values), dtype=torch.long, device=values.device)
    first = first.scatter_reduce(0, inverse, positions, "amin")
    return positions == first[inverse]
