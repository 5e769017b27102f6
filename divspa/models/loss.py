"""Sampled softmax (paper Eq. 1); the negatives it is given come from divspa.models.negatives.

L_ori(u, v+) = -log( exp(w u.v+) / (exp(w u.v+) + sum_j exp(w u.v_j-)) ) over n negatives drawn
once per batch and shared by every row. The positive may be a [B, P] block of positives per row
(the real one and the augmented ones of Eq. 3): each is scored against the same negatives.
Negatives that happen to equal a row's positive (accidental hits) are masked out. A row may also
have negatives of its own (UFNRec's remembered hard negatives, models/ufn.py): they join its
denominator, and are masked out where they equal one of its positives too.
"""

from __future__ import annotations

import torch


def sampled_softmax_loss(
    user: torch.Tensor,  # [B, d]
    pos: torch.Tensor,  # [B, d] or [B, P, d]
    neg: torch.Tensor,  # [N, d]
    pos_idx: torch.Tensor,  # [B] or [B, P] item indices of the positives
    neg_idx: torch.Tensor,  # [N] item indices of the negatives
    omega: float,
    neg_logq: torch.Tensor | None = None,  # [N] log sampling probability (logQ correction)
    pos_logq: torch.Tensor | None = None,  # [B] or [B, P]
    row_neg: tuple[torch.Tensor, torch.Tensor] | None = None,  # each row's own negatives: logits, indices [B, W] (0 = none)
) -> torch.Tensor:
    """Per-positive loss, shaped like pos_idx."""
    single = pos.dim() == 2
    if single:
        pos, pos_idx = pos.unsqueeze(1), pos_idx.unsqueeze(1)
        pos_logq = pos_logq.unsqueeze(1) if pos_logq is not None else None
    pos_logit, neg_logit = logits(user, pos, neg, omega)
    if neg_logq is not None:
        neg_logit = neg_logit - neg_logq
        if pos_logq is not None:
            pos_logit = pos_logit - pos_logq
    loss = _shared_negatives_loss(pos_logit, neg_logit, pos_idx, neg_idx, row_neg)
    return loss.squeeze(1) if single else loss


def logits(user: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, omega: float) -> tuple[torch.Tensor, torch.Tensor]:
    """omega * u.v of each row's positives [B, P, d] and of the shared negatives [N, d]: [B, P], [B, N]."""
    return omega * (user.unsqueeze(1) * pos).sum(-1), omega * user @ neg.T


def _shared_negatives_loss(pos_logit: torch.Tensor, neg_logit: torch.Tensor, pos_idx: torch.Tensor,
                           neg_idx: torch.Tensor,
                           row_neg: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Eq. 1 for each of P positives per row without a [B, P, N] tensor (DivSPA's P is 1 + 3m).

    All P positives of a row share the row's negatives, so the negatives' sum is taken once per
    row; each positive then removes its own accidental hits (negatives equal to it), whose logits
    are the row's logit of that item times its count among the negatives. The sums are taken in
    float64 and shifted by the row's maximum, so the subtraction loses nothing that matters.
    """
    shift = torch.maximum(neg_logit.max(1).values, pos_logit.max(1).values).detach().unsqueeze(1)  # [B, 1]
    if row_neg is not None:
        row_logit = torch.where(row_neg[1] > 0, row_neg[0], -torch.inf)  # [B, W]; -inf: no negative
        shift = torch.maximum(shift, row_logit.max(1, keepdim=True).values.detach())
    neg_exp = torch.exp((neg_logit - shift).double())  # [B, N]
    total = neg_exp.sum(1, keepdim=True)  # [B, 1]
    size = int(max(int(neg_idx.max()), int(pos_idx.max()))) + 1
    counts = torch.bincount(neg_idx, minlength=size)  # copies of each item among the negatives
    slot = torch.zeros(size, dtype=torch.long, device=neg_idx.device)
    slot[neg_idx] = torch.arange(len(neg_idx), device=neg_idx.device)  # one column per item (copies agree)
    hits = counts[pos_idx].to(neg_exp.dtype)  # [B, P]
    hit_exp = torch.gather(neg_exp, 1, slot[pos_idx]) * hits  # [B, P]; 0 where the item is no negative
    negatives = (total - hit_exp).clamp_min(0.0)
    if row_neg is not None:
        row_idx = row_neg[1]
        row_exp = torch.exp((row_logit - shift).double())  # [B, W]
        own = (row_idx.unsqueeze(1) == pos_idx.unsqueeze(2)) & (row_idx.unsqueeze(1) > 0)  # [B, P, W]
        negatives = negatives + row_exp.sum(1, keepdim=True) - (own * row_exp.unsqueeze(1)).sum(2)
    pos_shifted = pos_logit - shift
    lse = torch.log(torch.exp(pos_shifted.double()) + negatives).to(pos_logit.dtype)
    return lse - pos_shifted
