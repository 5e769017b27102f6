"""CatchUpAdam: dense Adam's trajectory at the cost of the rows a batch looks up."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from divspa.config import load_config
from divspa.models.catchup_adam import CatchUpAdam
from divspa.models.optimizers import make_optimizer

ROWS, DIM = 300, 8


class Toy(nn.Module):
    """Two tables looked up by ids and by padded lists (as the towers do) and a dense layer."""

    def __init__(self) -> None:
        super().__init__()
        self.ids = nn.Embedding(ROWS, DIM, padding_idx=0)
        self.history = nn.Embedding(ROWS, DIM, padding_idx=0)
        self.dense = nn.Linear(DIM, DIM)

    def forward(self, ids: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return (self.dense(self.ids(ids)) * self.history(history).mean(1)).sum(1)


def train(kind: str, steps: int, eps: float) -> tuple[Toy, list[torch.optim.Optimizer]]:
    torch.manual_seed(0)
    model = Toy()
    g = torch.Generator().manual_seed(1)
    dense = torch.optim.Adam(model.dense.parameters(), lr=1e-2, eps=eps)
    if kind == "adam":
        opts = [torch.optim.Adam(model.parameters(), lr=1e-2, eps=eps)]
    elif kind == "lazy":
        model.ids.sparse = model.history.sparse = True
        opts = [torch.optim.SparseAdam([model.ids.weight, model.history.weight], lr=1e-2, eps=eps), dense]
    else:
        opts = [CatchUpAdam([model.ids, model.history], lr=1e-2, eps=eps), dense]
    for _ in range(steps):
        # Skewed ids: some rows every step, most rarely, some skipped for long stretches.
        ids = torch.randint(1, 30, (16,), generator=g) * torch.randint(1, 10, (16,), generator=g) % ROWS
        history = torch.randint(0, ROWS, (16, 5), generator=g)
        loss = ((model(ids, history) - torch.randn(16, generator=g)) ** 2).mean()
        for o in opts:
            o.zero_grad()
        loss.backward()
        for o in opts:
            o.step()
    return model, opts


def gap(a: nn.Module, b: nn.Module) -> float:
    return max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters(), strict=True))


def test_catch_up_adam_follows_dense_adam_where_lazy_adam_does_not():
    """The deferred zero-gradient steps (eps included) are dense Adam's to float rounding; lazy
    Adam (SparseAdam), which drops them, lands far away on the same batches."""
    adam, _ = train("adam", 120, eps=1e-8)
    catch_up, opts = train("catch_up", 120, eps=1e-8)
    lazy, _ = train("lazy", 120, eps=1e-8)
    stale = gap(adam, catch_up)
    opts[0].flush()
    assert gap(adam, catch_up) < 1e-4 < stale  # rows skipped by the last batches move only at flush
    assert gap(adam, lazy) > 1e-2


def test_a_lookup_reads_the_rows_dense_adam_would_hold():
    """A row skipped for many steps is brought up to date by the lookup itself, before the
    forward pass reads it: the loss on the next batch is dense Adam's."""
    adam, _ = train("adam", 60, eps=1e-8)
    catch_up, _ = train("catch_up", 60, eps=1e-8)
    ids, history = torch.arange(1, 41, 5), torch.arange(ROWS - 40, ROWS).reshape(8, 5)
    assert catch_up(ids, history).detach() == pytest.approx(adam(ids, history).detach(), abs=1e-5)


def test_the_padding_row_never_moves_and_dense_gradients_are_refused():
    model, opts = train("catch_up", 20, eps=1e-8)
    opts[0].flush()
    assert not model.ids.weight[0].any() and not model.history.weight[0].any()
    plain = nn.Embedding(5, 2)
    opt = CatchUpAdam([plain])
    plain.weight[torch.tensor([1, 2])].sum().backward()  # indexing the weight: a dense gradient
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()


def test_make_optimizer_keeps_tables_dense_where_sparse_gradients_cannot_go():
    """Small tables, coupled weight decay and DistributedDataParallel: the tables stay dense."""
    def names(*overrides: str) -> list[str]:
        cfg = load_config(None, ["train.sparse_min_rows=300", *overrides])
        return [type(o).__name__ for o in make_optimizer(Toy(), cfg.train).optimizers]

    assert names() == ["CatchUpAdam", "Adam"]
    assert names("train.sparse_min_rows=301") == ["Adam"]  # tables of 300 rows: dense is cheaper there
    assert names("train.sparse_embeddings=false") == ["Adam"]
    assert names("train.weight_decay=0.01") == ["Adam"]
    assert names("train.processes=2") == ["Adam"]


def test_detach_applies_what_was_deferred_and_hands_the_tables_back():
    """After detach the model holds dense Adam's values, its lookups no longer call the optimiser,
    and a step is refused until attach takes the tables over again."""
    adam, _ = train("adam", 40, eps=1e-8)
    catch_up, opts = train("catch_up", 40, eps=1e-8)
    opts[0].detach()
    assert gap(adam, catch_up) < 1e-4
    assert not catch_up.ids._forward_pre_hooks and not catch_up.ids.sparse
    with pytest.raises(RuntimeError, match="attach"):
        opts[0].step()
    opts[0].attach()
    assert catch_up.ids.sparse and len(catch_up.ids._forward_pre_hooks) == 1
    opts[0].attach()  # idempotent: still one hook
    assert len(catch_up.ids._forward_pre_hooks) == 1
