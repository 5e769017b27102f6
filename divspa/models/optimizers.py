"""The optimisers a trainer steps: dense Adam, and CatchUpAdam for large embedding tables."""

from __future__ import annotations

import torch

from divspa.config import TrainConfig
from divspa.models.catchup_adam import CatchUpAdam


class Optimizers:
    """Several optimisers stepped as one (dense Adam beside CatchUpAdam for the embeddings)."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def flush(self) -> None:
        """Apply the updates an optimiser defers (CatchUpAdam) before the whole model is read."""
        for o in self.optimizers:
            if isinstance(o, CatchUpAdam):
                o.flush()

    def attach(self) -> None:
        """Before training: CatchUpAdam takes its tables over (hooks, sparse gradients)."""
        for o in self.optimizers:
            if isinstance(o, CatchUpAdam):
                o.attach()

    def detach(self) -> None:
        """After training: the model is handed back as dense Adam would leave it, without hooks."""
        for o in self.optimizers:
            if isinstance(o, CatchUpAdam):
                o.detach()


def make_optimizer(model: torch.nn.Module, tcfg: TrainConfig) -> Optimizers:
    """Adam over every parameter; with `train.sparse_embeddings` (the default), the embedding
    tables of at least `train.sparse_min_rows` rows get sparse gradients and CatchUpAdam, which
    gives them dense Adam's updates at the cost of the rows a batch looks up.

    Why: dense gradients make every step zero, fill and Adam-update every row of every table, so
    a step's cost grows with the vocabulary (at 420k items ~364 ms of a 377 ms step:
    benchmarks/vocabulary.py). Coupled weight decay moves every row at every step by its own
    value and DistributedDataParallel all-reduces dense gradients, so with `train.weight_decay`
    or `train.processes > 1` the tables stay dense: the same updates, at the vocabulary's cost; and
    with `train.false_negatives`, whose moving-average teacher reads every row at every step."""
    sparse = tcfg.sparse_embeddings and not tcfg.weight_decay and tcfg.processes == 1 and not tcfg.false_negatives
    tables = [m for m in model.modules()
              if sparse and isinstance(m, torch.nn.Embedding) and m.num_embeddings >= tcfg.sparse_min_rows]
    if not tables:
        return Optimizers(torch.optim.Adam(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay))
    sparse_ids = {id(m.weight) for m in tables}
    dense = [p for p in model.parameters() if id(p) not in sparse_ids]
    opts: list[torch.optim.Optimizer] = [CatchUpAdam(tables, lr=tcfg.lr)]
    if dense:
        opts.append(torch.optim.Adam(dense, lr=tcfg.lr))
    return Optimizers(*opts)
