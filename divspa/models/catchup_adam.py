"""Adam for embedding tables whose cost follows the rows a batch looks up, not the vocabulary.

Dense Adam moves every row of a table at every step: a row the batch did not name has a zero
gradient, but its moments decay and it keeps sliding along its old update direction. So a step
costs O(vocabulary) (at 420k items ~350 ms of a ~380 ms step, benchmarks/vocabulary.py). Lazy
Adam (torch's SparseAdam) skips those rows and so trains a different model: on ML-100K it cost
the DivSPA student its significant gain over base (docs/BENCHMARKS.md, "What lazy Adam does to
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

import torch
from torch import nn


class CatchUpAdam(torch.optim.Optimizer):
    def __init__(self, tables: list[nn.Embedding], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 < b2 < 1 and b1 < math.sqrt(b2)):
            raise ValueError(f"CatchUpAdam needs 0 <= beta1 < sqrt(beta2) < 1, got {betas}")
        for t in tables:
            t.sparse = True
        super().__init__([t.weight for t in tables], {"lr": lr, "betas": betas, "eps": eps})
        self.steps = 0
        ratio = b1 / math.sqrt(b2)
        self.window = max(1, math.ceil(math.log(1e-12) / math.log(ratio))) if ratio > 0 else 1
        self._hooks = [t.register_forward_pre_hook(self._before_lookup) for t in tables]

    def _state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        st = self.state[p]
        if not st:
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["synced"] = torch.zeros(p.shape[0], dtype=torch.long, device=p.device)  # steps a row reflects
        return st

    def _before_lookup(self, module: nn.Embedding, args: tuple[torch.Tensor, ...]) -> None:
        self.catch_up(module.weight, args[0].reshape(-1))

    def _slide(self, since: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row last brought up at step `since`, in float64: the sum above over the steps it
        missed (k = self.steps - since), and the weighted mean of eps's factor in those steps."""
        (b1, b2) = self.param_groups[0]["betas"]
        total, eps_factor = torch.zeros(since.shape, dtype=torch.float64), torch.ones(since.shape, dtype=torch.float64)
        first, inverse = torch.unique(since, return_inverse=True)
        i = torch.arange(1, self.window + 1, dtype=torch.float64)
        for lo in range(0, len(first), 2048):
            j = first[lo:lo + 2048].to(torch.float64)[:, None] + i[None, :]
            weight = (b1 / math.sqrt(b2)) ** i * torch.sqrt(1 - b2 ** j) / (1 - b1 ** j)
            weight = torch.where(j <= self.steps, weight, torch.zeros((), dtype=torch.float64))
            w = weight.sum(dim=1)
            total[lo:lo + len(w)] = w
            # Dense Adam's step j divides by sqrt(v_j) + eps = b2^(i/2) (sqrt(v) + eps * c) / sqrt(1 - b2^j)
            # with c = sqrt(1 - b2^j) / b2^(i/2): c moves slowly with i, so its weighted mean stands in.
            c = torch.sqrt(1 - b2 ** j) / b2 ** (i / 2)
            eps_factor[lo:lo + len(w)] = torch.where(w > 0, (weight * c).sum(dim=1) / w.clamp_min(1e-300), 1.0)
        return total[inverse], eps_factor[inverse]

    @torch.no_grad()
    def catch_up(self, p: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Apply the zero-gradient steps `rows` of `p` (all rows if None) have missed since their last update."""
        st = self._state(p)
        synced = st["synced"]
        rows = torch.arange(p.shape[0], device=p.device) if rows is None else torch.unique(rows)
        rows = rows[synced[rows] < self.steps]
        if not len(rows):
            return
        group = self.param_groups[0]
        (b1, b2), lr, eps = group["betas"], group["lr"], group["eps"]
        since = synced[rows].cpu()
        k = (self.steps - since).to(torch.float64)
        m, v = st["exp_avg"][rows], st["exp_avg_sq"][rows]
        slide, eps_factor = self._slide(since)
        slide = (lr * slide).to(p.dtype).to(p.device)[:, None]
        p[rows] = p[rows] - slide * m / (v.sqrt() + (eps * eps_factor).to(p.dtype).to(p.device)[:, None])
        st["exp_avg"][rows] = m * (b1 ** k).to(p.dtype).to(p.device)[:, None]
        st["exp_avg_sq"][rows] = v * (b2 ** k).to(p.dtype).to(p.device)[:, None]
        synced[rows] = self.steps

    @torch.no_grad()
    def flush(self) -> None:
        """Bring every row up to date: before the whole table is read (validation, export, a copy)."""
        for group in self.param_groups:
            for p in group["params"]:
                self.catch_up(p)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 (torch's signature)
        loss = closure() if closure is not None else None
        group = self.param_groups[0]
        (b1, b2), lr, eps = group["betas"], group["lr"], group["eps"]
        for p in group["params"]:
            if p.grad is None:
                continue
            if not p.grad.is_sparse:
                raise RuntimeError("CatchUpAdam takes sparse gradients: look rows up through the nn.Embedding "
                                   "(sparse=True), not by indexing its weight")
            self.catch_up(p, p.grad.coalesce().indices()[0])  # rows the forward pass did not bring up
        self.steps += 1
        bc1, bc2 = 1 - b1 ** self.steps, 1 - b2 ** self.steps
        for p in group["params"]:
            if p.grad is None:
                continue
            g = p.grad.coalesce()
            rows, values = g.indices()[0], g.values()
            st = self._state(p)
            m = st["exp_avg"][rows].mul_(b1).add_(values, alpha=1 - b1)
            v = st["exp_avg_sq"][rows].mul_(b2).addcmul_(values, values, value=1 - b2)
            st["exp_avg"][rows], st["exp_avg_sq"][rows] = m, v
            p[rows] = p[rows] - (lr / bc1) * m / (v.sqrt() / math.sqrt(bc2) + eps)
            st["synced"][rows] = self.steps
        return loss
