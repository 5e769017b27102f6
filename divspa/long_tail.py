"""Which items are long-tail: one rule for the evaluation's long-tail share and augment's tail quota.

Torch-free, so Spark's Python workers can use it without importing torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def long_tail_mask(item_counts: Any, share: float) -> np.ndarray:
    """[num_items + 1] booleans: item index i is long-tail when it is not among the most clicked
    (1 - share) of items (ties broken by index); index 0 (padding) is False."""
    counts = np.asarray(item_counts, dtype=np.int64)
    order = np.lexsort((np.arange(len(counts)), -counts))  # most clicked first
    head = int(round((1 - share) * len(counts)))
    mask = np.ones(len(counts) + 1, dtype=bool)
    mask[0] = False
    mask[order[:head] + 1] = False
    return mask
