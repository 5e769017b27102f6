"""The DivSPA student's objective: the mix-up loss over real and augmented positives (paper §3.3).

Output space (Eq. 3, the paper's choice):
    L = L_ori(u, v+) + beta * sum_strategy sum_i w_i * L_ori(u, v_i)
Representation space (Eq. 2):
    v~ = v+ + beta * sum_strategy sum_i w_i * v_i,   L = L_ori(u, v~)
Both share the batch's sampled negatives. With beta = 0, or a row without augmented positives,
both reduce to Eq. 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from divspa.models.checkpoint import load_checkpoint
from divspa.models.data import encode_examples
from divspa.models.encoding import string_value_lists
from divspa.models.loss import logits, sampled_softmax_loss
from divspa.models.towers import TwoTower
from divspa.models.trainer import Trainer, distinct_item_vectors


def mixup_loss(user: torch.Tensor, pos: torch.Tensor, aug: torch.Tensor, neg: torch.Tensor, pos_idx: torch.Tensor,
               aug_idx: torch.Tensor, aug_w: torch.Tensor, neg_idx: torch.Tensor, omega: float,
               beta: float | torch.Tensor, mode: str = "output", neg_logq: torch.Tensor | None = None,
               pos_logq: torch.Tensor | None = None, aug_logq: torch.Tensor | None = None,
               aug_grad: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Per-row loss. user [B,d]; pos [B,d]; aug [B,A,d] with indices aug_idx [B,A] (0 = none) and
    weights aug_w [B,A] (0 for padding); neg [N,d] with indices neg_idx [N]. beta: one weight, or
    [B,A] (each augmented positive its strategy's beta). aug_grad < 1: the same loss, with only that
    share of the gradient reaching the augmented item vectors (divspa.augmented_item_grad); one
    share, or [B,A] (each augmented positive its strategy's)."""
    if isinstance(aug_grad, torch.Tensor):
        share = aug_grad.unsqueeze(-1)
        aug = share * aug + (1 - share) * aug.detach()
    elif aug_grad == 0:
        aug = aug.detach()
    elif aug_grad != 1:  # same values, gradient scaled by aug_grad
        aug = aug_grad * aug + (1 - aug_grad) * aug.detach()
    if mode == "representation":
        if isinstance(beta, torch.Tensor):
            mixed = pos + ((beta * aug_w).unsqueeze(-1) * aug).sum(1)
        else:  # one shared beta: the same float ops as before per-strategy betas existed
            mixed = pos + beta * (aug_w.unsqueeze(-1) * aug).sum(1)
        return sampled_softmax_loss(user, mixed, neg, pos_idx, neg_idx, omega, neg_logq, pos_logq)
    all_pos = torch.cat([pos.unsqueeze(1), aug], dim=1)
    all_idx = torch.cat([pos_idx.unsqueeze(1), aug_idx], dim=1)
    all_logq = torch.cat([pos_logq.unsqueeze(1), aug_logq], dim=1) if pos_logq is not None else None
    losses = sampled_softmax_loss(user, all_pos, neg, all_idx, neg_idx, omega, neg_logq, all_logq)
    aug_loss = torch.where(aug_w > 0, aug_w * losses[:, 1:], torch.zeros_like(aug_w))
    if isinstance(beta, torch.Tensor):
        return losses[:, 0] + (beta * aug_loss).sum(1)
    return losses[:, 0] + beta * aug_loss.sum(1)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                 logq: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row KL(teacher || student) of the softmaxes over the same items (a row's positive and
    the batch's negatives), logits [B, 1 + N] at `temperature`, times its square so the gradient's
    scale does not change with it. logq [B, 1 + N]: the sampling correction subtracted from both,
    so the softmax estimates the one over the catalogue. No gradient reaches the teacher."""
    if logq is not None:
        student, teacher = student - logq, teacher - logq
    log_s = torch.log_softmax(student / temperature, dim=1)
    log_t = torch.log_softmax(teacher.detach() / temperature, dim=1)
    return temperature ** 2 * (log_t.exp() * (log_t - log_s)).sum(1)


class DivspaTrainer(Trainer):
    """The base trainer with Eq. 3 (or Eq. 2) as the batch objective; validation is unchanged.
    teacher: the teacher's checkpoint, read when `divspa.distill` > 0."""

    def __init__(self, *args: Any, teacher: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.teacher: TwoTower | None = None
        if self.cfg.divspa.distill > 0:
            if not teacher:
                raise ValueError("divspa.distill > 0 needs the teacher's checkpoint")
            bundle = load_checkpoint(teacher)
            mine = self.bundle.vocab
            if not (np.array_equal(bundle.vocab.item_ids, mine.item_ids) and bundle.vocab.user_tokens == mine.user_tokens):
                raise ValueError(f"teacher {teacher} was trained on another vocabulary ({bundle.vocab.num_items} "
                                 f"items, the student {mine.num_items}): distillation needs the same one")
            self.teacher = bundle.model.to(self.device).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)

    @property
    def columns(self) -> list[str]:  # type: ignore[override]
        """The strategies are streamed only when their betas differ: otherwise nothing reads them."""
        own = ["aug_strategies"] if self.strategy_betas() or self.strategy_item_grads() else []
        return [*Trainer.columns, "aug_items", "aug_weights", *own]

    def strategy_betas(self) -> dict[str, float] | None:
        """Each strategy's beta where one differs from divspa.beta, else None (one shared weight)."""
        betas = self.cfg.divspa.strategy_betas()
        return betas if any(b != self.cfg.divspa.beta for b in betas.values()) else None

    def strategy_item_grads(self) -> dict[str, float] | None:
        """Each strategy's item-side gradient share where one differs from the shared one, else None."""
        grads = self.cfg.divspa.strategy_item_grads()
        return grads if any(g != self.cfg.divspa.augmented_item_grad for g in grads.values()) else None

    def batch_loss(self, table: pa.Table) -> torch.Tensor:
        cfg = self.cfg.divspa
        vocab, dev = self.bundle.vocab, self.device
        width = int(pc.max(pc.list_value_length(table.column("aug_items"))).as_py() or 0)
        if width == 0 and self.teacher is None:  # no augmented positive: exactly Eq. 1, as the base trainer computes it
            return super().batch_loss(table)
        batch = encode_examples(table, vocab, self.bundle.mcfg)
        aug_idx = vocab.item_lists(table.column("aug_items"), width, keep="first").to(dev)
        aug_w = vocab.float_lists(table.column("aug_weights"), width).to(dev)
        aug_w = torch.where(aug_idx > 0, aug_w, torch.zeros_like(aug_w))
        betas, grads = self.strategy_betas(), self.strategy_item_grads()
        beta: float | torch.Tensor = cfg.beta
        if betas:
            beta = string_value_lists(table.column("aug_strategies"), betas, width).to(dev)
        aug_grad: float | torch.Tensor = cfg.augmented_item_grad
        if grads:
            aug_grad = string_value_lists(table.column("aug_strategies"), grads, width).to(dev)
        user = self.model.user_vectors(batch.users.to(dev))
        pos_idx = batch.items.to(dev)
        neg_idx, logq = self.negatives(pos_idx)
        neg_logq, pos_logq, aug_logq = (logq[neg_idx], logq[pos_idx], logq[aug_idx]) if logq is not None \
            else (None, None, None)
        pos, aug, neg = self.item_vectors(pos_idx, aug_idx, neg_idx)
        loss = mixup_loss(user, pos, aug, neg, pos_idx, aug_idx, aug_w, neg_idx, self.model.omega, beta,
                          cfg.mixup, neg_logq, pos_logq, aug_logq, aug_grad)
        if self.teacher is not None:
            loss = loss + cfg.distill * self._distill(batch, user, pos, neg, pos_idx, neg_idx, neg_logq, pos_logq)
        return loss.mean()

    def _distill(self, batch: Any, user: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, pos_idx: torch.Tensor,
                 neg_idx: torch.Tensor, neg_logq: torch.Tensor | None, pos_logq: torch.Tensor | None) -> torch.Tensor:
        """`distill_loss` over each row's positive and the batch's negatives, as both models score them."""
        assert self.teacher is not None
        with torch.no_grad():
            t_user = self.teacher.user_vectors(batch.users.to(self.device))
            t_pos, t_neg = distinct_item_vectors(self.teacher, pos_idx, neg_idx)

        def row_logits(u: torch.Tensor, p: torch.Tensor, n: torch.Tensor, omega: float) -> torch.Tensor:
            return torch.cat(logits(u, p.unsqueeze(1), n, omega), dim=1)  # [B, 1 + N]

        logq = None
        if neg_logq is not None and pos_logq is not None:
            logq = torch.cat([pos_logq.unsqueeze(1), neg_logq.expand(len(pos_idx), -1)], dim=1)
        return distill_loss(row_logits(user, pos, neg, self.model.omega),
                            row_logits(t_user, t_pos, t_neg, self.teacher.omega),
                            self.cfg.divspa.distill_temperature, logq)
