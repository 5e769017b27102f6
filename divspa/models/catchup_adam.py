"""Adam for embedding tables whose cost follows the rows a batch looks up, not the vocabulary.

Dense Adam moves every row of a table at every step: a row the batch did not name has a zero
gradient, but its moments decay and it keeps sliding along its old update direction. So a step
costs O(vocabulary) (at 420k items ~364 ms of a 377 ms step, benchmarks/vocabulary.py). Lazy
Adam (torch's SparseAdam) skips those rows and so trains a different model: on ML-100K it cost
the DivSPA student its significant gain over base (docs/benchmarks/history.md, "What lazy Adam does to
the models").

`CatchUpAdam` defers the zero-gradient steps instead of dropping them. Over k skipped steps a row's
moments only decay (m b1^k, v b2^k), and the parameter moves by
    -lr * m / sqrt(v) * sum_{i=1..k} (b1 / sqrt(b2))^i * sqrt(1 - b2^j) / (1 - b1^j),   j = s + i,
which is a scalar per (last step s, k) times m / sqrt(v). The sum's terms fall off as 0.9005^i,
so it is cut where they drop below 1e-12 of the first (~260 terms). A row is brought up to date
just before a lookup reads it (a forward pre-hook on the table), so every forward pass sees the
values dense Adam would have; `flush` brings every row up to date before anything reads the
whole table (validation, checkpoints). What differs from dense Adam: eps, which dense Adam adds
to each skipped step's sqrt(v) with a factor that changes with the step, enters with the factor's
weighted mean over the skipped steps; and float rounding.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class CatchUpAdam(torch.optim.Optimizer):
    def __init__(self, tables: list[nn.Embedding], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 < b2 < 1 and b1 < math.sqrt(b2)):
            raise ValueError(f"CatchUpAdam needs 0 <= beta1 < sqrt(beta2) < 1, got {betas}")
        super().__init__([t.weight for t in tables], {"lr": lr, "betas": betas, "eps": eps})
        self.steps = 0
        self._sum, self._eps_sum = np.zeros(1024), np.zeros(1024)  # per step a row was last brought up at
        ratio = b1 / math.sqrt(b2)
        self.window = max(1, math.ceil(math.log(1e-12) / math.log(ratio))) if ratio > 0 else 1
        self._tables, self._was_sparse = tables, [t.sparse for t in tables]
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self.attach()

    def attach(self) -> None:
        """Take the tables over for training: sparse gradients, and a hook that brings the rows a
        lookup names up to date before the lookup reads them. Idempotent."""
        if self._hooks:
            return
        for t in self._tables:
            t.sparse = True
        self._hooks = [t.register_forward_pre_hook(self._before_lookup) for t in self._tables]

    def detach(self) -> None:
        """Hand the tables back once training ends: every deferred step applied, the hooks
        removed (a model that outlives its optimiser is not slowed, or moved, by it at every
        lookup, and a later optimiser of the same tables finds none of this one's), `sparse` as
        it was. `attach` takes them over again."""
        self.flush()
        for h in self._hooks:
            h.remove()
        self._hooks = []
        for t, was in zip(self._tables, self._was_sparse, strict=True):
            t.sparse = was

    def _state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        st = self.state[p]
        if not st:
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["synced"] = torch.zeros(p.shape[0], dtype=torch.long, device=p.device)  # steps a row reflects
        return st

    def _before_lookup(self, module: nn.Embedding, args: tuple[torch.Tensor, ...]) -> None:
        self.catch_up(module.weight, args[0].reshape(-1))

    def _advance(self) -> None:
        """Add step `self.steps`'s term to the sums of every row state it can still reach.

        The sums depend only on the step s a row was last brought up at (and on the current
        step), so they are kept per s, each updated for the W steps after it: a catch-up is then
        a lookup, whatever the gap and however many distinct gaps a batch holds."""
        (b1, b2), t = self.param_groups[0]["betas"], self.steps
        if t >= len(self._sum):
            self._sum = np.concatenate([self._sum, np.zeros(len(self._sum))])
            self._eps_sum = np.concatenate([self._eps_sum, np.zeros(len(self._eps_sum))])
        s = np.arange(max(0, t - self.window), t)
        i = (t - s).astype(np.float64)
        weight = (b1 / math.sqrt(b2)) ** i * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        self._sum[s] += weight
        # Dense Adam's step t divides by sqrt(v_t) + eps = b2^(i/2) (sqrt(v) + eps * c) / sqrt(1 - b2^t)
        # with c = sqrt(1 - b2^t) / b2^(i/2): c moves slowly with i, so its weighted mean stands in.
        self._eps_sum[s] += weight * math.sqrt(1 - b2 ** t) / b2 ** (i / 2)

    def _slide(self, since: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row last brought up at step `since`: the sum above over the steps it missed, and
        the weighted mean of eps's factor in those steps."""
        idx = since.numpy()
        total, eps_sum = self._sum[idx], self._eps_sum[idx]
        factor = np.divide(eps_sum, total, out=np.ones_like(total), where=total > 0)
        return torch.from_numpy(total), torch.from_numpy(factor)

    @torch.no_grad()
    def catch_up(self, p: torch.Tensor, rows: torch.Tensor | None = None, unique: bool = False) -> None:
        """Apply the zero-gradient steps `rows` of `p` (all rows if None) have missed since their
        last update. unique: `rows` holds no repeats (saves a sort)."""
        st = self._state(p)
        synced = st["synced"]
        if rows is None:
            rows = torch.arange(p.shape[0], device=p.device)
        elif not unique:
            rows = torch.unique(rows)
        rows = rows[synced[rows] < self.steps]
        if not len(rows):
            return
        group = self.param_groups[0]
        (b1, b2), lr, eps = group["betas"], group["lr"], group["eps"]
        since = synced[rows].cpu()
        k = (self.steps - since).to(torch.float64)

        def per_row(x: torch.Tensor) -> torch.Tensor:  # float64 per-row factors, as a column in p's dtype
            return x.to(device=p.device, dtype=p.dtype)[:, None]

        m, v = st["exp_avg"][rows], st["exp_avg_sq"][rows]
        slide, eps_factor = self._slide(since)
        p[rows] = p[rows] - per_row(lr * slide) * m / (v.sqrt() + per_row(eps * eps_factor))
        st["exp_avg"][rows] = m * per_row(b1 ** k)
        st["exp_avg_sq"][rows] = v * per_row(b2 ** k)
        synced[rows] = self.steps

    @torch.no_grad()
    def flush(self) -> None:
        """Bring every row up to date: before the whole table is read (validation, export, a copy)."""
        for group in self.param_groups:
            for p in group["params"]:
                self.catch_up(p)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 (torch's signature)
        if not self._hooks:
            raise RuntimeError("CatchUpAdam.step after detach(): attach() the tables first")
        loss = closure() if closure is not None else None
        group = self.param_groups[0]
        (b1, b2), lr, eps = group["betas"], group["lr"], group["eps"]
        grads = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if not p.grad.is_sparse:
                raise RuntimeError("CatchUpAdam takes sparse gradients: look rows up through the nn.Embedding "
                                   "(sparse=True), not by indexing its weight")
            g = p.grad.coalesce()
            rows = g.indices()[0]
            self.catch_up(p, rows, unique=True)  # rows the forward pass did not bring up (none, through the hook)
            grads.append((p, rows, g.values()))
        self.steps += 1
        self._advance()
        bc1, bc2 = 1 - b1 ** self.steps, 1 - b2 ** self.steps
        for p, rows, values in grads:
            st = self._state(p)
            m = st["exp_avg"][rows].mul_(b1).add_(values, alpha=1 - b1)
            v = st["exp_avg_sq"][rows].mul_(b2).addcmul_(values, values, value=1 - b2)
            st["exp_avg"][rows], st["exp_avg_sq"][rows] = m, v
            p[rows] = p[rows] - (lr / bc1) * m / (v.sqrt() / math.sqrt(bc2) + eps)
            st["synced"][rows] = self.steps
        return loss
