"""The DivSPA student's objective: the mix-up loss over real and augmented positives (paper §3.3).

Output space (Eq. 3, the paper's choice):
    L = L_ori(u, v+) + beta * sum_strategy sum_i w_i * L_ori(u, v_i)
Representation space (Eq. 2):
    v~ = v+ + beta * sum_strategy sum_i w_i * v_i,   L = L_ori(u, v~)
Both share the batch's sampled negatives. With beta = 0, or a row without augmented positives,
both reduce to Eq. 1.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import torch

from divspa.models.data import encode_examples
from divspa.models.loss import sampled_softmax_loss
from divspa.models.trainer import Trainer


def mixup_loss(user: torch.Tensor, pos: torch.Tensor, aug: torch.Tensor, neg: torch.Tensor, pos_idx: torch.Tensor,
               aug_idx: torch.Tensor, aug_w: torch.Tensor, neg_idx: torch.Tensor, omega: float,
               beta: float, mode: str = "output", neg_logq: torch.Tensor | None = None,
               pos_logq: torch.Tensor | None = None, aug_logq: torch.Tensor | None = None,
               aug_grad: float = 1.0, row_neg: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Per-row loss. user [B,d]; pos [B,d]; aug [B,A,d] with indices aug_idx [B,A] (0 = none) and
    weights aug_w [B,A] (0 for padding); neg [N,d] with indices neg_idx [N]. aug_grad < 1: the same
    loss, with only that share of the gradient reaching the augmented item vectors
    (divspa.augmented_item_grad). row_neg: each row's own negatives (UFNRec's), as sampled_softmax_loss takes them."""
    if aug_grad == 0:
        aug = aug.detach()
    elif aug_grad != 1:  # same values, gradient scaled by aug_grad
        aug = aug_grad * aug + (1 - aug_grad) * aug.detach()
    if mode == "representation":
        mixed = pos + beta * (aug_w.unsqueeze(-1) * aug).sum(1)
        return sampled_softmax_loss(user, mixed, neg, pos_idx, neg_idx, omega, neg_logq, pos_logq, row_neg)
    all_pos = torch.cat([pos.unsqueeze(1), aug], dim=1)
    all_idx = torch.cat([pos_idx.unsqueeze(1), aug_idx], dim=1)
    all_logq = torch.cat([pos_logq.unsqueeze(1), aug_logq], dim=1) if pos_logq is not None else None
    losses = sampled_softmax_loss(user, all_pos, neg, all_idx, neg_idx, omega, neg_logq, all_logq, row_neg)
    aug_loss = torch.where(aug_w > 0, aug_w * losses[:, 1:], torch.zeros_like(aug_w))
    return losses[:, 0] + beta * aug_loss.sum(1)


class DivspaTrainer(Trainer):
    """The base trainer with Eq. 3 (or Eq. 2) as the batch objective; validation is unchanged."""

    @property
    def columns(self) -> list[str]:  # type: ignore[override]
        return [*Trainer.columns, "aug_items", "aug_weights"]

    def batch_loss(self, table: pa.Table) -> torch.Tensor:
        cfg = self.cfg.divspa
        vocab, dev = self.bundle.vocab, self.device
        width = int(pc.max(pc.list_value_length(table.column("aug_items"))).as_py() or 0)
        if width == 0:  # no augmented positive: exactly Eq. 1, as the base trainer computes it
            return super().batch_loss(table)
        batch = encode_examples(table, vocab, self.bundle.mcfg)
        aug_idx = vocab.item_lists(table.column("aug_items"), width, keep="first").to(dev)
        aug_w = vocab.float_lists(table.column("aug_weights"), width).to(dev)
        aug_w = torch.where(aug_idx > 0, aug_w, torch.zeros_like(aug_w))
        users = batch.users.to(dev)
        user = self.model.user_vectors(users)
        pos_idx = batch.items.to(dev)
        neg_idx, logq = self.negatives(pos_idx)
        neg_logq, pos_logq, aug_logq = (logq[neg_idx], logq[pos_idx], logq[aug_idx]) if logq is not None \
            else (None, None, None)
        pos, aug, neg = self.item_vectors(pos_idx, aug_idx, neg_idx)
        rows, row, row_neg = self.row_negatives(table, user)
        loss = mixup_loss(user, pos, aug, neg, pos_idx, aug_idx, aug_w, neg_idx, self.model.omega, cfg.beta,
                          cfg.mixup, neg_logq, pos_logq, aug_logq, cfg.augmented_item_grad, row_neg)
        loss = loss + self.reversed_loss(rows, users, user, row, pos, pos_idx, neg, neg_idx, logq, row_neg)
        return self.with_ssl(loss.mean(), pos_idx)
